"""One bilevel search step for any model: the alpha step, then the weight step (DARTS, Alg. 1).

    opts = bilevel.darts_optimizers(steps_per_epoch=391)      # or any BilevelOptimizers
    state = bilevel.init_search_state(weights, alphas, opts, ModelState(shared=bn_stats))
    step = jax.jit(functools.partial(bilevel.bilevel_step, loss_fn, opts, method="exact"),
                   donate_argnums=0)
    state, metrics = step(state, train_batch, val_batch, key)

One call of `bilevel_step` is DARTS' search iteration (Liu et al., 2019, Alg. 1):
  1. alphas <- the alpha optimiser on the hypergradient of the validation loss through the
     virtual weight step (`darts_jax.hypergradient`: exact, DARTS' finite difference or first
     order);
  2. weights <- the weight optimiser on the training loss with the new alphas.

The model is a pure loss with its non-differentiated state passed in and returned:

    loss_fn(weights, alphas, batch, model_state: LossState, key)
        -> (loss, (new LossState, {name: scalar metric}))

`LossState(shared, carry, relax_key, epoch)`: `shared` is read by every evaluation and
updated by the weight step (BN running statistics); `carry` belongs to the batch's data stream
(a recurrent network's hidden state: the training stream's in the inner and weight steps, the
validation stream's in the outer loss). `relax_key` and `epoch` are the relaxation's inputs
(`darts_jax.relaxations`): the alpha step gives its virtual step and its validation loss the
same `relax_key`, so a sampled relaxation's hypergradient is that of one objective (the sample
held fixed), and the weight step a fresh one; `epoch` (from 0) drives the schedules of
temperatures and regularisers. `key` is a fresh PRNG key per evaluation (dropout). Models
without such state return the `LossState` they were given.

`method="single_level"` is SNAS' mode (Xie et al., ICLR 2019): no hypergradient and no
validation batch; one gradient of the training loss at (weights, alphas), on the training
batch with one relaxation draw, updates both, the alphas by the alpha optimiser and the
weights by the weight optimiser (SNAS-Series, SNAS/train_search.py: one `loss.backward()`,
then both optimisers step).

The alpha step may add a regulariser of the alphas to the validation loss
(`alpha_penalty(alphas, epoch)`, e.g. beta-DARTS' beta-decay); being a function of the alphas
alone, its gradient is added to the hypergradient, whatever the hypergradient's method.

Where the release and this step differ: the official CNN code also folds the architecture
step's forward passes into the BN running statistics; here only the weight step's are kept,
which changes nothing but the statistics an evaluation-mode supernet uses.
"""

from __future__ import annotations

import math
import operator
from typing import Any, Callable, NamedTuple

import jax
from jax import lax
import jax.numpy as jnp
import optax

from darts_jax.hypergradient import METHODS, hypergradient

PyTree = Any

# The hypergradient's methods, and SNAS' single level: no hypergradient, one gradient of the
# training loss for weights and alphas alike (`bilevel_step`).
STEP_METHODS = (*METHODS, "single_level")


class BilevelOptimizers(NamedTuple):
  """The three optimisers of a bilevel search, and which state the virtual step reads.

  Attributes:
    weight: the real weight step.
    inner: the virtual step the hypergradient differentiates through (DARTS: the weight step
      without its gradient clipping).
    alpha: the architecture step.
    inner_state: maps the weight optimiser's state to `inner`'s state, so the virtual step
      starts from the real optimiser's momentum buffers.
  """

  weight: optax.GradientTransformation
  inner: optax.GradientTransformation
  alpha: optax.GradientTransformation
  inner_state: Callable[[PyTree], PyTree]


def clipped(inner: optax.GradientTransformation, grad_clip: float, alpha):
  """`BilevelOptimizers` whose weight step is `chain(clip_by_global_norm(grad_clip), inner)`
  and whose virtual step is `inner`, as in DARTS' CNN search (its architect's virtual step
  does not clip)."""
  # chain's state is a tuple of its members' states: (clip's, inner's).
  return BilevelOptimizers(optax.chain(optax.clip_by_global_norm(grad_clip), inner), inner,
                           alpha, operator.itemgetter(1))


def same_step(weight: optax.GradientTransformation, alpha):
  """`BilevelOptimizers` whose virtual step is the real weight step, clipping included (the
  recurrent search's exact hypergradient)."""
  return BilevelOptimizers(weight, weight, alpha, _identity)


def _identity(x):
  return x


