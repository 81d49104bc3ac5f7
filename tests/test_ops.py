"""The building blocks in darts_jax.spaces.ops against plain lax."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from darts_jax.spaces import ops


def lax_conv(x, kernel, stride, dilation):
  pad = dilation * (kernel.shape[0] - 1) // 2
  return lax.conv_general_dilated(x, kernel, (stride, stride), [(pad, pad)] * 2,
                                  rhs_dilation=(dilation, dilation),
                                  dimension_numbers=("NHWC", "HWIO", "NHWC"))


# Odd sizes make a stride-2 window skip the last row: the gradient must still cover it.
@pytest.mark.parametrize("size,k,stride,dilation", [(8, 3, 1, 1), (7, 5, 1, 2), (8, 3, 2, 1),
                                                    (7, 3, 2, 1), (7, 5, 2, 2), (8, 1, 2, 1)])
def test_conv_gradients_match_lax_to_second_order(size, k, stride, dilation):
  """The canonical-layout VJP of `_conv_canonical_vjp` is the derivative of the convolution,
  also under forward-over-reverse and reverse-over-reverse (the exact hypergradient's)."""
  with jax.enable_x64(True):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, size, size, 3)))
    kernel = jnp.asarray(rng.normal(size=(k, k, 3, 4)))
    out_shape = lax_conv(x, kernel, stride, dilation).shape
    probe = jnp.asarray(rng.normal(size=out_shape))

    def loss(conv):
      return lambda x, kernel: jnp.sum(jnp.tanh(conv(x, kernel, stride, dilation)) * probe)

    fast, slow = loss(ops._conv_canonical_vjp), loss(lax_conv)
    np.testing.assert_allclose(fast(x, kernel), slow(x, kernel), rtol=1e-12)
    for got, want in zip(jax.grad(fast, (0, 1))(x, kernel), jax.grad(slow, (0, 1))(x, kernel)):
      np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    # Second order: d/dx of <d loss/d kernel, v>, forward over reverse and reverse over reverse.
    v = jnp.asarray(rng.normal(size=kernel.shape))
    mixed = lambda f: lambda x: jnp.vdot(jax.grad(f, 1)(x, kernel), v)
    want = jax.grad(mixed(slow))(x)
    np.testing.assert_allclose(jax.grad(mixed(fast))(x), want, rtol=1e-10, atol=1e-12)
    dx = jnp.asarray(rng.normal(size=x.shape))
    _, got = jax.jvp(lambda x: jax.grad(fast, 1)(x, kernel), (x,), (dx,))
    _, want = jax.jvp(lambda x: jax.grad(slow, 1)(x, kernel), (x,), (dx,))
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_conv2d_uses_the_canonical_vjp_on_cpu():
  """No convolution in the compiled gradient of a scanned conv has permuted dimension labels
  (those run ~20x slower inside loops on XLA's CPU backend)."""
  if jax.default_backend() != "cpu":
    pytest.skip("the canonical VJP is the CPU path")
  x = jnp.ones((2, 8, 8, 4))
  kernels = jnp.ones((3, 3, 3, 4, 4))
  f = lambda x, k: jnp.sum(lax.scan(lambda h, k: (ops.conv2d(h, k, 1, 2), None), x, k)[0])
  text = jax.jit(jax.grad(f, (0, 1))).lower(x, kernels).compile().as_text()
  convs = [line for line in text.splitlines() if "convolution(" in line]
  assert len(convs) >= 3  # forward, input gradient, kernel gradient
  assert all("dim_labels=b01f_01io->b01f" in line for line in convs), convs
