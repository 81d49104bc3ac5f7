"""What checkpointing costs: save and restore time and size for the paper-size run states.

    python benchmarks/checkpoint_io.py

Each state is what the trainer checkpoints (weights, BN statistics, optimiser states, alphas
or hidden states). A save is synchronous (Orbax's write, then the SHA-256 checksums); a restore
verifies the checksums and reads the arrays back. Each is timed over 3 repetitions after one
warm-up, in a fresh process per state. Writes benchmarks/results/checkpoint_io.json.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import measure_in_subprocess, write_results  # noqa: E402

STATES = ("cifar_search", "cifar_eval", "ptb_eval")


def build_state(name):
  import jax
  import jax.numpy as jnp

  if name == "cifar_search":
    from configs import cifar_search
    from darts_jax import bilevel
    from darts_jax.spaces.darts_cnn import supernet

    config = cifar_search.get_config()
    model = supernet.SearchNetwork(channels=16, layers=8, num_classes=10)
    weights, stats = supernet.init_supernet(model, 0, (32, 32, 3))
    del config
    return bilevel.init_search_state(weights, supernet.init_alphas(jax.random.PRNGKey(0)),
                                     bilevel.darts_optimizers(), bilevel.ModelState(stats))
  if name == "cifar_eval":
    from configs import cifar_eval
    from darts_jax.train import cnn_eval
    from darts_jax.spaces.darts_cnn import genotypes
    from darts_jax.spaces.darts_cnn import network

    config = cifar_eval.get_config()
    model = cnn_eval.build_model(config, genotypes.DARTS_V2, 10)
    variables = network.init_network(model, 0, (32, 32, 3))
    optimizer = cnn_eval.make_optimizer(config, 520)
    return cnn_eval.TrainState(variables["params"], variables["batch_stats"],
                               optimizer.init(variables["params"]))
  from configs import ptb_eval
  from darts_jax.spaces.darts_rnn import genotypes as rnn_genotypes
  from darts_jax.spaces.darts_rnn import model as rnn
  from darts_jax.train import rnn_common, rnn_eval

  config = ptb_eval.get_config()
  model = rnn_common.build_model(config, 10000, rnn_genotypes.RNN_DARTS_V2)
  params = rnn.init_rnn(model, 0)["params"]
  optimizer = rnn_common.make_weight_optimizer(config, average=True)
  return rnn_eval.RNNTrainState(params, optimizer.init(params),
                                jnp.zeros((config.batch_size, config.model.hidden_size)))


def measure(name):
  import jax
  import ml_collections

  from darts_jax.train.checkpoints import RunCheckpoints

  state = build_state(name)
  jax.block_until_ready(state)
  megabytes = sum(x.nbytes for x in jax.tree.leaves(state)) / 2**20
  config = ml_collections.ConfigDict({"checkpoint": {"every_steps": 1, "keep": 2}})
  workdir = tempfile.mkdtemp(prefix="ckpt_bench_")
  saves, restores = [], []
  try:
    with RunCheckpoints(workdir, config) as ckpt:
      for step in range(4):  # the first is a warm-up
        start = time.perf_counter()
        ckpt.save(step, state, {"epoch": 0, "index": step})
        saves.append(time.perf_counter() - start)
        start = time.perf_counter()
        restored, _ = ckpt.restore(state)
        jax.block_until_ready(restored)
        restores.append(time.perf_counter() - start)
      folder = os.path.join(ckpt.directory, "3")
      disk = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(folder)
                 for f in fs) / 2**20
  finally:
    shutil.rmtree(workdir, ignore_errors=True)
  return {"state": name, "arrays": len(jax.tree.leaves(state)), "state_mib": round(megabytes, 1),
          "disk_mib": round(disk, 1), "save_s": round(sum(saves[1:]) / 3, 3),
          "restore_s": round(sum(restores[1:]) / 3, 3)}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--state", choices=STATES)
  args = parser.parse_args()
  if args.state:
    print("RESULT " + json.dumps(measure(args.state)), flush=True)
    return
  rows = [measure_in_subprocess(["benchmarks/checkpoint_io.py", "--state", s], state=s)
          for s in STATES]
  for row in rows:
    print(row, flush=True)
  write_results(os.path.join(os.path.dirname(__file__), "results", "checkpoint_io.json"),
                "checkpoint_io", rows)


if __name__ == "__main__":
  main()
