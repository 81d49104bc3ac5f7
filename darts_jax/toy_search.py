"""A DARTS search you can watch in seconds: pick each layer's activation of a small MLP.

A teacher MLP with known activations labels random inputs; the student is a supernet whose
every layer is a mixed op over CANDIDATES, with one alpha row per layer. The bilevel loop
is DARTS' (alpha step on a validation batch through `darts_jax.hypergradient`, then the
weight step with the new alphas), so this file is also the smallest complete example of a
search trainer built on the library.
"""

from __future__ import annotations

import json
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from darts_jax.hypergradient import hypergradient

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

  def loss_fn(w, a, batch):
    inputs, targets = batch
    return jnp.mean((mixed_mlp(w, a, inputs) - targets) ** 2)

  # The weight optimiser is clip -> (weight decay -> momentum SGD); the hypergradient's inner
  # step is the part after the clip, with the real optimiser's state, as in DARTS.
  inner_opt = optax.chain(optax.add_decayed_weights(config.weight_decay),
                          optax.sgd(config.learning_rate, momentum=config.momentum))
  weight_opt = optax.chain(optax.clip_by_global_norm(config.grad_clip), inner_opt)
  alpha_opt = optax.chain(optax.add_decayed_weights(config.alpha_weight_decay),
                          optax.adam(config.alpha_learning_rate, b1=0.5, b2=0.999))
  weight_state, alpha_state = weight_opt.init(weights), alpha_opt.init(alphas)

  @jax.jit
  def search_step(weights, alphas, weight_state, alpha_state, batch_key):
    k_train, k_val = jax.random.split(batch_key)
    pick = lambda k, data: jax.tree.map(
        lambda d: d[jax.random.choice(k, d.shape[0], (config.batch_size,), replace=False)], data)
    train_batch, val_batch = pick(k_train, train), pick(k_val, val)
    alpha_grads, val_loss = hypergradient(
        lambda w, a, b: (loss_fn(w, a, b),) * 2, weights, alphas, train_batch, val_batch,
        inner_opt, weight_state[1], method=config.hypergradient.method, has_aux=True,
        unroll_steps=1)
    updates, alpha_state = alpha_opt.update(alpha_grads, alpha_state, alphas)
    alphas = optax.apply_updates(alphas, updates)
    train_loss, grads = jax.value_and_grad(loss_fn)(weights, alphas, train_batch)
    updates, weight_state = weight_opt.update(grads, weight_state, weights)
    weights = optax.apply_updates(weights, updates)
    return weights, alphas, weight_state, alpha_state, train_loss, val_loss

  history = []
  step_key = jax.random.PRNGKey(config.seed + 1)
  start = time.perf_counter()
  for epoch in range(config.epochs):
    losses = []
    for _ in range(config.steps_per_epoch):
      step_key, batch_key = jax.random.split(step_key)
      weights, alphas, weight_state, alpha_state, train_loss, val_loss = search_step(
          weights, alphas, weight_state, alpha_state, batch_key)
      losses.append((train_loss, val_loss))
    train_loss, val_loss = (float(v) for v in np.mean(np.asarray(losses), axis=0))
    probs = np.asarray(jax.nn.softmax(alphas, axis=-1))
    history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
                    "softmax_alphas": probs.tolist(), "derived": derive(alphas)})
    print(f"epoch {epoch + 1:3d}/{config.epochs}  train loss {train_loss:.4f}  "
          f"val loss {val_loss:.4f}  derived {derive(alphas)}  "
          f"({time.perf_counter() - start:.1f}s)", flush=True)

  result = {"candidates": list(CANDIDATES), "teacher_ops": list(config.teacher_ops),
            "derived": derive(alphas), "alphas": np.asarray(alphas).tolist(),
            "method": config.hypergradient.method, "history": history}
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "result.json"), "w") as f:
    json.dump(result, f, indent=1)
  print("softmax(alphas) per layer, columns", " ".join(CANDIDATES))
  for i, row in enumerate(history[-1]["softmax_alphas"]):
    print(f"  layer {i}: " + " ".join(f"{p:.3f}" for p in row))
  print(f"derived {result['derived']} (teacher {result['teacher_ops']}); wrote "
        f"{os.path.join(workdir, 'result.json')}")
  return result
