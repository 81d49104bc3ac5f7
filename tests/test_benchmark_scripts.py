"""The side-by-side benchmark's driver: its one-line skips, its table, its CPU description."""

import os
import subprocess
import sys

from benchmarks import side_by_side

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args):
  return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT)


def test_without_the_official_release_the_driver_says_so_and_writes_nothing(tmp_path):
  out = tmp_path / "side.json"
  result = run("benchmarks/side_by_side.py", "--official", str(tmp_path / "absent"),
               "--torch-python", sys.executable, "--out", str(out))
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip().splitlines() == [
      f"side_by_side: skipped, no checkout of the official release at "
      f"{str(tmp_path / 'absent')!r} (pass --official DIR with github.com/quark0/darts)"]
  assert not out.exists()


def test_without_a_torch_interpreter_the_driver_says_so(tmp_path):
  release = tmp_path / "darts" / "cnn"
  release.mkdir(parents=True)
  (release / "model_search.py").write_text("")
  out = tmp_path / "side.json"
  result = run("benchmarks/side_by_side.py", "--official", str(tmp_path / "darts"),
               "--torch-python", str(tmp_path / "no-python"), "--out", str(out))
  assert result.returncode == 0, result.stderr
  lines = result.stdout.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("side_by_side: skipped, no PyTorch interpreter")
  assert not out.exists()


def test_the_official_harness_refuses_a_folder_without_the_release(tmp_path):
  result = run("benchmarks/official_step.py", "--official", str(tmp_path), "--part", "rnn_search")
  assert result.returncode == 1
  assert result.stderr.strip() == (
      f"error: no DARTS release at {tmp_path} (rnn/model_search.py is missing); pass "
      "--official with a checkout of github.com/quark0/darts")


def test_the_table_shows_each_ratio_and_names_a_failed_side():
  rows = [{"case": "search:2:16", "kind": "search", "order": "2", "batch": 16,
           "official": {"step_s": 15.0, "peak_rss_gb": 4.0},
           "darts_jax": {"step_s": 6.0, "compile_s": 90.0, "warm_start_s": 20.0,
                         "peak_rss_gb": 2.0}, "ratio": 0.4},
          {"case": "rnn:1:256", "kind": "rnn", "order": "1", "batch": 256,
           "official": {"failed": True, "returncode": 1}, "darts_jax": {"step_s": 1.0}}]
  cpu = {"cpu_model": "Some CPU", "vector_extensions": ["avx2", "fma"]}
  lines = side_by_side.table(rows, cpu).splitlines()
  assert lines[0] == "CPU: Some CPU (avx2, fma)"
  assert lines[4] == ("| search, second order | 16 | 15.00 | 6.00 | **0.40x** | 90.0 | 20.0 | "
                      "4.00 / 2.00 |")
  assert lines[5].startswith("| recurrent search, first order | 256 | official failed (return "
                             "code 1)")


def test_the_cpu_description_names_the_vector_width():
  cpu = side_by_side.cpu_description()
  assert cpu["vector_width"] in ("AVX-512", "AVX2", "other")
  assert ("avx512f" in cpu["vector_extensions"]) == (cpu["vector_width"] == "AVX-512")