def cosine_per_epoch(lr_max, lr_min, epochs, steps_per_epoch):
  """DARTS' schedule: lr_min + (lr_max - lr_min)(1 + cos(pi e / epochs)) / 2 for epoch e
  (the official CosineAnnealingLR, stepped once per epoch)."""

  def schedule(count):
    epoch = count // steps_per_epoch
    return lr_min + 0.5 * (lr_max - lr_min) * (1 + jnp.cos(math.pi * epoch / epochs))

  return schedule


def darts_optimizers(*, lr=0.025, lr_min=0.001, epochs=50, steps_per_epoch=391, momentum=0.9,
                     weight_decay=3e-4, grad_clip=5.0, alpha_lr=3e-4, alpha_weight_decay=1e-3,
                     nesterov=False, alpha_optimizer="adam", alpha_grad_clip=0.0,
                     alpha_b1=0.5) -> BilevelOptimizers:
  """DARTS' CNN search optimisers, with the defaults of its release (docs/reference.md,
  "Search optimisation").

  Args:
    lr, lr_min, epochs, steps_per_epoch: the weights' cosine schedule, per epoch.
    momentum, weight_decay, nesterov: SGD on the weights, L2 decay added to the gradient.
    grad_clip: the weight gradients' global-norm clip (not applied in the virtual step).
    alpha_lr, alpha_weight_decay: the alphas' learning rate and L2 decay (added to the
      gradient).
    alpha_optimizer: "adam" (DARTS: betas (0.5, 0.999)) or "sgd" (plain, no momentum: the
      single-GPU SNAS release's).
    alpha_b1: Adam's first-moment decay on the alphas (DARTS: 0.5; FairDARTS: 0.9).
    alpha_grad_clip: the alphas' gradients' global-norm clip before the decay (SNAS: 10);
      0: none (DARTS).

  Returns:
    `BilevelOptimizers` (see `clipped`).
  """
  schedule = cosine_per_epoch(lr, lr_min, epochs, steps_per_epoch)
  inner = optax.chain(optax.add_decayed_weights(weight_decay),
                      optax.sgd(schedule, momentum=momentum, nesterov=nesterov))
  if alpha_optimizer not in ("adam", "sgd"):
    raise ValueError(f"alpha_optimizer={alpha_optimizer!r}: expected 'adam' or 'sgd'.")
  alpha = optax.chain(
      *([optax.clip_by_global_norm(alpha_grad_clip)] if alpha_grad_clip else []),
      optax.add_decayed_weights(alpha_weight_decay),
      optax.adam(alpha_lr, b1=alpha_b1, b2=0.999) if alpha_optimizer == "adam" else
      optax.sgd(alpha_lr))
  return clipped(inner, grad_clip, alpha)


class ModelState(NamedTuple):
  """A search's non-differentiated model state.

  Attributes:
    shared: read by every evaluation, updated by the weight step (BN running statistics).
    train: the training stream's carry (a recurrent network's hidden state), updated by the
      weight step.
    val: the validation stream's carry, updated by the outer (validation) evaluation.
  """

  shared: PyTree = ()
  train: PyTree = ()
  val: PyTree = ()


class LossState(NamedTuple):
  """What one loss evaluation reads: the shared model state, its stream's carry, and the
  relaxation's PRNG key (None: a relaxation that draws nothing) and epoch."""

  shared: PyTree = ()
  carry: PyTree = ()
  relax_key: Any = None
  epoch: Any = 0


class SearchState(NamedTuple):
  """Everything a search step reads and returns."""

  weights: PyTree
  alphas: PyTree
  model_state: ModelState
  weight_opt_state: PyTree
  alpha_opt_state: PyTree


def init_search_state(weights, alphas, opts: BilevelOptimizers,
                      model_state: ModelState = ModelState()) -> SearchState:
  """A `SearchState` with fresh optimiser states."""
  return SearchState(weights, alphas, model_state, opts.weight.init(weights),
                     opts.alpha.init(alphas))


def default_config(method: str = "exact"):
  """The `config.hypergradient` block of a search config, with `hypergradient`'s defaults:
  `method` (exact | finite_difference | first_order), `unroll_steps` (virtual weight steps
  differentiated through, 1 in DARTS), `exact_mode` (forward_over_reverse, the fast form, or
  reverse_over_reverse, the reference form) and `fd_epsilon` (finite_difference's r =
  fd_epsilon / ||v||)."""
  import ml_collections  # configs only; the step needs none of it

  return ml_collections.ConfigDict({"method": method, "unroll_steps": 1,
                                    "exact_mode": "forward_over_reverse", "fd_epsilon": 0.01})


