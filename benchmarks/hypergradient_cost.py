"""Cost of darts_jax.hypergradient per method on a small mixed-op CNN, in one process.

    python benchmarks/hypergradient_cost.py [--batch 32] [--channels 16] [--repeats 10]

For each method (first order, exact forward-over-reverse, exact reverse-over-reverse, DARTS'
finite difference) it reports the jit compile time, the median time per call, and XLA's
temporary buffer size for the compiled call (a deterministic proxy for peak memory). The
network: a stem conv, then 4 mixed ops over 6 candidates (none, skip, 3x3 and 5x5 convs,
3x3 avg pool, 3x3 max pool), then global pool and a linear classifier. Results go to
benchmarks/results/hypergradient_cost.json and a markdown table on stdout.
"""

import argparse
import json
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import optax

import darts_jax

CANDIDATES = ("none", "skip", "conv_3x3", "conv_5x5", "avg_pool_3x3", "max_pool_3x3")


def conv(x, kernel):
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def pool(x, kind):
  init, op = (0.0, jax.lax.add) if kind == "avg" else (-jnp.inf, jax.lax.max)
  out = jax.lax.reduce_window(x, init, op, (1, 3, 3, 1), (1, 1, 1, 1), "SAME")
  return out / 9.0 if kind == "avg" else out


def mixed_op(x, w, alpha):
  mix = jax.nn.softmax(alpha)
  outs = (jnp.zeros_like(x), x, conv(jax.nn.relu(x), w["conv_3x3"]),
          conv(jax.nn.relu(x), w["conv_5x5"]), pool(x, "avg"), pool(x, "max"))
  return sum(m * o for m, o in zip(mix, outs))


def loss_fn(weights, alphas, batch):
  images, labels = batch
  h = conv(images, weights["stem"])
  for w, alpha in zip(weights["edges"], alphas):
    h = h + mixed_op(h, w, alpha)
  logits = h.mean(axis=(1, 2)) @ weights["head"]
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def init(key, channels, edges=4, classes=10):
  keys = iter(jax.random.split(key, 3 + 2 * edges))
  he = lambda shape: jax.random.normal(next(keys), shape) * (2.0 / (shape[0] * shape[1] *
                                                                     shape[2])) ** 0.5
  weights = {
      "stem": he((3, 3, 3, channels)),
      "edges": [{"conv_3x3": he((3, 3, channels, channels)),
                 "conv_5x5": he((5, 5, channels, channels))} for _ in range(edges)],
      "head": jax.random.normal(next(keys), (channels, classes)) / channels ** 0.5,
  }
  alphas = 1e-3 * jax.random.normal(next(keys), (edges, len(CANDIDATES)))
  return weights, alphas


def measure(fn, args, repeats):
  start = time.perf_counter()
  compiled = jax.jit(fn).lower(*args).compile()
  compile_s = time.perf_counter() - start
  jax.block_until_ready(compiled(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    times.append(time.perf_counter() - start)
  memory = compiled.memory_analysis()
  temp = getattr(memory, "temp_size_in_bytes", None) if memory is not None else None
  return {"compile_s": compile_s, "median_call_s": statistics.median(times),
          "temp_bytes": temp}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--channels", type=int, default=16)
  parser.add_argument("--size", type=int, default=32)
  parser.add_argument("--repeats", type=int, default=10)
  parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                    "hypergradient_cost.json"))
  args = parser.parse_args()

  k_init, k_data = jax.random.split(jax.random.PRNGKey(0))
  weights, alphas = init(k_init, args.channels)
  images = jax.random.normal(k_data, (2, args.batch, args.size, args.size, 3))
  labels = jax.random.randint(k_data, (2, args.batch), 0, 10)
  train, val = (images[0], labels[0]), (images[1], labels[1])
  inner_opt = optax.chain(optax.add_decayed_weights(3e-4), optax.sgd(0.025, momentum=0.9))
  state = inner_opt.init(weights)

  variants = {
      "first_order": dict(method="first_order"),
      "exact (forward-over-reverse)": dict(method="exact", exact_mode="forward_over_reverse"),
      "exact (reverse-over-reverse)": dict(method="exact", exact_mode="reverse_over_reverse"),
      "finite_difference": dict(method="finite_difference"),
  }
  results = []
  for name, kwargs in variants.items():
    fn = lambda w, a, t, v, s, kwargs=kwargs: darts_jax.hypergradient(
        loss_fn, w, a, t, v, inner_opt, s, **kwargs)
    row = {"variant": name, **measure(fn, (weights, alphas, train, val, state), args.repeats)}
    results.append(row)
    print(row, flush=True)

  record = {
      "benchmark": "hypergradient_cost", "batch": args.batch, "channels": args.channels,
      "size": args.size, "jax": jax.__version__, "backend": jax.default_backend(),
      "devices": [str(d) for d in jax.devices()], "cpu_count": os.cpu_count(),
      "machine": platform.machine(), "results": results,
  }
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(record, f, indent=1)
  base = results[0]["median_call_s"]
  print("\n| method | compile (s) | time per call (ms) | x first order | XLA temp buffers (MiB) |")
  print("| --- | --- | --- | --- | --- |")
  for r in results:
    mib = f"{r['temp_bytes'] / 2**20:.1f}" if r["temp_bytes"] is not None else "n/a"
    print(f"| {r['variant']} | {r['compile_s']:.2f} | {1e3 * r['median_call_s']:.1f} | "
          f"{r['median_call_s'] / base:.2f} | {mib} |")


if __name__ == "__main__":
  main()
