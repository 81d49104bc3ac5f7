"""What one DARTS-PT decision costs: every candidate of an edge in one vmapped program against
the same candidates one at a time.

    python benchmarks/darts_pt_decision.py
    python benchmarks/darts_pt_decision.py --space darts --batches 2

A decision evaluates C candidate mixing weights (NAS-Bench-201: its 5 ops; DARTS' space: 8)
on batches of the alpha half (`darts_jax.train.darts_pt.make_candidates_step`, BN on batch
statistics). Three ways, each compiled once, on the same random supernet and batches
(NAS-Bench-201's C=16, 3 stages of 5 cells, or DARTS' 8 cells of 16 channels; 32x32, batch
64): `vmap` (all C at once, darts_jax's default), `lax.map` (one candidate at a time inside
the one program, `--config.projection.vmap_candidates=1`) and a Python loop calling a
one-candidate program C times (how the release evaluates them). Reports compile time and the
median time of a decision's evaluation of one batch over `--repeats`; the three agree to float
rounding (checked). Results: benchmarks/results/darts_pt_decision.json.
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import write_results  # noqa: E402


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--space", choices=("nas_bench_201", "darts"), default="nas_bench_201")
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--out", default=None)
  args = parser.parse_args()

  from darts_jax.train import xla_flags
  xla_flags.configure_cpu()
  import jax
  import jax.numpy as jnp
  import numpy as np

  from configs import cifar_darts_pt, nb201_darts_pt
  from darts_jax import relaxations, spaces
  from darts_jax.data import augment
  from darts_jax.train import cnn_search, darts_pt

  config = (nb201_darts_pt if args.space == "nas_bench_201" else cifar_darts_pt).get_config()
  if args.space == "darts":
    config.search_space = "darts"
  config.epochs = 50  # what relaxations.build reads (the search's length)
  space = spaces.get(config.search_space)
  model = space.build(config, 10)
  given = model.clone(relax=cnn_search._given)  # pylint: disable=protected-access
  weights, stats = space.init(model, 0, (32, 32, 3))
  alphas = space.init_alphas(jax.random.PRNGKey(1), model)
  mix = {k: np.asarray(v) for k, v in relaxations.relax_all(relaxations.softmax, alphas).items()}
  kind = next(iter(mix))
  mixes = {k: jnp.asarray(v) for k, v in darts_pt.op_candidates(mix, kind, 1).items()}
  count = len(space.ops)
  prepare = lambda key, batch: {"images": augment.random_crop_flip(key, batch["images"]),
                                "labels": batch["labels"]}
  rng = np.random.default_rng(0)
  batch = {"images": jnp.asarray(rng.normal(size=(args.batch, 32, 32, 3)), jnp.float32),
           "labels": jnp.asarray(rng.integers(0, 10, size=args.batch))}
  key = jax.random.PRNGKey(3)

  def timed(run):
    times = []
    for _ in range(args.repeats):
      start = time.perf_counter()
      out = run()
      jax.block_until_ready(out)
      times.append(time.perf_counter() - start)
    return statistics.median(times), out

  rows, results = [], {}
  for name, chunk in (("vmap", count), ("lax.map", 1)):
    step = jax.jit(darts_pt.make_candidates_step(given, prepare, chunk))
    start = time.perf_counter()
    compiled = step.lower(weights, stats, mixes, key, batch).compile()
    compile_s = time.perf_counter() - start
    seconds, out = timed(lambda: compiled(weights, stats, mixes, key, batch))
    results[name] = np.asarray(out[0])
    rows.append({"way": name, "candidates": count, "compile_s": compile_s,
                 "decision_batch_s": seconds})
  single = jax.jit(darts_pt.make_candidates_step(given, prepare, 1))
  one = lambda c: {k: v[c:c + 1] for k, v in mixes.items()}
  start = time.perf_counter()
  compiled = single.lower(weights, stats, one(0), key, batch).compile()
  compile_s = time.perf_counter() - start
  seconds, out = timed(lambda: [compiled(weights, stats, one(c), key, batch)
                                for c in range(count)])
  results["loop"] = np.concatenate([np.asarray(o[0]) for o in out])
  rows.append({"way": "python loop", "candidates": count, "compile_s": compile_s,
               "decision_batch_s": seconds})
  for name in ("lax.map", "loop"):
    np.testing.assert_allclose(results[name], results["vmap"], rtol=1e-4)
  out = args.out or f"benchmarks/results/darts_pt_decision_{args.space}.json"
  write_results(out, "darts_pt_decision", rows, space=args.space, batch=args.batch)
  base = rows[-1]["decision_batch_s"]
  print(f"| way | candidates | compile (s) | one batch, all candidates (s) | vs loop |")
  print("| --- | --- | --- | --- | --- |")
  for r in rows:
    print(f"| {r['way']} | {r['candidates']} | {r['compile_s']:.1f} | "
          f"{r['decision_batch_s']:.3f} | {r['decision_batch_s'] / base:.2f}x |")


if __name__ == "__main__":
  main()
