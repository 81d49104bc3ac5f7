"""Data parallelism: a step over 4 devices equals the 1-device step, for every trainer.

Each test runs a script in a subprocess, since the device count is fixed when JAX starts
(`--xla_force_host_platform_device_count=4` gives this CPU four devices). The script runs the
trainer's own step function, jitted once as the trainer does (state replicated, batch split
over the mesh) and once on one device, and reports the relative difference of every array.
"""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

from tests.test_rnn import write_corpus

ROOT = pathlib.Path(__file__).resolve().parents[1]

COMPARE = r'''
import json
import jax
import numpy as np
from darts_jax.train import parallel

mesh = parallel.data_mesh()


def compare(name, one, four):
  """Prints each leaf's max |a - b| / (|a| + 1e-3) and whether the 4-device one is
  replicated or split as the trainer asks."""
  errors = {}
  for (path, a), b in zip(jax.tree.leaves_with_path(one), jax.tree.leaves(four)):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    errors[jax.tree_util.keystr(path)] = float(np.max(np.abs(a - b) / (np.abs(a) + 1e-3)))
  print(f"RESULT {name} " + json.dumps({
      "devices": mesh.size, "errors": errors,
      "devices_per_leaf": sorted({len(x.sharding.device_set) for x in jax.tree.leaves(four)}),
  }))
'''

CNN_SEARCH = COMPARE + r'''
from darts_jax import bilevel
from darts_jax.spaces.darts_cnn import supernet
from darts_jax.train import cnn_search

model = supernet.SearchNetwork(channels=2, layers=3, num_classes=10)
weights, stats = supernet.init_supernet(model, 0, (8, 8, 3))
alphas = supernet.init_alphas(jax.random.PRNGKey(0))
opts = bilevel.darts_optimizers(steps_per_epoch=10)
state = bilevel.init_search_state(weights, alphas, opts, bilevel.ModelState(stats))
step = cnn_search.make_search_step(model, opts, method="exact")
rng = np.random.default_rng(0)
batch = lambda: {"images": rng.normal(size=(8, 8, 8, 3)).astype(np.float32),
                 "labels": rng.integers(0, 10, 8).astype(np.int32)}
train, val = batch(), batch()
key = jax.random.PRNGKey(5)
one, _ = jax.jit(step)(state, train, val, key)
train4, val4 = parallel.shard_batch(train, mesh), parallel.shard_batch(val, mesh)
four, _ = jax.jit(step, out_shardings=parallel.replicated(mesh))(
    parallel.replicate(state, mesh), train4, val4, key)
print("ROWS", [s.data.shape[0] for s in train4["images"].addressable_shards])
print("MOVED", float(np.max(np.abs(np.asarray(one.alphas["normal"] - alphas["normal"])))))
compare("search", one, four)
'''

CNN_EVAL = COMPARE + r'''
import optax
from configs import cifar_eval
from darts_jax.train import cnn_eval
from darts_jax.spaces.darts_cnn import genotypes
from darts_jax.spaces.darts_cnn import network

config = cifar_eval.get_config()
config.model.channels, config.model.layers = 4, 3  # reductions 1, 2; auxiliary head after 2
model = cnn_eval.build_model(config, genotypes.DARTS_V2, 10)
variables = network.init_network(model, 0, (32, 32, 3))
optimizer = cnn_eval.make_optimizer(config, steps_per_epoch=10)
state = cnn_eval.TrainState(variables["params"], variables["batch_stats"],
                            optimizer.init(variables["params"]))
mean, std = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
step = cnn_eval.make_train_step(model, optimizer, config, mean, std)
rng = np.random.default_rng(0)
batch = {"images": rng.integers(0, 256, (8, 32, 32, 3)).astype(np.uint8),
         "labels": rng.integers(0, 10, 8).astype(np.int32)}
# Crop, flip, cutout and drop path all draw from the key: the same bits on any sharding.
args = (jax.random.PRNGKey(1), batch, np.float32(0.2))
one, m1 = jax.jit(step)(state, *args)
four, m4 = jax.jit(step, out_shardings=parallel.replicated(mesh))(
    parallel.replicate(state, mesh), args[0], parallel.shard_batch(batch, mesh), args[2])
compare("train_step", (one, m1["loss"]), (four, m4["loss"]))
eval_step = cnn_eval.make_eval_step(model, mean, std)
mask = np.array([1, 1, 1, 1, 1, 1, 0, 0], np.float32)  # a padded last batch
e1 = jax.jit(eval_step)(one.params, one.batch_stats, batch, mask)
e4 = jax.jit(eval_step, out_shardings=parallel.replicated(mesh))(
    four.params, four.batch_stats, *parallel.shard_batch((batch, mask), mesh))
compare("eval_step", e1, e4)
'''

