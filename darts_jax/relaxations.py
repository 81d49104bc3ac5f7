"""Relaxations: the map from alphas to the mixing weights of a supernet's mixed ops.

A relaxation is a function `relax(logits, key, epoch) -> mix` on one alpha array,
`(edges, ops)`, returning the weights each edge gives its ops, of the same shape. The
supernets receive it as data (`SearchNetwork(relax=...)`, `SearchNetwork201`, `RNNModel`) and
call it once per alpha array inside the jitted loss, with a key of their own for each and the
step's epoch (from 0), so a relaxation may sample (a Dirichlet draw) and follow a schedule (a
decaying auxiliary skip). With `key=None` (evaluation mode, and losses that pass no key) a
sampling relaxation returns its deterministic counterpart, said in its docstring.

A config names its relaxation (`config.relaxation`); adding one is a function here and its
entry in `RELAXATIONS` (with `build` passing it what it needs of the config and search space).

  * softmax: DARTS (Liu et al., 2019, eq. 2).
  * gumbel_hard: GDAS (Dong & Yang, CVPR 2019): a hard Gumbel-softmax draw, straight-through;
    the supernets built with it (`ONE_OP`) compute only each edge's drawn op.
  * gumbel_soft: SNAS (Xie et al., ICLR 2019): a soft Gumbel-softmax (concrete) draw, every op
    computed, its temperature annealed per epoch.
  * dirichlet: DrNAS (Chen et al., ICLR 2021): a reparameterised Dirichlet(elu(alpha) + 1) draw.
  * sigmoid: FairDARTS (Chu et al., ECCV 2020): each op its own sigmoid(alpha), no competition.
  * darts_minus: DARTS- (Chu et al., ICLR 2021): the softmax plus an auxiliary skip connection
    beta * x on every mixed op, beta decaying linearly from `aux_skip_beta` to 0.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp

from darts_jax.errors import ConfigError


def softmax(logits, key=None, epoch=0):
  """DARTS: `mix[e, k] = exp(alpha[e, k]) / sum_j exp(alpha[e, j])`; draws nothing."""
  del key, epoch
  return jax.nn.softmax(logits, axis=-1)


def gdas_tau(epoch, *, tau_max: float, tau_min: float, epochs: int):
  """GDAS' temperature, linear per epoch from tau_max at the first epoch to tau_min at the last:
  `tau_max - (tau_max - tau_min) * epoch / (epochs - 1)` (D-X-Y/AutoDL-Projects,
  exps/NAS-Bench-201-algos/GDAS.py)."""
  return tau_max - (tau_max - tau_min) * jnp.asarray(epoch, jnp.float32) / max(epochs - 1, 1)


def gumbel_hard(logits, key=None, epoch=0, *, tau_max: float = 10.0, tau_min: float = 0.1,
                epochs: int = 250):
  """GDAS: `probs = softmax((log_softmax(alpha) + g) / tau)`, g ~ Gumbel(0, 1) per entry, and
  the straight-through weights `one_hot(argmax probs) - stop_gradient(probs) + probs`: one-hot
  in value, the gradient of probs (AutoDL-Projects, search_model_gdas.py). The release redraws
  while a Gumbel is infinite; JAX's Gumbel draws are finite (uniforms in (0, 1)), so one draw
  is kept. key=None: no noise, the one-hot argmax of alpha (the derived cell's ops)."""
  tau = gdas_tau(epoch, tau_max=tau_max, tau_min=tau_min, epochs=epochs).astype(logits.dtype)
  scores = jax.nn.log_softmax(logits, axis=-1)
  if key is not None:
    scores = scores + jax.random.gumbel(key, logits.shape, logits.dtype)
  probs = jax.nn.softmax(scores / tau, axis=-1)
  hard = jax.nn.one_hot(jnp.argmax(probs, axis=-1), logits.shape[-1], dtype=probs.dtype)
  return hard - jax.lax.stop_gradient(probs) + probs


def snas_temperature(epoch, *, temp: float, temp_min: float, epochs: int):
  """SNAS' temperature, linear per epoch: `max((1 - (epoch + 1) / epochs) * (temp - temp_min)
  + temp_min, temp_min)`, so 0.9935 at the first of 150 epochs and temp_min at the last
  (SNAS-Series/SNAS-Series, SNAS/utils.py `Temp_Scheduler`, stepped once at the start of each
  epoch after its constructor's step(0); the release fixes the horizon at 150 epochs, here it
  is the config's `epochs`, 150 in configs/nb201_snas.py). temp == temp_min: a constant."""
  fraction = 1.0 - (jnp.asarray(epoch, jnp.float32) + 1.0) / epochs
  return jnp.maximum(fraction * (temp - temp_min) + temp_min, temp_min)


def gumbel_soft(logits, key=None, epoch=0, *, temp: float = 1.0, temp_min: float = 0.03,
                epochs: int = 150):
  """SNAS: `mix = softmax((alpha + g) / t)`, g = -log(-log u) per entry with u ~ U(0, 1), soft
  (no straight-through), every op computed (SNAS-Series, SNAS/model_search.py
  `_get_categ_mask`: the noise is added to the raw alpha, which differs from GDAS'
  log_softmax(alpha) + g by a constant per edge, so not at all after the softmax); t is
  `snas_temperature`. key=None: no noise, softmax(alpha / t)."""
  t = snas_temperature(epoch, temp=temp, temp_min=temp_min, epochs=epochs).astype(logits.dtype)
  scores = logits
  if key is not None:
    scores = scores + jax.random.gumbel(key, logits.shape, logits.dtype)
  return jax.nn.softmax(scores / t, axis=-1)


def dirichlet(logits, key=None, epoch=0):
  """DrNAS: one draw per edge from Dirichlet(elu(alpha) + 1), differentiable in alpha
  through JAX's implicit reparameterisation of the gamma draws (the release's
  `Dirichlet(F.elu(alpha) + 1).rsample()`, xiangning-chen/DrNAS, utils.py). Every loss
  evaluation draws afresh, as the release's every forward pass does (within one alpha step
  the virtual step and the validation loss share the draw, `bilevel.LossState`).
  key=None: the Dirichlet's mean, concentration / sum(concentration)."""
  del epoch
  concentration = jax.nn.elu(logits) + 1.0
  if key is None:
    return concentration / jnp.sum(concentration, axis=-1, keepdims=True)
  return jax.random.dirichlet(key, concentration).astype(logits.dtype)


def sigmoid(logits, key=None, epoch=0):
  """FairDARTS: `mix[e, k] = sigmoid(alpha[e, k])`, each op weighted independently
  (xiaomi-automl/FairDARTS, fairdarts/model_search.py); draws nothing."""
  del key, epoch
  return jax.nn.sigmoid(logits)


def aux_skip_beta(epoch, *, beta0: float, epochs: int):
  """DARTS-'s linear decay, `beta = beta0 * (epochs - epoch) / epochs` for epoch = 0 ..
  epochs - 1 (Meituan-AutoML/DARTS-, src/utils.py, set at the start of each epoch): 1, 0.98,
  ..., 0.02 over 50 epochs; the release never reaches 0 either."""
  return beta0 * (epochs - jnp.asarray(epoch, jnp.float32)) / epochs


def darts_minus(logits, key=None, epoch=0, *, skip_column: int, beta0: float = 1.0,
                epochs: int = 50):
  """DARTS-: the softmax, plus `beta(epoch)` on the skip connection's column: every mixed op
  becomes `sum_k softmax(alpha)_k op_k(x) + beta x` (the auxiliary skip is outside the
  softmax and not learned). At stride 2 the release's auxiliary skip is a FactorizedReduce of
  its own; here it is the edge's skip_connect op (DARTS' FactorizedReduce), whose weights the
  candidate and the auxiliary then share. NAS-Bench-201 has no stride-2 edges, so there the
  two are the same. Draws nothing."""
  del key
  mix = jax.nn.softmax(logits, axis=-1)
  beta = aux_skip_beta(epoch, beta0=beta0, epochs=epochs).astype(mix.dtype)
  return mix.at[..., skip_column].add(beta)


RELAXATIONS: dict[str, Callable] = {"softmax": softmax, "gumbel_hard": gumbel_hard,
                                    "gumbel_soft": gumbel_soft,
                                    "dirichlet": dirichlet, "sigmoid": sigmoid,
                                    "darts_minus": darts_minus}
# Relaxations whose mixing weights are one-hot in value: the supernets compute only the op
# each edge draws (`SearchNetwork201(one_op=True)`).
ONE_OP = ("gumbel_hard",)


def get(name: str) -> Callable:
  """The relaxation registered as `name`, as it is registered (`build` binds its options).

  Raises:
    ValueError: an unknown name (the message lists the known ones).
  """
  if name not in RELAXATIONS:
    raise ValueError(f"Unknown relaxation {name!r}; expected one of {', '.join(RELAXATIONS)}.")
  return RELAXATIONS[name]


def build(config, primitives) -> Callable:
  """`config.relaxation` with what it needs bound: for gumbel_hard `config.tau_max` and
  `.tau_min` (default 10 and 0.1, GDAS') and `config.epochs`; for gumbel_soft the same fields
  as SNAS' initial and final temperature (default 1 and 0.03, SNAS'); for darts_minus the skip
  connection's column in `primitives` (the search space's op list), `config.aux_skip_beta`
  (default 1, the release's) and `config.epochs`.

  Raises:
    ConfigError: darts_minus on a space without a skip connection (the recurrent cell).
  """
  relax = get(config.relaxation)
  if config.relaxation == "gumbel_hard":
    relax = functools.partial(relax, tau_max=config.get("tau_max", 10.0),
                              tau_min=config.get("tau_min", 0.1), epochs=config.epochs)
  if config.relaxation == "gumbel_soft":
    relax = functools.partial(relax, temp=config.get("tau_max", 1.0),
                              temp_min=config.get("tau_min", 0.03), epochs=config.epochs)
  if config.relaxation == "darts_minus":
    if "skip_connect" not in primitives:
      raise ConfigError(f"--config.relaxation=darts_minus adds a decaying skip connection, and "
                        f"this search space has none (its ops: {', '.join(primitives)}): "
                        "choose another relaxation.")
    relax = functools.partial(relax, skip_column=list(primitives).index("skip_connect"),
                              beta0=config.get("aux_skip_beta", 1.0), epochs=config.epochs)
  return relax


def op_alphas(alphas: dict) -> dict:
  """The alpha arrays that weigh ops, `{name: (edges, ops)}`: all of `alphas` but PC-DARTS'
  edge parameters (`name_edges`, (edges,), which no relaxation or op regulariser reads)."""
  return {name: a for name, a in alphas.items() if not name.endswith("_edges")}


def relax_all(relax: Callable, alphas: dict, key=None, epoch=0) -> dict:
  """`relax` applied to each op alpha array of `alphas` (`op_alphas`: {name: (edges, ops)}),
  each with its own key folded from `key` (None stays None) and the same `epoch`."""
  alphas = op_alphas(alphas)
  keys = (None,) * len(alphas) if key is None else jax.random.split(key, len(alphas))
  return {name: relax(alphas[name], k, epoch) for name, k in zip(sorted(alphas), keys)}
