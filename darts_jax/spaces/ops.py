"""Functional building blocks of the DARTS CNN ops (NHWC), chosen for XLA.

The separable and dilated convolutions are a depthwise k x k convolution followed by a 1x1
convolution. XLA's CPU backend runs grouped (depthwise) convolutions an order of magnitude
slower than dense ones, and compiles them slowly, so on CPU the two are composed into one
dense k x k kernel (`K[a, b, c, d] = dw[a, b, c] * pw[c, d]`, exact: nothing nonlinear lies
between them). On GPU/TPU the depthwise convolution is native and cheaper in flops, so it is
kept. Both forms are tested against each other and against a per-edge reference.

Mixed precision. The ops compute in the dtype of their input activations: a weight is cast
to it where it is used, so parameters stay float32 and their gradients come back float32
while a network fed bfloat16 activations convolves in bfloat16. Batch norm and the long sums
of the backward passes written here run in at least float32 (`at_least_float32`).
"""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from darts_jax.errors import ConfigError

_DIMENSIONS = ("NHWC", "HWIO", "NHWC")
DEPTHWISE_IMPLS = ("dense", "grouped", "shifted")
COMPUTE_DTYPES = ("float32", "bfloat16")


def compute_dtype(name) -> np.dtype | None:
  """The dtype named by a `dtype` setting (`config.model.dtype`); None stays None.

  Raises:
    ConfigError: not one of COMPUTE_DTYPES (float16 is left out: it needs loss scaling).
  """
  if name is None:
    return None
  try:
    dtype = jnp.dtype(name)
  except TypeError:
    dtype = None
  if dtype is None or dtype.name not in COMPUTE_DTYPES:
    raise ConfigError(f"--config.model.dtype={name!r} is not one of {', '.join(COMPUTE_DTYPES)}.")
  return dtype


def at_least_float32(x):
  """x in float32 if it is narrower (float64 stays): for reductions and logits."""
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def default_depthwise_impl() -> str:
  """Shifted windows on CPU, native depthwise elsewhere (benchmarks/README.md, side by side).

  On CPU the shifted-window sums beat both XLA's grouped convolution and the depthwise + 1x1
  pair composed into one dense kernel (k x k x C x C, 5-10x the mult-adds): the supernet's
  first-order step at batch 16 took 4.4 s against 7.3 s dense on an AVX-512 Xeon, and 1.4x
  less than dense on an AVX2 EPYC.
  """
  return "shifted" if jax.default_backend() == "cpu" else "grouped"


def torch_uniform(fan_in: int):
  """PyTorch's default conv/linear init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

  The DARTS paper is silent on initialisation; this is what the official release gets from
  PyTorch's defaults (kaiming_uniform with a = sqrt(5)).
  """
  bound = 1.0 / math.sqrt(fan_in)
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound,
                                                                  bound)


def conv2d(x, kernel, stride=1, dilation=1, groups=1):
  """Convolution with PyTorch's symmetric padding dilation * (k - 1) // 2.

  On CPU a dense convolution differentiates through `_conv_canonical_vjp`. The kernel is
  cast to x's dtype (the compute dtype).
  """
  kernel = kernel.astype(x.dtype)
  if groups == 1 and jax.default_backend() == "cpu":
    return _conv_canonical_vjp(x, kernel, stride, dilation)
  return _conv(x, kernel, stride, dilation, groups=groups)


def _conv(x, kernel, stride, dilation, padding=None, lhs_dilation=(1, 1), groups=1):
  if padding is None:
    pad = dilation * (kernel.shape[0] - 1) // 2
    padding = [(pad, pad), (pad, pad)]
  return lax.conv_general_dilated(x, kernel, (stride, stride), padding,
                                  lhs_dilation=lhs_dilation, rhs_dilation=(dilation, dilation),
                                  dimension_numbers=_DIMENSIONS, feature_group_count=groups)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_canonical_vjp(x, kernel, stride, dilation):
  """`_conv` whose gradients are themselves NHWC/HWIO convolutions.

  JAX's transpose rules express the input and kernel gradients as convolutions with permuted
  dimension labels. Outside loops XLA's CPU backend rewrites those into its fast (Eigen)
  layout; inside a `while` body (a `lax.scan` over edges) it does not, and runs them through
  a naive loop nest about 20x slower (measured: 315 ms vs 17 ms for the gradient of 6
  chained 3x3 convolutions in a scan). Here the permutations are explicit transposes, so
  every convolution is already in the fast layout. Values are identical.
  """
  return _conv(x, kernel, stride, dilation)


def _conv_canonical_fwd(x, kernel, stride, dilation):
  return _conv(x, kernel, stride, dilation), (x, kernel)


