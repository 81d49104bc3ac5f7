"""Data parallelism: an exact search step over 4 devices equals the 1-device step.

Runs in a subprocess, since the device count is fixed when JAX starts
(`--xla_force_host_platform_device_count=4` gives this CPU four devices).
"""

import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]

SCRIPT = r'''
import json
import jax
import numpy as np
from darts_jax import parallel, search, supernet

model = supernet.SearchNetwork(channels=2, layers=3, num_classes=10)
weights, stats = supernet.init_supernet(model, 0, (8, 8, 3))
alphas = supernet.init_alphas(jax.random.PRNGKey(0))
weight_opt, inner_opt, alpha_opt = search.make_optimizers(steps_per_epoch=10)
state = search.init_search_state(weights, stats, alphas, weight_opt, alpha_opt)
step = search.make_search_step(model, weight_opt, inner_opt, alpha_opt, "exact")
rng = np.random.default_rng(0)
batch = lambda: {"images": rng.normal(size=(8, 8, 8, 3)).astype(np.float32),
                 "labels": rng.integers(0, 10, 8).astype(np.int32)}
train, val = batch(), batch()
one, _ = jax.jit(step)(state, train, val)
mesh = parallel.data_mesh()
train4, val4 = parallel.shard_batch(train, mesh), parallel.shard_batch(val, mesh)
four, _ = jax.jit(step, out_shardings=parallel.replicated(mesh))(
    parallel.replicate(state, mesh), train4, val4)
errors = {}
for (path, a), b in zip(jax.tree.leaves_with_path(one), jax.tree.leaves(four)):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  errors[jax.tree_util.keystr(path)] = float(np.max(np.abs(a - b) / (np.abs(a) + 1e-3)))
print("RESULT " + json.dumps({
    "devices": mesh.size,
    "rows_per_device": [s.data.shape[0] for s in train4["images"].addressable_shards],
    "replicated": four.alphas["normal"].sharding.is_fully_replicated,
    "alpha_moved": float(np.max(np.abs(np.asarray(one.alphas["normal"])
                                       - np.asarray(alphas["normal"])))),
    "errors": errors}))
'''


def test_exact_search_step_on_four_devices_equals_one_device():
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
         "JAX_PLATFORMS": "cpu"}
  out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                       timeout=600, cwd=ROOT, env=env)
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads(out.stdout.split("RESULT ", 1)[1])
  assert result["devices"] == 4 and result["rows_per_device"] == [2, 2, 2, 2]
  assert result["replicated"]
  assert result["alpha_moved"] > 1e-6  # the step did something to compare
  errors = result["errors"]
  assert len(errors) > 50
  # Same maths, sums in another order: relative to each entry's size (+1e-3).
  worst = max(errors, key=errors.get)
  assert errors[worst] < 1e-3, (worst, errors[worst])
  assert max(v for k, v in errors.items() if "alphas" in k) < 1e-5
