"""Functional building blocks of the DARTS CNN ops (NHWC), chosen for XLA.

The separable and dilated convolutions are a depthwise k x k convolution followed by a 1x1
convolution. XLA's CPU backend runs grouped (depthwise) convolutions an order of magnitude
slower than dense ones, and compiles them slowly, so on CPU the two are composed into one
dense k x k kernel (`K[a, b, c, d] = dw[a, b, c] * pw[c, d]`, exact: nothing nonlinear lies
between them). On GPU/TPU the depthwise convolution is native and cheaper in flops, so it is
kept. Both forms are tested against each other and against a per-edge reference.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

_DIMENSIONS = ("NHWC", "HWIO", "NHWC")
DEPTHWISE_IMPLS = ("dense", "grouped")


def default_depthwise_impl() -> str:
  """Composed dense kernels on CPU (fast there); native depthwise elsewhere."""
  return "dense" if jax.default_backend() == "cpu" else "grouped"


def torch_uniform(fan_in: int):
  """PyTorch's default conv/linear init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

  REFERENCE.md is silent on initialisation; this is what the official release gets from
  PyTorch's defaults (kaiming_uniform with a = sqrt(5)).
  """
  bound = 1.0 / math.sqrt(fan_in)
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound,
                                                                  bound)


def conv2d(x, kernel, stride=1, dilation=1, groups=1):
  """Convolution with PyTorch's symmetric padding dilation * (k - 1) // 2."""
  k = kernel.shape[0]
  pad = dilation * (k - 1) // 2
  return lax.conv_general_dilated(x, kernel, (stride, stride), [(pad, pad), (pad, pad)],
                                  rhs_dilation=(dilation, dilation),
                                  dimension_numbers=_DIMENSIONS, feature_group_count=groups)


def separable_replicated(x, dw, pw, stride, dilation, impl):
  """E depthwise(k x k) -> 1x1 units applied to the same input.

  Args:
    x: (N, H, W, C), shared by all E units.
    dw: (E, k, k, C) depthwise kernels.
    pw: (E, C, D) pointwise kernels.
  Returns:
    (N, H', W', E, D).
  """
  e, k, _, c = dw.shape
  d = pw.shape[-1]
  if impl == "dense":
    kernel = jnp.einsum("eabc,ecd->abced", dw, pw).reshape(k, k, c, e * d)
    y = conv2d(x, kernel, stride, dilation)
    return y.reshape(*y.shape[:3], e, d)
  x = jnp.broadcast_to(x[..., None, :], (*x.shape[:3], e, c))
  return separable_separate(x, dw, pw, stride, dilation, impl)


def separable_separate(x, dw, pw, stride, dilation, impl):
  """E depthwise(k x k) -> 1x1 units, unit e applied to x[..., e, :].

  Args:
    x: (N, H, W, E, C).
    dw: (E, k, k, C); pw: (E, C, D).
  Returns:
    (N, H', W', E, D).
  """
  n, h, w, e, c = x.shape
  k = dw.shape[1]
  if impl == "dense":
    kernels = jnp.einsum("eabc,ecd->eabcd", dw, pw)
    # One dense convolution per unit: a grouped convolution (feature_group_count=E), which is
    # what vmap would produce, is slower than the E dense ones on CPU.
    return jnp.stack([conv2d(x[..., i, :], kernels[i], stride, dilation) for i in range(e)],
                     axis=3)
  depthwise = jnp.transpose(dw, (1, 2, 0, 3)).reshape(k, k, 1, e * c)
  y = conv2d(x.reshape(n, h, w, e * c), depthwise, stride, dilation, groups=e * c)
  y = y.reshape(*y.shape[:3], e, c)
  return jnp.einsum("nhwec,ecd->nhwed", y, pw)


def max_pool_3x3(x, stride):
  return lax.reduce_window(x, -jnp.inf, lax.max, (1, 3, 3, 1), (1, stride, stride, 1),
                           [(0, 0), (1, 1), (1, 1), (0, 0)])


def avg_pool_3x3(x, stride):
  """3x3 average pool, padding 1, not counting the padding (count_include_pad=False)."""
  window = ((1, 3, 3, 1), (1, stride, stride, 1), [(0, 0), (1, 1), (1, 1), (0, 0)])
  total = lax.reduce_window(x, 0.0, lax.add, *window)
  ones = np.ones((1, *x.shape[1:3], 1), np.float32)
  count = lax.reduce_window(ones, 0.0, lax.add, *window)  # a constant, folded by XLA
  return total / count.astype(x.dtype)


def factorized_reduce_convs(x, conv1, conv2):
  """ReLU, then two 1x1 stride-2 convs on x and on x shifted by one pixel, concatenated.

  Args:
    x: (N, H, W, C).
    conv1, conv2: (..., C, D/2) kernels; leading axes (e.g. an edge axis E) are kept.
  Returns:
    (N, H/2, W/2, ..., D).
  """
  x = jax.nn.relu(x)
  a = jnp.einsum("nhwc,...cd->nhw...d", x[:, ::2, ::2], conv1)
  b = jnp.einsum("nhwc,...cd->nhw...d", x[:, 1::2, 1::2], conv2)
  return jnp.concatenate([a, b], axis=-1)


class BatchNorm(nn.Module):
  """Batch norm over every axis but the trailing `feature_ndim`, with PyTorch's conventions.

  Momentum 0.1 on the running statistics (flax's 0.9), eps 1e-5, the running variance
  unbiased. The search network uses it without affine parameters.
  """

  feature_ndim: int = 1
  affine: bool = False
  momentum: float = 0.1
  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x, train: bool):
    features = x.shape[x.ndim - self.feature_ndim:]
    axes = tuple(range(x.ndim - self.feature_ndim))
    ra_mean = self.variable("batch_stats", "mean", jnp.zeros, features, jnp.float32)
    ra_var = self.variable("batch_stats", "var", jnp.ones, features, jnp.float32)
    if train:
      mean = jnp.mean(x, axes)
      var = jnp.mean(jnp.square(x - mean), axes)
      if self.is_mutable_collection("batch_stats") and not self.is_initializing():
        count = math.prod(x.shape[a] for a in axes)
        m = self.momentum
        ra_mean.value = (1 - m) * ra_mean.value + m * lax.stop_gradient(mean)
        ra_var.value = (1 - m) * ra_var.value + m * lax.stop_gradient(var) * count / (count - 1)
    else:
      mean, var = ra_mean.value.astype(x.dtype), ra_var.value.astype(x.dtype)
    y = (x - mean) * lax.rsqrt(var + self.epsilon)
    if self.affine:
      y = y * self.param("scale", nn.initializers.ones, features, jnp.float32) + self.param(
          "bias", nn.initializers.zeros, features, jnp.float32)
    return y