def _input_gradient_padding(spatial, k, stride, dilation):
  """Padding of the (stride-dilated) output gradient whose full correlation with the flipped
  kernel is the input gradient; rows the forward stride skipped at the end get zeros."""
  pad = dilation * (k - 1) // 2
  extent = dilation * (k - 1)
  return [(extent - pad, extent - pad + (n + 2 * pad - extent - 1) % stride) for n in spatial]


def _conv_canonical_bwd(stride, dilation, residuals, g):
  x, kernel = residuals
  k = kernel.shape[0]
  pad = dilation * (k - 1) // 2
  flipped = jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2)
  dx = _conv(g, flipped, 1, dilation, _input_gradient_padding(x.shape[1:3], k, stride, dilation),
             lhs_dilation=(stride, stride))
  # The kernel gradient correlates x with g over the batch: channels act as the batch and
  # the batch as the features; the forward stride becomes a dilation of g and vice versa.
  dk = lax.conv_general_dilated(x.transpose(3, 1, 2, 0), g.transpose(1, 2, 0, 3),
                                (dilation, dilation), [(pad, pad), (pad, pad)],
                                rhs_dilation=(stride, stride), dimension_numbers=_DIMENSIONS)
  return dx, dk[:, :k, :k].transpose(1, 2, 0, 3)


_conv_canonical_vjp.defvjp(_conv_canonical_fwd, _conv_canonical_bwd)


def separable(x, dw, pw, stride, dilation, impl):
  """Depthwise k x k (stride, dilation) then 1x1: dw (k, k, C), pw (C, D)."""
  if impl == "dense":
    return conv2d(x, jnp.einsum("abc,cd->abcd", dw, pw), stride, dilation)
  return pointwise(depthwise(x, dw, stride, dilation, impl), pw)


def pointwise(x, kernel):
  """1x1 convolution, kernel (C, D), as one 2-D matrix product: XLA's CPU backend runs the
  gradient of a (N*H*W, C) @ (C, D) product about 3x faster than that of the NHWC form."""
  product = x.reshape(-1, x.shape[-1]) @ kernel.astype(x.dtype)
  return product.reshape(*x.shape[:-1], kernel.shape[-1])


def depthwise(x, kernel, stride=1, dilation=1, impl="grouped"):
  """Depthwise k x k convolution, kernel (k, k, C), PyTorch's symmetric padding.

  "grouped" is XLA's grouped convolution (native on GPU/TPU). "shifted" writes it as the sum
  of k * k shifted windows of the padded input times a per-channel weight: elementwise work
  that XLA fuses into one loop. On CPU, where grouped convolutions run a slow generic loop,
  that is 2-5x faster forward and backward at the DARTS evaluation sizes (measured, batch
  96: 32x32x36 and 16x16x72), and for wide layers faster than composing a dense kernel,
  which does C times the multiplications.
  """
  if impl == "grouped":
    return conv2d(x, kernel[:, :, None, :], stride, dilation, groups=x.shape[-1])
  if impl != "shifted":
    raise ValueError(f"Unknown depthwise impl {impl!r}; expected 'grouped' or 'shifted'.")
  return _depthwise_shifted(x, kernel, stride, dilation)


def _windows(padded, k, dilation, stride, out_hw):
  """The k * k shifted (strided, dilated) windows of a padded NHWC array, (a, b, window)."""
  n, _, _, c = padded.shape
  out_h, out_w = out_hw
  for a in range(k):
    for b in range(k):
      start = (0, a * dilation, b * dilation, 0)
      end = (n, start[1] + (out_h - 1) * stride + 1, start[2] + (out_w - 1) * stride + 1, c)
      yield a, b, lax.slice(padded, start, end, (1, stride, stride, 1))


