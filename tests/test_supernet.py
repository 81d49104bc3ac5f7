"""The fast supernet against the per-edge reference: outputs, BN statistics and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import reference_supernet
from darts_jax.spaces.darts_cnn import supernet


def test_paper_supernet_has_exactly_1930618_weights():
  model = supernet.SearchNetwork()  # C=16, 8 cells, 10 classes
  alphas = supernet.init_alphas(jax.random.PRNGKey(0))
  assert alphas["normal"].shape == alphas["reduce"].shape == (14, 8)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)),
                                             alphas))
  assert sum(np.prod(x.shape) for x in jax.tree.leaves(shapes["params"])) == 1_930_618


def test_init_supernet_follows_pytorch_defaults():
  model = supernet.SearchNetwork(channels=4, layers=3)
  weights, stats = supernet.init_supernet(model, seed=0, image_shape=(8, 8, 3))
  dw = weights["cell_0"]["sep_conv_5x5_dw1"]
  assert dw.shape == (14, 5, 5, 4) and 0.15 < float(jnp.abs(dw).max()) <= 1 / 5
  pw = weights["cell_0"]["sep_conv_5x5_pw1"]
  assert 0.3 < float(jnp.abs(pw).max()) <= 1 / 2  # fan-in 4 per edge, not 16
  assert float(jnp.abs(weights["stem_conv"]).max()) <= 1 / np.sqrt(27)
  np.testing.assert_array_equal(weights["stem_bn"]["scale"], 1.0)
  assert all(float(jnp.abs(x).max()) in (0.0, 1.0) for x in jax.tree.leaves(stats))
  again, _ = supernet.init_supernet(model, seed=0, image_shape=(8, 8, 3))
  assert all(bool(jnp.all(a == b)) for a, b in zip(jax.tree.leaves(weights),
                                                   jax.tree.leaves(again)))


@pytest.fixture(scope="module")
def tiny():
  """3 cells (normal, reduction, reduction after reduction), C=4, 8x8 images, float64."""
  with jax.enable_x64(True):
    model_args = dict(channels=4, layers=3)
    weights, stats = supernet.init_supernet(supernet.SearchNetwork(**model_args), seed=0,
                                            image_shape=(8, 8, 3))
    to64 = lambda t: jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), t)
    key = jax.random.PRNGKey(1)
    # Non-trivial running statistics and alphas far from uniform.
    stats = jax.tree.map(lambda x: x + 0.1 * jnp.abs(jax.random.normal(key, x.shape)), stats)
    alphas = jax.tree.map(lambda x: 1e3 * x, supernet.init_alphas(key))
    images = jax.random.normal(jax.random.PRNGKey(2), (3, 8, 8, 3), jnp.float64)
    labels = jnp.array([1, 7, 3])
    yield model_args, to64(weights), to64(stats), to64(alphas), images, labels


def value_and_grads(loss, weights, stats, alphas, images):
  return jax.jit(jax.value_and_grad(loss, argnums=(0, 2), has_aux=True))(weights, stats,
                                                                        alphas, images)


@pytest.fixture(scope="module")
def reference_result(tiny):
  """Loss, logits, new stats and gradients of the per-edge reference (compiled once)."""
  model_args, weights, stats, alphas, images, labels = tiny

  def loss(weights, stats, alphas, images):
    logits, new = reference_supernet.network(weights, stats, images, alphas,
                                             model_args["layers"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), (logits, new)

  # Op by op, not jitted: XLA takes ~75 s to compile the per-edge network whole, while
  # running it eagerly (each op compiled once per shape) takes ~25 s.
  with jax.enable_x64(True):
    return jax.value_and_grad(loss, argnums=(0, 2), has_aux=True)(weights, stats, alphas,
                                                                  images)


@pytest.mark.parametrize("impl,edge_loop,remat", [("shifted", "scan", "edge"),
                                                  ("grouped", "unroll", "conv"),
                                                  ("dense", "scan", "none")])
def test_fast_supernet_matches_per_edge_reference(tiny, reference_result, impl, edge_loop,
                                                  remat):
  model_args, weights, stats, alphas, images, labels = tiny
  model = supernet.SearchNetwork(**model_args, impl=impl, edge_loop=edge_loop, remat=remat)

  def loss(weights, stats, alphas, images):
    logits, new = model.apply({"params": weights, "batch_stats": stats}, images, alphas,
                              train=True, mutable=["batch_stats"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), (
        logits, new["batch_stats"])

  with jax.enable_x64(True):
    (_, (logits, new_stats)), grads = value_and_grads(loss, weights, stats, alphas, images)
  (_, (ref_logits, ref_stats)), ref_grads = reference_result

  np.testing.assert_allclose(logits, ref_logits, rtol=1e-9, atol=1e-12)
  assert jax.tree.structure(new_stats) == jax.tree.structure(stats)
  for a, b in zip(jax.tree.leaves(new_stats), jax.tree.leaves(ref_stats)):
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
  # The statistics moved: the comparison above is not of two untouched copies.
  assert any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(new_stats),
                                                   jax.tree.leaves(stats)))
  for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
    np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-10)
  assert float(jnp.abs(grads[1]["normal"]).max()) > 1e-6  # alpha gradients are not trivial
  assert float(jnp.abs(grads[1]["reduce"]).max()) > 1e-6


def test_eval_mode_uses_running_statistics(tiny):
  model_args, weights, stats, alphas, images, _ = tiny
  with jax.enable_x64(True):
    model = supernet.SearchNetwork(**model_args)
    apply = jax.jit(lambda s, x: model.apply({"params": weights, "batch_stats": s}, x, alphas,
                                             train=False))
    logits = apply(stats, images)
    # In eval mode one image's logits do not depend on the rest of the batch...
    np.testing.assert_allclose(apply(stats, images[:1])[0], logits[0], rtol=1e-9)
    # ...but they do depend on the running statistics.
    moved = jax.tree.map(lambda x: x * 1.5, stats)
    assert not np.allclose(apply(moved, images), logits)
