"""Regularisers of the alphas: terms the alpha step adds to its validation objective.

A regulariser is `penalty(alphas, epoch) -> scalar` over the whole alpha pytree
({name: (edges, ops)}), the epoch counted from 0 (for a weight that ramps).
`bilevel.bilevel_step(..., alpha_penalty=penalty)` adds its gradient to the hypergradient:
the penalty depends on the alphas alone, so that is its exact contribution under every
hypergradient method. A config names one (`config.regulariser.name`, with its
`config.regulariser.scale`); adding one is a function here and its entry in `REGULARISERS`.

  * beta_decay: beta-DARTS (Ye et al., CVPR 2022).
  * zero_one: FairDARTS (Chu et al., ECCV 2020).
  * dirichlet_kl: DrNAS' KL option (Chen et al., ICLR 2021).
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
from jax.scipy.special import digamma, gammaln

from darts_jax.relaxations import op_alphas


def _rows(alphas):
  """Every op alpha array's rows stacked, (all edges, ops), in sorted-name order (PC-DARTS'
  edge parameters left out, `relaxations.op_alphas`)."""
  alphas = op_alphas(alphas)
  return jnp.concatenate([alphas[k] for k in sorted(alphas)], axis=0)


def beta_decay(alphas, epoch, *, scale: float = 50.0, ramp_epochs: int = 100):
  """beta-DARTS' beta-decay: `lambda(epoch) * mean_edges logsumexp_k alpha[e, k]`, with
  `lambda = scale * epoch / ramp_epochs` (Sunshine-Ye/Beta-DARTS, nasbench201/ and
  optimizers/darts/architect.py: `0 + 50 * epoch / 100`, the 100 fixed whatever the number of
  epochs, so over its 100-epoch NAS-Bench-201 search lambda goes 0 .. 49.5). The mean runs
  over the edges of every alpha array together (both DARTS cells: 28 rows; equal to the mean
  of the two cells' means, as both have 14)."""
  lam = scale * jnp.asarray(epoch, jnp.float32) / ramp_epochs
  return lam * jnp.mean(jax.nn.logsumexp(_rows(alphas), axis=-1))


def zero_one(alphas, epoch=0, *, scale: float = 10.0):
  """FairDARTS' zero-one loss: `-scale * mean((sigmoid(alpha) - 0.5) ** 2)` over every entry
  of every alpha array (xiaomi-automl/FairDARTS, fairdarts/separate_loss.py: `-w0 *
  mse_loss(sigmoid(alpha), 0.5)`, w0 = 10 from the first epoch). It pushes each sigmoid away
  from 0.5, towards 0 or 1; its gradient is 0 where every sigmoid is 0.5 (alphas of 0)."""
  del epoch
  return -scale * jnp.mean((jax.nn.sigmoid(_rows(alphas)) - 0.5) ** 2)


def _dirichlet_kl(a, b):
  """KL(Dirichlet(a) || Dirichlet(b)) over the last axis, in closed form."""
  a0, b0 = jnp.sum(a, -1), jnp.sum(b, -1)
  return (gammaln(a0) - jnp.sum(gammaln(a), -1) - gammaln(b0) + jnp.sum(gammaln(b), -1)
          + jnp.sum((a - b) * (digamma(a) - digamma(a0)[..., None]), -1))


def dirichlet_kl(alphas, epoch=0, *, scale: float = 1e-3):
  """DrNAS' KL option: `scale * sum_edges KL(Dirichlet(elu(alpha) + 1) || Dirichlet(1))`,
  summed (not averaged) over the edges (xiangning-chen/DrNAS, search_model.py, `--reg_type
  kl`). The release's default, `--reg_type l2`, is no penalty here but the alphas' L2 decay
  (`config.alpha_weight_decay`, Adam's coupled weight decay 1e-3)."""
  del epoch
  concentration = jax.nn.elu(_rows(alphas)) + 1.0
  return scale * jnp.sum(_dirichlet_kl(concentration, jnp.ones_like(concentration)))


REGULARISERS: dict[str, Callable | None] = {"none": None, "beta_decay": beta_decay,
                                            "zero_one": zero_one, "dirichlet_kl": dirichlet_kl}


def build(block) -> Callable | None:
  """The regulariser a config's `regulariser` block names (`name`, `scale`, and beta_decay's
  `ramp_epochs`), its options bound; None for "none"."""
  penalty = REGULARISERS[block.name]
  if penalty is None:
    return None
  options = {"scale": block.scale}
  if block.name == "beta_decay":
    options["ramp_epochs"] = block.get("ramp_epochs", 100)
  return functools.partial(penalty, **options)