def hypergradient_options(block) -> dict:
  """A config's `hypergradient` block (method, unroll_steps, exact_mode, fd_epsilon) as
  `bilevel_step`'s keyword arguments."""
  return {"method": block.method, "unroll_steps": block.unroll_steps,
          "exact_mode": block.exact_mode, "fd_epsilon": block.fd_epsilon}


def bilevel_step(loss_fn, opts: BilevelOptimizers, state: SearchState, train_batch, val_batch,
                 key=None, *, method: str = "exact", unroll_steps: int = 1,
                 exact_mode: str = "forward_over_reverse", fd_epsilon: float = 0.01,
                 weight_loss_fn=None, epoch=0, alpha_penalty=None, update_alphas=True):
  """One search iteration: the alpha step through the hypergradient, then the weight step.

  Pure and jittable; close over `loss_fn` and `opts` (e.g. with `functools.partial`).

  Args:
    loss_fn: `loss_fn(weights, alphas, batch, LossState, key) -> (loss, (LossState,
      metrics))`, the loss of both levels (see the module docstring).
    opts: the weight, virtual and alpha optimisers (`BilevelOptimizers`).
    state: the `SearchState` before the step.
    train_batch: the weights' batch: the virtual step's and the weight step's. With
      `unroll_steps=k > 1` the virtual steps all take this batch.
    val_batch: the alphas' batch, of the same structure.
    key: a PRNG key for this step, split into the virtual step's, the validation loss's and
      the weight step's keys (default: a fixed key, for losses that draw nothing).
    method, unroll_steps, exact_mode, fd_epsilon: the hypergradient's options
      (`darts_jax.hypergradient`); `method="single_level"`: SNAS' joint step (the module
      docstring), which reads neither `val_batch` nor the others.
    weight_loss_fn: the weight step's loss, when it differs from the architecture step's
      (e.g. with an activation penalty); the same signature. Default: `loss_fn`.
    epoch: the epoch of this step (from 0, a traced scalar is fine), passed to the
      relaxation (`LossState.epoch`) and to `alpha_penalty`.
    alpha_penalty: `alpha_penalty(alphas, epoch) -> scalar`, added to the alpha step's
      (validation) objective; None: none (DARTS).
    update_alphas: False (a traced bool is fine): a warm-up step, the weight step alone;
      the alphas, their optimiser state and the validation carry are kept, the alpha step is
      not computed (`lax.cond`) and its metrics read 0. True (default): no condition is
      compiled.

  Returns:
    `(new state, metrics)`. metrics: `train_loss`, `val_loss` (at the virtual weights),
    `train_<m>` and `val_<m>` for each metric `m` of the loss (single level: the `train_`
    ones only), `alpha_penalty` (with a
    penalty), and `weight_grad_norm` and `alpha_grad_norm`, whose finiteness says whether any
    gradient entry is NaN or inf.
  """
  key = jax.random.PRNGKey(0) if key is None else key
  if method == "single_level":
    if weight_loss_fn is not None:
      raise ValueError("method='single_level' takes one gradient for weights and alphas; a "
                       "weight_loss_fn of its own would be a second step.")
    return _single_level_step(loss_fn, opts, state, train_batch, key, epoch, alpha_penalty,
                              update_alphas)
  k_inner, k_outer, k_weight = jax.random.split(key, 3)
  # The relaxation's keys: one for the alpha step's virtual step(s) and validation loss alike,
  # one for the weight step. Folded in, so the dropout keys above are those of before.
  k_relax, k_relax_weight = jax.random.split(jax.random.fold_in(key, 7))
  model = state.model_state

  def stream_loss(weights, alphas, stream):
    loss, (new, metrics) = loss_fn(
        weights, alphas, stream["batch"],
        LossState(model.shared, stream["carry"], k_relax, epoch), stream["key"])
    return loss, (new.carry, metrics, loss)

  inner = {"batch": train_batch, "carry": model.train, "key": k_inner}
  if unroll_steps > 1:  # one slice per virtual step, all from this step's batch and carry
    inner = {**jax.tree.map(lambda x: jnp.broadcast_to(x, (unroll_steps, *jnp.shape(x))),
                            {"batch": train_batch, "carry": model.train}),
             "key": jax.random.split(k_inner, unroll_steps)}
  outer = {"batch": val_batch, "carry": model.val, "key": k_outer}

  def alpha_step(state):
    alpha_grads, (val_carry, val_metrics, val_loss) = hypergradient(
        stream_loss, state.weights, state.alphas, inner, outer, opts.inner,
        opts.inner_state(state.weight_opt_state), method=method, has_aux=True,
        unroll_steps=unroll_steps, exact_mode=exact_mode, fd_epsilon=fd_epsilon)
    metrics = {"val_loss": val_loss, **{f"val_{k}": v for k, v in val_metrics.items()}}
    if alpha_penalty is not None:
      value, penalty_grads = jax.value_and_grad(alpha_penalty)(state.alphas, epoch)
      alpha_grads = jax.tree.map(jnp.add, alpha_grads, penalty_grads)
      metrics["alpha_penalty"] = value
    metrics["alpha_grad_norm"] = optax.tree.norm(alpha_grads)
    updates, alpha_opt_state = opts.alpha.update(alpha_grads, state.alpha_opt_state,
                                                 state.alphas)
    return optax.apply_updates(state.alphas, updates), alpha_opt_state, val_carry, metrics

  alphas, alpha_opt_state, val_carry, alpha_metrics = _maybe(alpha_step, update_alphas,
                                                             state, model.val)

  (train_loss, (new, train_metrics)), grads = jax.value_and_grad(
      weight_loss_fn or loss_fn, has_aux=True)(
          state.weights, alphas, train_batch,
          LossState(model.shared, model.train, k_relax_weight, epoch), k_weight)
  updates, weight_opt_state = opts.weight.update(grads, state.weight_opt_state, state.weights)
  weights = optax.apply_updates(state.weights, updates)
  new_state = SearchState(weights, alphas, ModelState(new.shared, new.carry, val_carry),
                          weight_opt_state, alpha_opt_state)
  metrics = {"train_loss": train_loss, **{f"train_{k}": v for k, v in train_metrics.items()},
             **alpha_metrics, "weight_grad_norm": optax.tree.norm(grads)}
  return new_state, metrics