RNN = COMPARE + r'''
import optax
from darts_jax import bilevel
from darts_jax.data import text as text_data
from darts_jax.spaces.darts_rnn import model as rnn
from darts_jax.train import rnn_common, rnn_search
from tests.test_rnn import tiny_config

config = tiny_config("unused", "exact")  # the model and optimiser settings
config.batch_size = 8  # 2 streams per device
model = rnn_common.build_model(config, 20)
variables = rnn.init_rnn(model, 0)
alphas = rnn.init_rnn_alphas(jax.random.PRNGKey(0))
opts = bilevel.same_step(rnn_common.make_weight_optimizer(config), optax.adam(3e-3))
hidden = lambda: np.random.default_rng(1).normal(size=(8, 8)).astype(np.float32)
state = bilevel.init_search_state(
    variables["params"], alphas, opts,
    bilevel.ModelState(variables["batch_stats"], hidden(), hidden()))
state = state._replace(weight_opt_state=rnn_common.with_learning_rate(state.weight_opt_state,
                                                                      20.0))
step = rnn_search.make_search_step(model, opts, config)
streams = np.random.default_rng(2).integers(0, 20, (40, 8))
train, valid = text_data.window(streams, 0, 7, 8), text_data.window(streams, 9, 8, 8)
args = (jax.random.PRNGKey(3), np.float32(7))
one, _ = jax.jit(step)(state, train, valid, *args)
shardings = rnn_search.state_shardings(state, mesh)
shard = lambda w: parallel.shard_batch(w, mesh, axis=1)
four, _ = jax.jit(step, out_shardings=(shardings, parallel.replicated(mesh)))(
    jax.device_put(state, shardings), shard(train), shard(valid), *args)
print("HIDDEN_ROWS", [s.data.shape[0] for s in four.model_state.train.addressable_shards])
compare("rnn_search_step", one, four)
'''


def run_on_four_devices(script, *args):
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
         "JAX_PLATFORMS": "cpu"}
  out = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                       timeout=600, cwd=ROOT, env=env)
  assert out.returncode == 0, out.stderr[-3000:]
  results = {}
  for line in out.stdout.splitlines():
    if line.startswith("RESULT "):
      name, payload = line[len("RESULT "):].split(" ", 1)
      results[name] = json.loads(payload)
  return results, out.stdout


def worst(errors, key=lambda name: True):
  name = max((k for k in errors if key(k)), key=errors.get)
  return name, errors[name]


def test_exact_search_step_on_four_devices_equals_one_device():
  results, stdout = run_on_four_devices(CNN_SEARCH)
  result = results["search"]
  assert result["devices"] == 4 and "ROWS [2, 2, 2, 2]" in stdout
  assert result["devices_per_leaf"] == [4]  # replicated
  assert float(stdout.split("MOVED ")[1].split()[0]) > 1e-6  # the step did something
  errors = result["errors"]
  assert len(errors) > 50
  # Same maths, sums in another order: relative to each entry's size (+1e-3).
  assert worst(errors)[1] < 1e-3, worst(errors)
  assert worst(errors, lambda k: "alphas" in k)[1] < 1e-5, worst(errors, lambda k: "alphas" in k)


