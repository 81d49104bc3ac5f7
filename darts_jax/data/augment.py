"""Image augmentation on the device, inside the jitted step, so the host only gathers bytes."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def normalise(images, mean, std, dtype=jnp.float32):
  """uint8 NHWC -> (x / 255 - mean) / std per channel."""
  mean = jnp.asarray(mean, dtype)
  std = jnp.asarray(std, dtype)
  return (images.astype(dtype) / 255 - mean) / std


def random_crop_flip(key, images, pad: int = 4):
  """Per image: zero-pad by `pad`, crop back to the original size at a random offset, and
  flip left-right with probability 1/2: torchvision's RandomCrop(32, padding=4) and
  RandomHorizontalFlip as DARTS uses them. Apply it to the raw images (before `normalise`),
  so the padding is black, as in torchvision."""
  n, h, w, _ = images.shape
  k_y, k_x, k_flip = jax.random.split(key, 3)
  padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  ys = jax.random.randint(k_y, (n,), 0, 2 * pad + 1)
  xs = jax.random.randint(k_x, (n,), 0, 2 * pad + 1)
  crop = lambda img, y, x: jax.lax.dynamic_slice(img, (y, x, 0), (h, w, img.shape[-1]))
  out = jax.vmap(crop)(padded, ys, xs)
  flip = jax.random.bernoulli(k_flip, 0.5, (n,))
  return jnp.where(flip[:, None, None, None], out[:, :, ::-1], out)


def cutout(key, images, length: int = 16):
  """Per image, zeroes a `length` x `length` square centred at a uniformly random pixel,
  clipped at the borders, in every channel: DeVries & Taylor's cutout as DARTS applies it,
  after normalisation (so the square holds zeros, the dataset's mean colour)."""
  n, h, w, _ = images.shape
  k_y, k_x = jax.random.split(key)
  ys = jax.random.randint(k_y, (n, 1, 1), 0, h)
  xs = jax.random.randint(k_x, (n, 1, 1), 0, w)
  rows = jnp.arange(h)[None, :, None]
  cols = jnp.arange(w)[None, None, :]
  inside = ((rows >= ys - length // 2) & (rows < ys + length // 2)
            & (cols >= xs - length // 2) & (cols < xs + length // 2))
  return jnp.where(inside[..., None], jnp.zeros((), images.dtype), images)
