"""A DARTS search you can watch in seconds: pick each layer's activation of a small MLP.

    python main.py --config configs/toy_search.py

A teacher MLP with known activations labels random inputs; the student is a supernet whose
every layer is a mixed op over CANDIDATES, with one alpha row per layer. Each step is
`darts_jax.bilevel.bilevel_step` (the alpha step on a validation batch through the
hypergradient, then the weight step with the new alphas), run by the loop every trainer
shares (`darts_jax.train.loop`: checkpoints, resume, NaN guard, metrics), so this file is
also the smallest complete example of a search trainer built on the library.

Writes to the workdir: `result.json` (alphas, derived ops, losses per epoch), `metrics.jsonl`
and TensorBoard scalars, `checkpoints/last/` and `config.json`.
"""

from __future__ import annotations

import functools
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from darts_jax import bilevel
from darts_jax.train import loop, parallel

CANDIDATES = ("none", "identity", "relu", "tanh", "sin")
_ACTIVATIONS = {
    "none": lambda z, h: jnp.zeros_like(h),
    "identity": lambda z, h: h,
    "relu": lambda z, h: jax.nn.relu(z),
    "tanh": lambda z, h: jnp.tanh(z),
    "sin": lambda z, h: jnp.sin(z),
}


def mixed_mlp(weights, alphas, x):
  """Each layer: sum_k softmax(alpha_layer)[k] * op_k(x W_k), then a linear readout."""
  h = x
  for layer, alpha in zip(weights["layers"], alphas):
    mix = jax.nn.softmax(alpha)
    h = sum(mix[k] * _ACTIVATIONS[name](h @ layer[k], h) for k, name in enumerate(CANDIDATES))
  return h @ weights["readout"]


def teacher(key, dim, ops):
  """Labels from a random MLP with the given activation per layer."""
  keys = jax.random.split(key, len(ops) + 1)
  mats = [jax.random.normal(k, (dim, dim)) * 1.5 / np.sqrt(dim) for k in keys[:-1]]
  readout = jax.random.normal(keys[-1], (dim,)) / np.sqrt(dim)

  def label(x):
    h = x
    for mat, op in zip(mats, ops):
      h = _ACTIVATIONS[op](h @ mat, h)
    return h @ readout

  return label


def derive(alphas):
  """The strongest non-`none` candidate of each layer (DARTS' rule with one input per node)."""
  return [CANDIDATES[1 + int(jnp.argmax(a[1:]))] for a in alphas]


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs the toy search and writes `result.json` (alphas, derived ops, losses) to workdir."""
  key = jax.random.PRNGKey(config.seed)
  k_teacher, k_data, k_init, k_alpha = jax.random.split(key, 4)
  layers, dim = len(config.teacher_ops), config.dim
  label = teacher(k_teacher, dim, config.teacher_ops)
  x = jax.random.normal(k_data, (2 * config.num_examples, dim))
  y = label(x)
  # DARTS splits the training data in half: weights on the first, alphas on the second.
  train, val = (x[: config.num_examples], y[: config.num_examples]), (
      x[config.num_examples:], y[config.num_examples:])

  init_keys = jax.random.split(k_init, layers * len(CANDIDATES) + 1)
  weights = {
      "layers": [[jax.random.normal(init_keys[i * len(CANDIDATES) + k], (dim, dim)) / np.sqrt(dim)
                  for k in range(len(CANDIDATES))] for i in range(layers)],
      "readout": jax.random.normal(init_keys[-1], (dim,)) / np.sqrt(dim),
  }
  alphas = 1e-3 * jax.random.normal(k_alpha, (layers, len(CANDIDATES)))

  def loss_fn(w, a, batch, model_state, key):
    del key  # the MLP draws nothing
    inputs, targets = batch
    return jnp.mean((mixed_mlp(w, a, inputs) - targets) ** 2), (model_state, {})

  # DARTS' optimisers: clip -> (weight decay -> momentum SGD) on the weights, the virtual step
  # without the clip; Adam on the alphas.
  opts = bilevel.clipped(
      optax.chain(optax.add_decayed_weights(config.weight_decay),
                  optax.sgd(config.learning_rate, momentum=config.momentum)),
      config.grad_clip,
      optax.chain(optax.add_decayed_weights(config.alpha_weight_decay),
                  optax.adam(config.alpha_learning_rate, b1=0.5, b2=0.999)))
  state = bilevel.init_search_state(weights, alphas, opts)
  options = bilevel.hypergradient_options(config.hypergradient)

  @functools.partial(jax.jit, donate_argnums=0)
  def search_step(state, batch_key):
    k_train, k_val = jax.random.split(batch_key)
    pick = lambda k, data: jax.tree.map(
        lambda d: d[jax.random.choice(k, d.shape[0], (config.batch_size,), replace=False)], data)
    return bilevel.bilevel_step(loss_fn, opts, state, pick(k_train, train), pick(k_val, val),
                                **options)

  step_key = jax.random.PRNGKey(config.seed + 1)
  history, val_losses = [], []

  def train_step(state, epoch, index, step):
    del epoch, index
    state, metrics = search_step(state, jax.random.fold_in(step_key, step))
    val_losses.append(metrics["val_loss"])
    return state, loop.StepLog(metrics["train_loss"], 0.0,
                               {"weight gradient norm": metrics["weight_grad_norm"],
                                "alpha hypergradient norm": metrics["alpha_grad_norm"]})

  def end_of_epoch(state, epoch, step, progress, ckpt):
    del step, ckpt
    val_loss = float(np.mean(jax.device_get(val_losses))) if val_losses else float("nan")
    val_losses.clear()
    derived = derive(state.alphas)
    history.append({"epoch": epoch, "train_loss": progress.loss, "val_loss": val_loss,
                    "softmax_alphas": np.asarray(jax.nn.softmax(state.alphas, -1)).tolist(),
                    "derived": derived})
    report = lambda s: (f"epoch {epoch + 1:3d}/{config.epochs}  train loss {s['train_loss']:.4f}"
                        f"  val loss {val_loss:.4f}  derived {derived}")
    return loop.EpochEnd(state, {"train_loss": progress.loss, "val_loss": val_loss},
                         {"history": history}, report)

  state, _ = loop.run(config, workdir, state, steps_per_epoch=config.steps_per_epoch,
                      train_step=train_step, end_of_epoch=end_of_epoch,
                      resume=lambda meta, ckpt: history.extend(meta.get("history", [])),
                      record=lambda: {"history": history})

  alphas = state.alphas
  result = {"candidates": list(CANDIDATES), "teacher_ops": list(config.teacher_ops),
            "derived": derive(alphas), "alphas": np.asarray(alphas).tolist(),
            "method": config.hypergradient.method, "history": history}
  if parallel.is_primary():
    with open(os.path.join(workdir, "result.json"), "w") as f:
      json.dump(result, f, indent=1)
  print("softmax(alphas) per layer, columns", " ".join(CANDIDATES))
  for i, row in enumerate(np.asarray(jax.nn.softmax(alphas, axis=-1))):
    print(f"  layer {i}: " + " ".join(f"{p:.3f}" for p in row))
  print(f"derived {result['derived']} (teacher {result['teacher_ops']}); wrote "
        f"{os.path.join(workdir, 'result.json')}")
  return result
