"""Iterate averaging as an optax transformation: the "averaged SGD" of the recurrent trainers.

DARTS (after AWD-LSTM) trains its language models with SGD and, once the validation loss
stops improving, switches to `torch.optim.ASGD(t0=0, lambd=0)`: the same SGD steps, plus the
running mean of the weights since the switch, which is what gets evaluated and saved. Here
that is one transformation chained last after the SGD ones, so the optimiser state keeps its
structure when averaging starts:

    opt = optax.chain(optax.clip_by_global_norm(0.25), optax.add_decayed_weights(8e-7),
                      optax.sgd(20.0), polyak_average())
    state = start_averaging(state)       # the switch (host side, between steps)
    averaged = averaged_params(state)    # the weights to evaluate
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


class PolyakAverageState(NamedTuple):
  active: jax.Array  # bool: averaging has started
  count: jax.Array  # int32: iterates averaged so far
  average: Any  # the running mean of the iterates, shaped like the params


def polyak_average() -> optax.GradientTransformation:
  """Leaves the updates alone; while active, averages the iterates `params + updates` with
  equal weights (torch ASGD with t0=0, lambd=0: after n steps, the mean of those n)."""

  def init(params):
    # A copy: sharing the params' buffers would break donating both to a jitted step.
    return PolyakAverageState(jnp.asarray(False), jnp.zeros([], jnp.int32),
                              jax.tree.map(lambda x: jnp.array(x, copy=True), params))

  def update(updates, state, params=None):
    if params is None:
      raise ValueError("polyak_average needs the params: call update(updates, state, params).")
    new_params = optax.apply_updates(params, updates)
    count = state.count + state.active.astype(jnp.int32)
    step = 1.0 / jnp.maximum(count, 1)
    average = jax.tree.map(
        lambda a, p: jnp.where(state.active, a + (p - a) * step.astype(a.dtype), a),
        state.average, new_params)
    return updates, PolyakAverageState(state.active, count, average)

  return optax.GradientTransformation(init, update)


def _find(state):
  found = [s for s in jax.tree.leaves(state, is_leaf=lambda s: isinstance(s, PolyakAverageState))
           if isinstance(s, PolyakAverageState)]
  if len(found) != 1:
    raise ValueError(f"Expected one polyak_average state in the optimiser state, found "
                     f"{len(found)}.")
  return found[0]


def start_averaging(opt_state):
  """The switch to averaged SGD: averaging starts with the next step."""
  return jax.tree.map(
      lambda s: s._replace(active=jnp.asarray(True), count=jnp.zeros([], jnp.int32))
      if isinstance(s, PolyakAverageState) else s,
      opt_state, is_leaf=lambda s: isinstance(s, PolyakAverageState))


def is_averaging(opt_state) -> bool:
  return bool(_find(opt_state).active)


def averaged_params(opt_state, params):
  """The averaged weights once averaging has started and taken a step, else `params`."""
  state = _find(opt_state)
  return state.average if bool(state.active) and int(state.count) > 0 else params
