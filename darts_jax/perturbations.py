"""Perturbations of the mixing weights that the weight step sees: SDARTS (Chen & Hsieh,
"Stabilizing Differentiable Architecture Search via Perturbation-based Regularization", ICML
2020).

SDARTS trains the supernet's weights at perturbed mixing weights `softmax(alpha) + delta`,
mapped back towards the simplex, so that the weights suit a neighbourhood of the current
architecture; the alpha step is DARTS' own, unperturbed. SDARTS-RS draws delta ~ U[-eps, eps]
per entry: a relaxation for the weight step (`random_smoothing`), given to the weight step's
supernet (`cnn_search` builds it for `--config.weight_perturbation=random`). SDARTS-ADV
takes the worst delta in that box for the training loss (`adversarial`, a 7-step attack;
`--config.weight_perturbation=adversarial`). epsilon ramps
linearly per epoch, `0.03 + (eps_max - 0.03) * epoch / epochs` (xiangning-chen/SmoothDARTS,
`--epsilon_alpha 0.3`; it never quite reaches eps_max).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def epsilon(epoch, *, eps_max: float, epochs: int, eps_min: float = 0.03):
  """SDARTS' ramp: `eps_min + (eps_max - eps_min) * epoch / epochs`, epoch from 0."""
  return eps_min + (eps_max - eps_min) * jnp.asarray(epoch, jnp.float32) / epochs


def simplex_clip(mix):
  """The release's map back to the simplex (SmoothDARTS, `clip()`), per row: clamp to [0, 1];
  where a whole row clamped to 0, its largest entry before clamping becomes 1; then divide by
  the row's sum. Not the Euclidean projection: that is what the release does."""
  clamped = jnp.clip(mix, 0.0, 1.0)
  dead = jnp.all(clamped == 0, axis=-1, keepdims=True)
  top = jax.nn.one_hot(jnp.argmax(mix, axis=-1), mix.shape[-1], dtype=mix.dtype)
  clamped = jnp.where(dead, top, clamped)
  return clamped / jnp.sum(clamped, axis=-1, keepdims=True)


def random_smoothing(logits, key=None, epoch=0, *, eps_max: float = 0.3, epochs: int = 50):
  """SDARTS-RS's weight-step relaxation: `simplex_clip(softmax(alpha) + U[-eps, eps])`, one
  draw per entry (the release perturbs the softmax in place and mixes with it, no second
  softmax). key=None: the softmax, unperturbed."""
  mix = jax.nn.softmax(logits, axis=-1)
  if key is None:
    return mix
  eps = epsilon(epoch, eps_max=eps_max, epochs=epochs).astype(mix.dtype)
  delta = jax.random.uniform(key, mix.shape, mix.dtype, -1.0, 1.0) * eps
  return simplex_clip(mix + delta)


def adversarial(loss_of_mix, clean, key, eps, steps: int = 7):
  """SDARTS-ADV's attack: the mixing weights within eps (L-inf) of `clean` that raise
  `loss_of_mix` most, by `steps` steps of signed gradient ascent of size 2 eps / steps from a
  random start (xiangning-chen/SmoothDARTS, attacker/perturb.py: U[-eps, eps], then
  `simplex_clip`; each step clamps the change around `clean` to [-eps, eps] and clips again),
  keeping `clean` when the attack did not raise the loss (the release's rule).

  Args:
    loss_of_mix: mixing weights {name: (edges, ops)} -> scalar (the release: the training
      batch's loss with BN on its running statistics).
    clean: the unperturbed mixing weights, softmax(alpha), same structure.
    key: PRNG key of the random start.
    eps: the L-inf radius (a scalar, traced is fine).
    steps: ascent steps (7).
  Returns:
    The perturbed mixing weights, same structure, no gradient to alphas (stopped).
  """
  clean = jax.lax.stop_gradient(clean)
  names = sorted(clean)
  keys = dict(zip(names, jax.random.split(key, len(names))))
  back = lambda mix: {k: simplex_clip(clean[k] + jnp.clip(mix[k] - clean[k], -eps, eps))
                      for k in names}
  start = {k: simplex_clip(clean[k] + eps * jax.random.uniform(
      keys[k], clean[k].shape, clean[k].dtype, -1.0, 1.0)) for k in names}
  size = 2 * eps / steps

  def ascend(_, mix):
    grads = jax.grad(loss_of_mix)(mix)
    return back({k: mix[k] + size * jnp.sign(grads[k]) for k in names})

  mix = jax.lax.fori_loop(0, steps, ascend, start)
  keep = loss_of_mix(clean) > loss_of_mix(mix)
  return jax.lax.stop_gradient(
      {k: jnp.where(keep, clean[k], mix[k]) for k in names})
