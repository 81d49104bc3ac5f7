"""Relaxations: the map from alphas to the mixing weights of a supernet's mixed ops.

A relaxation is a function `relax(logits, key) -> mix` on one alpha array, `(edges, ops)`,
returning the weights each edge gives its ops, of the same shape. The supernets receive it
as data (`SearchNetwork(relax=...)`, `SearchNetwork201`, `RNNModel`) and call it once per
alpha array inside the jitted loss, with a key of their own for each (None when the loss
passes none), so a relaxation may sample (a Gumbel-softmax, a Dirichlet draw).

DARTS' continuous relaxation (Liu et al., 2019, eq. 2) is the softmax over each edge's ops.
A config names its relaxation (`config.relaxation`); adding one is a function here and its
entry in `RELAXATIONS`.
"""

from __future__ import annotations

from typing import Callable

import jax


def softmax(logits, key=None):
  """DARTS: `mix[e, k] = exp(alpha[e, k]) / sum_j exp(alpha[e, j])`; draws nothing."""
  del key
  return jax.nn.softmax(logits, axis=-1)


RELAXATIONS: dict[str, Callable] = {"softmax": softmax}


def get(name: str) -> Callable:
  """The relaxation registered as `name`.

  Raises:
    ValueError: an unknown name (the message lists the known ones).
  """
  if name not in RELAXATIONS:
    raise ValueError(f"Unknown relaxation {name!r}; expected one of {', '.join(RELAXATIONS)}.")
  return RELAXATIONS[name]


def relax_all(relax: Callable, alphas: dict, key=None) -> dict:
  """`relax` applied to each alpha array of `alphas` ({name: (edges, ops)}), each with its
  own key folded from `key` (None stays None)."""
  keys = (None,) * len(alphas) if key is None else jax.random.split(key, len(alphas))
  return {name: relax(alphas[name], k) for name, k in zip(sorted(alphas), keys)}