def _maybe(alpha_step, update_alphas, state, val_carry):
  """`alpha_step(state) -> (alphas, alpha_opt_state, val_carry, metrics)`, or with
  `update_alphas` false the state's own alphas, optimiser state and `val_carry`, and zero
  metrics; python True calls it unconditionally."""
  if update_alphas is True:
    return alpha_step(state)

  def keep(state):
    shapes = jax.eval_shape(alpha_step, state)[3]
    return (state.alphas, state.alpha_opt_state, val_carry,
            jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes))

  return lax.cond(update_alphas, alpha_step, keep, state)


def _single_level_step(loss_fn, opts, state, train_batch, key, epoch, alpha_penalty,
                       update_alphas=True):
  """SNAS' step (`bilevel_step` with method="single_level")."""
  _, _, k_weight = jax.random.split(key, 3)  # the weight step's keys, as in bilevel_step
  _, k_relax = jax.random.split(jax.random.fold_in(key, 7))
  model = state.model_state

  def objective(weights, alphas):
    loss, (new, metrics) = loss_fn(weights, alphas, train_batch,
                                   LossState(model.shared, model.train, k_relax, epoch), k_weight)
    total = loss
    if alpha_penalty is not None:
      metrics = {**metrics, "alpha_penalty": alpha_penalty(alphas, epoch)}
      total = loss + metrics["alpha_penalty"]
    return total, (new, metrics, loss)

  (_, (new, train_metrics, train_loss)), (grads, alpha_grads) = jax.value_and_grad(
      objective, argnums=(0, 1), has_aux=True)(state.weights, state.alphas)
  penalty = {"alpha_penalty": train_metrics.pop("alpha_penalty")} if alpha_penalty else {}

  def alpha_step(state):
    updates, alpha_opt_state = opts.alpha.update(alpha_grads, state.alpha_opt_state,
                                                 state.alphas)
    return optax.apply_updates(state.alphas, updates), alpha_opt_state, model.val, {}

  alphas, alpha_opt_state, _, _ = _maybe(alpha_step, update_alphas, state, model.val)
  updates, weight_opt_state = opts.weight.update(grads, state.weight_opt_state, state.weights)
  weights = optax.apply_updates(state.weights, updates)
  new_state = SearchState(weights, alphas, ModelState(new.shared, new.carry, model.val),
                          weight_opt_state, alpha_opt_state)
  metrics = {"train_loss": train_loss, **{f"train_{k}": v for k, v in train_metrics.items()},
             **penalty, "weight_grad_norm": optax.tree.norm(grads),
             "alpha_grad_norm": optax.tree.norm(alpha_grads)}
  return new_state, metrics
