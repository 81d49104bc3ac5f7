"""DARTS' bilevel search step for the CNN supernet: the alpha step, then the weight step.

One jitted function per search iteration (../shared/REFERENCE.md, "Search optimisation"):
  1. alphas <- Adam(lr 3e-4, betas (0.5, 0.999), L2 1e-3) on the hypergradient of the
     validation loss through one virtual weight step (`darts_jax.hypergradient`);
  2. weights <- SGD(momentum 0.9, L2 3e-4, clip 5, cosine lr per epoch) on the training loss
     with the new alphas.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from darts_jax.hypergradient import hypergradient
from darts_jax.supernet import SearchNetwork


class SearchState(NamedTuple):
  weights: Any
  batch_stats: Any
  alphas: Any
  weight_opt_state: Any
  alpha_opt_state: Any


def cosine_per_epoch(lr_max, lr_min, epochs, steps_per_epoch):
  """DARTS' schedule: lr_min + (lr_max - lr_min)(1 + cos(pi e / epochs)) / 2 for epoch e."""

  def schedule(count):
    epoch = count // steps_per_epoch
    return lr_min + 0.5 * (lr_max - lr_min) * (1 + jnp.cos(math.pi * epoch / epochs))

  return schedule


def make_optimizers(*, lr=0.025, lr_min=0.001, epochs=50, steps_per_epoch=391, momentum=0.9,
                    weight_decay=3e-4, grad_clip=5.0, alpha_lr=3e-4, alpha_weight_decay=1e-3,
                    nesterov=False):
  """Returns (weight_opt, inner_opt, alpha_opt) with DARTS' defaults.

  `weight_opt = chain(clip, inner_opt)`, so `weight_opt_state[1]` is `inner_opt`'s state:
  the virtual step of the hypergradient is the real step without the clip, as in DARTS.
  """
  schedule = cosine_per_epoch(lr, lr_min, epochs, steps_per_epoch)
  inner_opt = optax.chain(optax.add_decayed_weights(weight_decay),
                          optax.sgd(schedule, momentum=momentum, nesterov=nesterov))
  weight_opt = optax.chain(optax.clip_by_global_norm(grad_clip), inner_opt)
  alpha_opt = optax.chain(optax.add_decayed_weights(alpha_weight_decay),
                          optax.adam(alpha_lr, b1=0.5, b2=0.999))
  return weight_opt, inner_opt, alpha_opt


def make_loss_fn(model: SearchNetwork):
  """`loss(weights, alphas, batch) -> (loss, (new_batch_stats, accuracy))`.

  `batch = {"images", "labels", "batch_stats"}`: the running BN statistics ride in the batch
  so the loss stays a pure function of (weights, alphas, batch); in training mode they do not
  change the loss, only the returned new statistics.
  """

  def loss_fn(weights, alphas, batch):
    logits, updates = model.apply({"params": weights, "batch_stats": batch["batch_stats"]},
                                  batch["images"], alphas, train=True, mutable=["batch_stats"])
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"]).mean()
    accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["labels"])
    return loss, (updates["batch_stats"], accuracy)

  return loss_fn


def make_search_step(model: SearchNetwork, weight_opt, inner_opt, alpha_opt,
                     method: str = "exact"):
  """Returns `step(state, train, val) -> (state, metrics)`, not yet jitted.

  `train`/`val` are `{"images", "labels"}` batches. The BN running statistics follow the
  weight step's forward pass; the official code also folds in the architecture step's
  forwards, which only changes the statistics used to evaluate the supernet.
  """
  loss_fn = make_loss_fn(model)

  def step(state: SearchState, train, val):
    train = {**train, "batch_stats": state.batch_stats}
    val = {**val, "batch_stats": state.batch_stats}
    alpha_grads, (_, val_accuracy) = hypergradient(
        loss_fn, state.weights, state.alphas, train, val, inner_opt,
        state.weight_opt_state[1], method=method, has_aux=True)
    updates, alpha_opt_state = alpha_opt.update(alpha_grads, state.alpha_opt_state,
                                                state.alphas)
    alphas = optax.apply_updates(state.alphas, updates)

    (loss, (batch_stats, accuracy)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.weights, alphas, train)
    updates, weight_opt_state = weight_opt.update(grads, state.weight_opt_state, state.weights)
    weights = optax.apply_updates(state.weights, updates)
    metrics = {"train_loss": loss, "train_accuracy": accuracy, "val_accuracy": val_accuracy,
               # For the NaN guard: one scalar per gradient says whether any entry is not finite.
               "weight_grad_norm": optax.global_norm(grads),
               "alpha_grad_norm": optax.global_norm(alpha_grads)}
    return SearchState(weights, batch_stats, alphas, weight_opt_state, alpha_opt_state), metrics

  return step


def init_search_state(weights, batch_stats, alphas, weight_opt, alpha_opt) -> SearchState:
  return SearchState(weights, batch_stats, alphas, weight_opt.init(weights),
                     alpha_opt.init(alphas))
