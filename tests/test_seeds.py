"""Many seeds in one program (`--config.num_seeds`): the vmapped searches are the separate
runs, their outputs and summary are each seed's, and they resume like one run."""

import json

import numpy as np
import pytest

from configs import nb201_search
from darts_jax import nas_bench
from darts_jax.spaces import nas_bench_201
from darts_jax.train import cnn_search
from tests.helpers import override
from tests.test_resume import run_interrupted


def tiny(**overrides):
  # 64 digits: 32 train the weights, 32 the alphas; 2 steps of 16 per epoch.
  return override(nb201_search.get_config(), **{
      "data.name": "digits", "data.num_train": 64, "augment": True, "model.channels": 4,
      "model.cells_per_stage": 1, "epochs": 2, "batch_size": 16, "alpha_learning_rate": 3e-2,
      "progress_bar": False, "eval_examples": 16, "seed": 0, **overrides})


def test_vmapped_seeds_are_the_separate_runs(tmp_path):
  """Two seeds vmapped, exact hypergradient, equal the two runs with those seeds (alphas to
  float32 rounding, the same cells); each seed's files and the summary's mean and std.

  One step per epoch (32 digits). The exact hypergradient differentiates through ReLU masks,
  and the digits' constant backgrounds put many equal pre-activations on one kink: on some
  steps a 1e-6 relative change of the weights moves the alpha update by 10 % (seed 1's fourth
  step at 64 digits, measured), so vmap's different float32 summation order would show there
  as a difference of the runs rather than of the programs. Two steps keep that out."""
  small = {"data.num_train": 32}
  result = cnn_search.train_and_evaluate(tiny(num_seeds=2, **small), str(tmp_path / "both"))
  singles = [cnn_search.train_and_evaluate(tiny(seed=s, **small), str(tmp_path / f"seed{s}"))
             for s in (0, 1)]
  table = nas_bench.load()
  assert result["seeds"] == [0, 1]
  for s, single in zip((0, 1), singles):
    ours = np.load(tmp_path / "both" / f"seed_{s}" / "alphas.npz")
    theirs = np.load(tmp_path / f"seed{s}" / "alphas.npz")
    assert set(ours.files) == set(theirs.files)
    for name in ours.files:
      np.testing.assert_allclose(ours[name], theirs[name], rtol=2e-4, atol=1e-6, err_msg=name)
    assert result["genotypes"][s] == single["genotype"]
    assert result[f"seed_{s}/search_val_accuracy"] == pytest.approx(
        single["search_val_accuracy"], abs=1e-6)
    assert result[f"seed_{s}/nas_bench_201/cifar10.test.200"] == \
        single["nas_bench_201/cifar10.test.200"]
    for epoch in (1, 2):
      name = f"epoch_{epoch:03d}.json"
      assert (tmp_path / "both" / f"seed_{s}" / "genotypes" / name).read_text() == \
          (tmp_path / f"seed{s}" / "genotypes" / name).read_text()
    assert (tmp_path / "both" / f"seed_{s}" / "cell.png").stat().st_size > 0
  # Different seeds search differently.
  assert not np.allclose(np.load(tmp_path / "seed0" / "alphas.npz")["cell"],
                         np.load(tmp_path / "seed1" / "alphas.npz")["cell"])
  # The mean and standard deviation over the seeds, by hand from the table.
  cells = [nas_bench_201.Genotype201.from_json(json.dumps(g)) for g in result["genotypes"]]
  values = [table.accuracy(c, dataset="cifar100", split="valid", epochs=12) for c in cells]
  assert result["nas_bench_201/cifar100.valid.12/mean"] == pytest.approx(np.mean(values))
  assert result["nas_bench_201/cifar100.valid.12/std"] == pytest.approx(np.std(values))
  summary = json.loads((tmp_path / "both" / "summary.json").read_text())
  assert summary["seeds"] == [0, 1] and summary["genotypes"]["1"] == result["genotypes"][1]
  assert summary["nas_bench_201/cifar10.test.200/mean"] == \
      result["nas_bench_201/cifar10.test.200/mean"]
  epoch = json.loads((tmp_path / "both" / "metrics.jsonl").read_text().splitlines()[-1])
  assert epoch["search_val_accuracy"] == pytest.approx(
      np.mean([single["search_val_accuracy"] for single in singles]), abs=1e-6)
  assert epoch["seed_1/nas_bench_201/cifar10.test.200/rank"] == \
      singles[1]["nas_bench_201/cifar10.test.200/rank"]


def test_many_seeds_resume_bit_for_bit(tmp_path, monkeypatch):
  """Three seeds, first order, vmapped two at a time (then the third), crashed after step 3
  (in the second epoch) and resumed: every seed's final state is the uninterrupted run's,
  bit for bit."""
  config = tiny(num_seeds=3, seed=5, vmap_seeds=2, **{"hypergradient.method": "first_order",
                                                      "checkpoint.every_steps": 1})
  reference, resumed = run_interrupted(cnn_search.train_and_evaluate, config, tmp_path,
                                       monkeypatch, 3, "crash")
  timing = lambda r: {k: v for k, v in r.items() if k != "epoch_seconds"}
  assert timing(resumed) == timing(reference) and resumed["seeds"] == [5, 6, 7]
  for s in (5, 6, 7):
    np.testing.assert_array_equal(np.load(tmp_path / "run" / f"seed_{s}" / "alphas.npz")["cell"],
                                  np.load(tmp_path / "reference" / f"seed_{s}" / "alphas.npz")
                                  ["cell"])


@pytest.mark.slow
def test_many_seeds_split_each_batch_over_devices(tmp_path):
  """main.py with two seeds on two devices (each seed's batch split over them), one seed at
  a time (lax.map), ends where the one-device run in this process, both seeds vmapped at
  once, ends."""
  import os
  import pathlib
  import subprocess
  import sys

  flags = ["--config.num_seeds=2", "--config.vmap_seeds=1", "--config.epochs=1",
           "--config.hypergradient.method=first_order"]
  config = tiny(num_seeds=2, epochs=1, **{"hypergradient.method": "first_order"})
  cnn_search.train_and_evaluate(config, str(tmp_path / "one"))
  root = pathlib.Path(__file__).resolve().parents[1]
  env = {**os.environ, "JAX_PLATFORMS": "cpu",
         "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  out = subprocess.run(
      [sys.executable, "main.py", "--config", "configs/nb201_search.py", *flags,
       "--config.data.name=digits", "--config.data.num_train=64", "--config.model.channels=4",
       "--config.model.cells_per_stage=1", "--config.batch_size=16", "--config.seed=0",
       "--config.alpha_learning_rate=3e-2", "--config.progress_bar=False",
       "--config.eval_examples=16", "--workdir", str(tmp_path / "two")],
      capture_output=True, text=True, cwd=root, env=env, timeout=600)
  assert out.returncode == 0, out.stderr
  assert json.loads((tmp_path / "two" / "config.json").read_text())["num_seeds"] == 2
  for s in (0, 1):
    np.testing.assert_allclose(np.load(tmp_path / "two" / f"seed_{s}" / "alphas.npz")["cell"],
                               np.load(tmp_path / "one" / f"seed_{s}" / "alphas.npz")["cell"],
                               rtol=1e-4, atol=1e-7)