def test_evaluation_train_and_eval_steps_on_four_devices_equal_one_device():
  """The from-scratch trainer's step: global-batch BN, auxiliary head, drop path, cutout."""
  results, _ = run_on_four_devices(CNN_EVAL)
  train, evaluation = results["train_step"], results["eval_step"]
  assert len(train["errors"]) > 100 and train["devices_per_leaf"] == [4]
  assert worst(train["errors"])[1] < 1e-3, worst(train["errors"])
  # Loss, top-1 and top-5 sums over the 6 real images of a padded batch.
  assert len(evaluation["errors"]) == 3 and worst(evaluation["errors"])[1] < 1e-4


def test_recurrent_search_step_on_four_devices_equals_one_device():
  """The hidden states split by stream, the rest replicated. (The whole recurrent trainer,
  split over hosts: the two-host test below.)"""
  results, stdout = run_on_four_devices(RNN)
  result = results["rnn_search_step"]
  assert "HIDDEN_ROWS [2, 2, 2, 2]" in stdout
  # (The alphas' Adam step divides by |gradient|: near-zero entries amplify the float noise,
  # measured 1.3e-4; the CNN search's alphas agree to 1e-5.)
  assert worst(result["errors"])[1] < 1e-3, worst(result["errors"])


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_two_hosts_train_stop_on_sigterm_together_and_resume(tmp_path):
  """Two processes (one CPU device each) joined by `--distributed`, as two TPU or GPU hosts
  are: each feeds its half of every batch, only the first writes files, Orbax saves one
  checkpoint from both. SIGTERM to one host stops both at the same step with a checkpoint;
  the same command resumes; the result is the one-process run's."""
  folder = write_corpus(tmp_path / "ptb", lines=(300, 40, 40))
  args = ["main.py", "--config", "configs/ptb_eval.py", f"--config.data.dir={folder}",
          "--config.model.embed_size=8", "--config.model.hidden_size=8",
          "--config.batch_size=4", "--config.bptt=8", "--config.max_seq_len_delta=0",
          "--config.window_bucket=8", "--config.epochs=2", "--config.learning_rate=1",
          "--config.checkpoint.every_steps=20", "--config.progress_bar=False"]
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  one = subprocess.run([sys.executable, *args, f"--workdir={tmp_path / 'one'}"], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=600)
  assert one.returncode == 0, one.stderr[-3000:]

  workdir = tmp_path / "two"

  def start_hosts():
    port = _free_port()
    return [subprocess.Popen(
        [sys.executable, *args, f"--workdir={workdir}", "--distributed",
         f"--coordinator_address=localhost:{port}", "--num_processes=2", f"--process_id={i}"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)]

  hosts = start_hosts()
  deadline = time.time() + 300
  while not (workdir / "checkpoints" / "last" / "20").exists() and time.time() < deadline:
    time.sleep(0.05)
  hosts[1].send_signal(signal.SIGTERM)  # the second host only
  outputs = [h.communicate(timeout=300) for h in hosts]
  assert [h.returncode for h in hosts] == [143, 143], outputs[0][1][-3000:]
  stops = {err.strip().splitlines()[-1] for _, err in outputs}
  assert len(stops) == 1 and "Preempted: SIGTERM received: saved the checkpoint" in stops.pop()
  stopped = sorted(int(p.name) for p in (workdir / "checkpoints" / "last").iterdir()
                   if p.name.isdigit())[-1]
  assert 20 < stopped < 126  # 63 windows an epoch

  hosts = start_hosts()
  outputs = [h.communicate(timeout=300) for h in hosts]
  assert [h.returncode for h in hosts] == [0, 0], outputs[0][1][-3000:]
  assert all(f"resuming from the checkpoint at step {stopped}" in out for out, _ in outputs)
  metrics = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [m["epoch"] for m in metrics] == [1, 2]  # written once, by the first host
  ours = json.loads((workdir / "summary.json").read_text())
  theirs = json.loads((tmp_path / "one" / "summary.json").read_text())
  for key in ("best_valid_ppl", "test_ppl"):
    assert abs(ours[key] - theirs[key]) < 1e-4 * theirs[key], (key, ours, theirs)
