"""The README's example and Quick start command keep working."""

import json
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def readme_section_code(title, block=0):
  text = (ROOT / "README.md").read_text()
  section = text.split(f"## {title}", 1)[1].split("\n## ", 1)[0]
  blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
  assert len(blocks) > block, f"no python block {block} under '## {title}'"
  return blocks[block]


def run_readme_section(title, tmp_path, block=0):
  """Runs the section's python block as a user would (a script, in an empty folder)."""
  script = tmp_path / "snippet.py"
  script.write_text(readme_section_code(title, block))
  out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                       timeout=600, cwd=tmp_path)
  assert out.returncode == 0, out.stderr
  return out


def test_readme_hypergradient_snippet_runs(tmp_path):
  out = run_readme_section("Use the hypergradient in your own code", tmp_path)
  lines = [l for l in out.stdout.splitlines() if ":" in l]
  assert [l.split(":")[0].strip() for l in lines] == ["exact", "finite_difference",
                                                      "first_order"]


def test_readme_bilevel_step_snippet_runs(tmp_path):
  out = run_readme_section("Use the hypergradient in your own code", tmp_path, block=1)
  numbers = [float(v) for v in re.findall(r"-?\d+\.\d+(?:e-?\d+)?", out.stdout)]
  alphas, (val_loss, grad_norm) = numbers[:-2], numbers[-2:]
  assert len(alphas) == 2 and any(abs(a) > 1e-6 for a in alphas)  # the alphas moved from 0
  assert val_loss > 0 and grad_norm > 0


def test_readme_search_space_snippet_runs(tmp_path):
  out = run_readme_section("The CNN search space", tmp_path)
  first, second = out.stdout.strip().splitlines()
  assert first.startswith("(2, 10) {\"normal\": [[")
  assert second == "True"


def test_readme_evaluation_network_snippet_runs(tmp_path):
  out = run_readme_section("Train a genotype from scratch (evaluation)", tmp_path)
  assert out.stdout.strip().splitlines() == ["3349342", "(2, 10) (2, 10)"]


def test_readme_quick_start_lists_three_commands():
  text = (ROOT / "README.md").read_text()
  block = re.search(r"## Quick start\n\n```bash\n(.*?)```", text, flags=re.S).group(1)
  assert block.strip().splitlines() == ['pip install -e ".[test]"',
                                        "python main.py --config configs/quick_search.py",
                                        "pytest"]


def run_main(*args, timeout=300):
  return subprocess.run([sys.executable, "main.py", *args], capture_output=True, text=True,
                        timeout=timeout, cwd=ROOT)


def test_toy_search_through_main(tmp_path):
  out = run_main("--config", "configs/toy_search.py", f"--workdir={tmp_path}",
                 "--config.epochs=2", "--config.steps_per_epoch=5")
  assert out.returncode == 0, out.stderr
  assert "epoch   2/2" in out.stdout
  result = json.loads((tmp_path / "result.json").read_text())
  assert result["method"] == "exact"
  assert len(result["history"]) == 2
  assert len(result["derived"]) == 2
  assert all(op in result["candidates"] and op != "none" for op in result["derived"])
  # The search moved the alphas away from their 1e-3 initialisation.
  assert max(abs(a) for row in result["alphas"] for a in row) > 1e-2


@pytest.mark.parametrize("override,message", [
    ("--config.no_such_key=1", "no_such_key"),
    ("--config.task=nope", "ConfigError: --config.task='nope' is not one of"),
])
def test_main_rejects_bad_config(tmp_path, override, message):
  out = run_main("--config", "configs/toy_search.py", f"--workdir={tmp_path}", override)
  assert out.returncode != 0
  assert message in out.stdout + out.stderr


def test_readme_nas_bench_201_lookup_snippet_runs(tmp_path):
  out = run_readme_section("NAS-Bench-201", tmp_path)
  accuracy, rank, columns = out.stdout.strip().splitlines()
  assert accuracy == "54.2967" and rank == "15230"
  assert "'cifar10.test.200': 54.2967" in columns and "'cifar100.valid.12'" in columns