def _depthwise_forward(x, kernel, stride, dilation):
  kernel = kernel.astype(x.dtype)
  k = kernel.shape[0]
  pad = dilation * (k - 1) // 2
  out_hw = [(size + 2 * pad - dilation * (k - 1) - 1) // stride + 1 for size in x.shape[1:3]]
  padded = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  out = 0
  for a, b, window in _windows(padded, k, dilation, stride, out_hw):
    out = out + window * kernel[a, b]
  return out


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _depthwise_shifted(x, kernel, stride, dilation):
  """Shifted-window depthwise convolution that keeps only x for its backward pass (plain
  autodiff would keep all k * k windows: k * k times the activation memory). The kernel is
  cast to x's dtype inside, so its gradient comes back in its own dtype, unrounded."""
  return _depthwise_forward(x, kernel, stride, dilation)


def _depthwise_shifted_fwd(x, kernel, stride, dilation):
  return _depthwise_forward(x, kernel, stride, dilation), (x, kernel)


def _depthwise_shifted_bwd(stride, dilation, residuals, g):
  x, kernel = residuals
  k = kernel.shape[0]
  pad = dilation * (k - 1) // 2
  # dx: the stride-dilated gradient correlated with the flipped kernel (as for a dense conv).
  (top, bottom), (left, right) = _input_gradient_padding(x.shape[1:3], k, stride, dilation)
  g_padded = lax.pad(g, jnp.zeros((), g.dtype), [(0, 0, 0), (top, bottom, stride - 1),
                                                  (left, right, stride - 1), (0, 0, 0)])
  flipped = jnp.flip(kernel, (0, 1)).astype(g.dtype)
  dx = 0
  for a, b, window in _windows(g_padded, k, dilation, 1, x.shape[1:3]):
    dx = dx + window * flipped[a, b]
  padded = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  # One variadic reduction for all k * k kernel taps: XLA emits a single loop that reads x
  # and g once (k * k separate sums read them k * k times: 5x slower at 32x32x36). It sums
  # N * H * W products, too many for a bfloat16 accumulator.
  products = tuple(at_least_float32(window) * at_least_float32(g) for _, _, window in
                   _windows(padded, k, dilation, stride, g.shape[1:3]))
  zero = np.zeros((), products[0].dtype)
  dk = lax.reduce(products, (zero,) * len(products),
                  lambda a, b: tuple(u + v for u, v in zip(a, b)), (0, 1, 2))
  return dx, jnp.stack(dk).reshape(kernel.shape).astype(kernel.dtype)


_depthwise_shifted.defvjp(_depthwise_shifted_fwd, _depthwise_shifted_bwd)


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
  """ReLU, then two 1x1 stride-2 convs (C, D/2) on x and on x shifted by one pixel, concat."""
  x = jax.nn.relu(x)
  return jnp.concatenate([pointwise(x[:, ::2, ::2], conv1), pointwise(x[:, 1::2, 1::2], conv2)],
                         axis=-1)


def batch_norm(x, mean, var, *, train, feature_ndim=1, momentum=0.1, epsilon=1e-5):
  """Batch norm over every axis of x but the trailing `feature_ndim`, PyTorch's conventions.

  Returns `(y, (new_mean, new_var))`: in training mode the batch statistics normalise and
  the running ones move by `momentum` (0.1, flax's 0.9) with the unbiased variance; in
  evaluation mode the running statistics normalise and are returned unchanged. Statistics
  and normalisation are computed in at least float32, y is returned in x's dtype.
  """
  axes = tuple(range(x.ndim - feature_ndim))
  wide = at_least_float32(x)
  if not train:
    y = (wide - mean.astype(wide.dtype)) * lax.rsqrt(var.astype(wide.dtype) + epsilon)
    return y.astype(x.dtype), (mean, var)
  batch_mean = jnp.mean(wide, axes)
  batch_var = jnp.mean(jnp.square(wide - batch_mean), axes)
  y = ((wide - batch_mean) * lax.rsqrt(batch_var + epsilon)).astype(x.dtype)
  count = math.prod(x.shape[a] for a in axes)
  new_mean = (1 - momentum) * mean + momentum * lax.stop_gradient(batch_mean)
  new_var = (1 - momentum) * var + momentum * lax.stop_gradient(batch_var) * count / (count - 1)
  return y, (new_mean.astype(mean.dtype), new_var.astype(var.dtype))


class BatchNorm(nn.Module):
  """`batch_norm` with its running statistics in the "batch_stats" collection."""

  feature_ndim: int = 1
  affine: bool = False

  @nn.compact
  def __call__(self, x, train: bool):
    features = x.shape[x.ndim - self.feature_ndim:]
    ra_mean = self.variable("batch_stats", "mean", jnp.zeros, features, jnp.float32)
    ra_var = self.variable("batch_stats", "var", jnp.ones, features, jnp.float32)
    y, (mean, var) = batch_norm(x, ra_mean.value, ra_var.value, train=train,
                                feature_ndim=self.feature_ndim)
    if train and self.is_mutable_collection("batch_stats") and not self.is_initializing():
      ra_mean.value, ra_var.value = mean, var
    if self.affine:
      scale = self.param("scale", nn.initializers.ones, features, jnp.float32)
      bias = self.param("bias", nn.initializers.zeros, features, jnp.float32)
      y = y * scale.astype(y.dtype) + bias.astype(y.dtype)
    return y


class ReLUConvBN(nn.Module):
  """ReLU -> k x k conv (no bias) -> affine BN: DARTS' evaluation-network block, and
  NAS-Bench-201's (its residual blocks)."""

  features: int
  kernel_size: int = 1
  stride: int = 1

  @nn.compact
  def __call__(self, x, train: bool):
    k, c = self.kernel_size, x.shape[-1]
    kernel = self.param("kernel", torch_uniform(k * k * c), (k, k, c, self.features))
    y = jax.nn.relu(x)
    y = (pointwise(y, kernel[0, 0]) if k == 1 and self.stride == 1
         else conv2d(y, kernel, self.stride))
    return BatchNorm(affine=True, name="bn")(y, train)
