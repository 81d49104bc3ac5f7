"""Mixed precision: bfloat16 compute, float32 parameters, statistics and hypergradient."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from darts_jax import bilevel
from darts_jax.errors import ConfigError
from darts_jax.hypergradient import hypergradient
from darts_jax.spaces import ops
from darts_jax.spaces.darts_cnn import network, supernet
from darts_jax.spaces.darts_cnn.genotypes import DARTS_V2
from darts_jax.train import cnn_search

# XLA's compile of the exact hypergradient dominates this file (~12 s per dtype on 2 CPU
# cores); LLVM's -O0 takes a third off it and moves the figures below by under 0.01.
COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}


def conv_dtypes(jaxpr):
  """The operand dtypes of every convolution in a (closed) jaxpr and its sub-jaxprs."""
  found = []
  for eqn in getattr(jaxpr, "jaxpr", jaxpr).eqns:
    if eqn.primitive.name == "conv_general_dilated":
      found.append(tuple(str(v.aval.dtype) for v in eqn.invars))
    for param in eqn.params.values():
      for sub in param if isinstance(param, (tuple, list)) else (param,):
        if hasattr(getattr(sub, "jaxpr", sub), "eqns"):
          found += conv_dtypes(sub)
  return found


def relative_error(want, got):
  flat = lambda tree: np.concatenate([np.asarray(x, np.float64).ravel()
                                      for x in jax.tree.leaves(tree)])
  want, got = flat(want), flat(got)
  cosine = want @ got / (np.linalg.norm(want) * np.linalg.norm(got))
  return cosine, np.linalg.norm(got - want) / np.linalg.norm(want)


@pytest.fixture(scope="module")
def search_setup():
  """The test_search supernet (C=2, 3 cells: normal, reduction, reduction), 8x8 images,
  batch 8, DARTS' optimisers and initial alphas, a non-zero momentum buffer. Depthwise as
  XLA's grouped convolution, as on the accelerators where bfloat16 pays (CPU's default, the
  shifted windows, is checked on its own below)."""
  model = supernet.SearchNetwork(channels=2, layers=3, num_classes=10, remat="none",
                                 impl="grouped")
  weights, stats = supernet.init_supernet(model, seed=0, image_shape=(8, 8, 3))
  alphas = supernet.init_alphas(jax.random.PRNGKey(0))
  opts = bilevel.darts_optimizers(epochs=2, steps_per_epoch=1)
  state = bilevel.init_search_state(weights, alphas, opts, bilevel.ModelState(stats))
  rng = np.random.default_rng(0)
  # Drawn with numpy: an eager jax.random call per buffer shape compiles each one.
  momentum = lambda x: (0.01 * rng.normal(size=x.shape).astype(np.float32)
                        if jnp.issubdtype(x.dtype, jnp.floating) else x)
  state = state._replace(weight_opt_state=jax.tree.map(momentum, state.weight_opt_state))
  batch = lambda: {"images": rng.normal(size=(8, 8, 8, 3)).astype(np.float32),
                   "labels": rng.integers(0, 10, 8).astype(np.int32)}
  return model, opts, state, batch(), batch()


@pytest.fixture(scope="module")
def hypergradients(search_setup):
  """Exact hypergradients of the float32 and bfloat16 supernets at the same point, and of the
  float32 one with the images rounded to bfloat16; the jaxprs of both programs."""
  model, opts, state, train, val = search_setup

  def traced(dtype):
    loss_fn = cnn_search.make_loss_fn(model.clone(dtype=dtype))
    fn = lambda state, train, val: hypergradient(
        lambda w, a, b: loss_fn(w, a, b, bilevel.LossState(state.model_state.shared), None),
        state.weights, state.alphas, train, val, opts.inner,
        opts.inner_state(state.weight_opt_state), method="exact", has_aux=True)
    return jax.jit(fn).trace(state, train, val)

  traces = {dtype: traced(dtype) for dtype in ("float32", "bfloat16")}
  compiled = {dtype: t.lower().compile(compiler_options=COMPILER_OPTIONS)
              for dtype, t in traces.items()}
  out = {dtype: fn(state, train, val) for dtype, fn in compiled.items()}
  rounded = lambda batch: {**batch, "images": np.asarray(
      jnp.asarray(batch["images"], jnp.bfloat16).astype(jnp.float32))}
  out["float32, bfloat16 images"] = compiled["float32"](state, rounded(train), rounded(val))
  return out, {dtype: t.jaxpr for dtype, t in traces.items()}


def test_bfloat16_hypergradient_is_float32_and_bounded(hypergradients):
  out, _ = hypergradients
  (grads, (_, metrics)), (want, _) = out["bfloat16"], out["float32"]
  accuracy = metrics["accuracy"]
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(grads))
  assert accuracy.dtype == jnp.float32
  cosine, error = relative_error(want, grads)
  # Measured: cosine 0.984, relative L2 error 0.18 (grouped depthwise; 0.982 and 0.19 with
  # dense kernels, and over 4 seeds x alphas at 1 and 100 times DARTS' init: cosine
  # 0.955-0.988, error 0.16-0.30). This 2-channel supernet is
  # ill-conditioned (BN over 8 samples of 4x4 and 2x2 maps): rounding only the images to
  # bfloat16, all else in float32, moves its hypergradient by 0.12, the yardstick below.
  assert cosine > 0.9 and error < 0.45, (cosine, error)
  _, yardstick = relative_error(want, out["float32, bfloat16 images"][0])
  assert error < 3 * yardstick, (error, yardstick)
  # It did compute in bfloat16: far more than float32's rounding away.
  assert error > 1e-3


def test_bfloat16_supernet_convolves_in_bfloat16(hypergradients):
  _, jaxprs = hypergradients
  for dtype in ("float32", "bfloat16"):
    convs = conv_dtypes(jaxprs[dtype])
    # Forward, backward and the forward-mode pass over the backward: all in the compute dtype.
    assert len(convs) > 50 and set(convs) == {(dtype, dtype)}, (dtype, set(convs))


def test_bfloat16_search_step_keeps_float32_state(search_setup):
  model, opts, state, train, val = search_setup
  step = cnn_search.make_search_step(model.clone(dtype="bfloat16"), opts)
  new, metrics = jax.eval_shape(step, state, train, val, jax.random.PRNGKey(0))
  assert jax.tree.structure(new) == jax.tree.structure(state)
  for before, after in zip(jax.tree.leaves(state), jax.tree.leaves(new)):
    assert after.dtype == before.dtype and after.shape == before.shape
  assert {x.dtype for x in jax.tree.leaves(state) if jnp.issubdtype(x.dtype, jnp.floating)} == {
      jnp.dtype(jnp.float32)}
  assert all(m.dtype == jnp.float32 for m in jax.tree.leaves(metrics))


def test_bfloat16_evaluation_network_matches_float32():
  """NetworkCIFAR in training mode with drop path: the same dropped samples, logits within
  bfloat16's reach of float32's, float32 outputs and running statistics."""
  model = network.NetworkCIFAR(DARTS_V2, channels=4, layers=3, auxiliary=False)
  variables = network.init_network(model, 0, (8, 8, 3))
  images = jax.random.normal(jax.random.PRNGKey(1), (8, 8, 8, 3))
  outs = {}
  for dtype in ("float32", "bfloat16"):
    m = model.clone(dtype=dtype)
    apply = lambda v: m.apply(v, images, train=True, drop_path_rate=0.3,
                              rngs={"drop_path": jax.random.PRNGKey(2)},
                              mutable=["batch_stats"])
    outs[dtype] = jax.jit(apply)(variables)
    convs = conv_dtypes(jax.make_jaxpr(apply)(variables))
    assert convs and set(convs) == {(dtype, dtype)}, (dtype, set(convs))
  ((want, _), want_stats), ((got, _), got_stats) = outs["float32"], outs["bfloat16"]
  assert got.dtype == jnp.float32
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(got_stats))
  _, error = relative_error(want, got)
  _, stats_error = relative_error(want_stats, got_stats)
  # Measured: 0.008 and 0.0005. Before the drop-path draw was made in float32, bfloat16
  # dropped other samples: 0.64.
  assert 1e-4 < error < 0.05 and stats_error < 0.02, (error, stats_error)


def test_bfloat16_shifted_depthwise_kernel_gradient_sums_in_float32():
  """The kernel gradient sums N * H * W = 2048 products: exact in float32 from bfloat16
  inputs, and not rounded back to bfloat16 (a bfloat16 sum: off by 8% of the largest entry)."""
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
  x = jax.random.normal(k1, (8, 16, 16, 4), jnp.bfloat16)
  g = jax.random.normal(k2, (8, 16, 16, 4), jnp.bfloat16)
  kernel = jax.random.normal(k3, (3, 3, 4))
  grad = lambda x, g: jax.vjp(lambda k: ops.depthwise(x, k, 1, 1, "shifted"), kernel)[1](g)[0]
  got = grad(x, g)
  want = grad(x.astype(jnp.float32), g.astype(jnp.float32))
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("name", ["float16", "float64", "bf16", "int8"])
def test_unknown_compute_dtype_is_a_config_error(name):
  with pytest.raises(ConfigError, match=r"--config.model.dtype=.* is not one of float32, "
                                        r"bfloat16\."):
    ops.compute_dtype(name)
  assert ops.compute_dtype("bfloat16") == jnp.bfloat16
  assert ops.compute_dtype(jnp.float32) == jnp.float32 and ops.compute_dtype(None) is None
