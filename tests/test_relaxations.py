"""The relaxation and the op list are inputs of the supernets, not part of their bodies."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from darts_jax import relaxations
from darts_jax.spaces import nas_bench_201
from darts_jax.spaces.darts_cnn import supernet
from darts_jax.spaces.darts_cnn.genotypes import PRIMITIVES

IMAGES = jax.random.normal(jax.random.PRNGKey(7), (4, 8, 8, 3))


def logits(model, weights, stats, alphas, relax_key=None):
  out, _ = jax.jit(lambda w, s, a: model.apply({"params": w, "batch_stats": s}, IMAGES, a,
                                               train=True, relax_key=relax_key,
                                               mutable=["batch_stats"]))(weights, stats, alphas)
  return np.asarray(out)


@pytest.fixture(scope="module")
def darts():
  model = supernet.SearchNetwork(channels=2, layers=3, num_classes=3)
  weights, stats = supernet.init_supernet(model, seed=0, image_shape=(8, 8, 3))
  alphas = jax.tree.map(lambda a: 300 * a, supernet.init_alphas(jax.random.PRNGKey(1)))
  return model, weights, stats, alphas, logits(model, weights, stats, alphas)


def test_the_op_order_comes_from_the_op_list(darts):
  """Reordering the ops and the alpha columns alike gives the same network: outputs, mixing
  weights and BN slots follow the list (in training mode the running statistics do not
  enter the output)."""
  model, weights, stats, alphas, want = darts
  order = [5, 0, 3, 7, 1, 6, 2, 4]
  shuffled = model.clone(primitives=tuple(PRIMITIVES[k] for k in order))
  s_weights, s_stats = supernet.init_supernet(shuffled, seed=0, image_shape=(8, 8, 3))
  assert jax.tree.structure(s_weights) == jax.tree.structure(weights)  # the same weights
  got = logits(shuffled, weights, s_stats, {k: a[:, order] for k, a in alphas.items()})
  np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)
  # A reordering of the columns alone (the op list left as it is) is another network.
  assert not np.allclose(logits(model, weights, stats,
                                {k: a[:, order] for k, a in alphas.items()}), want, atol=1e-3)


def test_the_relaxation_is_an_input(darts):
  """A relaxation putting all the weight on one op gives the supernet of that op alone."""
  model, weights, stats, alphas, want = darts
  only_skip = lambda logits, key, epoch: jax.nn.one_hot(
      jnp.full(logits.shape[:1], PRIMITIVES.index("skip_connect")), logits.shape[-1])
  got = logits(model.clone(relax=only_skip), weights, stats, alphas)
  assert not np.allclose(got, want, atol=1e-3)
  skip = model.clone(primitives=("skip_connect",))
  skip_weights, skip_stats = supernet.init_supernet(skip, seed=0, image_shape=(8, 8, 3))
  # The single-op supernet has no conv or pool weights, only the shared and skip ones.
  assert not any("sep_conv" in jax.tree_util.keystr(p)
                 for p, _ in jax.tree.leaves_with_path(skip_weights))
  subset = jax.tree.map(lambda _, w: w, skip_weights,
                        _prune(weights, skip_weights))
  one_col = {k: a[:, :1] for k, a in alphas.items()}  # softmax of one column: 1
  np.testing.assert_allclose(logits(skip, subset, skip_stats, one_col), got, rtol=2e-5,
                             atol=2e-6)


def _prune(full, like):
  """`full` restricted to the keys of `like`."""
  if isinstance(like, dict):
    return {k: _prune(full[k], v) for k, v in like.items()}
  return full


def test_a_sampling_relaxation_gets_a_key_per_alpha(darts):
  model, weights, stats, alphas, want = darts
  seen = []

  def noisy(logits, key, epoch):
    seen.append(key)
    return jax.nn.softmax(logits + jax.random.gumbel(key, logits.shape), axis=-1)

  a = logits(model.clone(relax=noisy), weights, stats, alphas, jax.random.PRNGKey(0))
  b = logits(model.clone(relax=noisy), weights, stats, alphas, jax.random.PRNGKey(1))
  assert len(seen) == 4 and not np.allclose(a, b)  # two alpha arrays, traced twice
  np.testing.assert_allclose(
      logits(model.clone(relax=relaxations.softmax), weights, stats, alphas), want)


def test_nas_bench_201_takes_the_relaxation():
  model = nas_bench_201.SearchNetwork201(channels=2, cells_per_stage=1, num_classes=3)
  weights, stats = nas_bench_201.init_supernet(model, 0, (8, 8, 3))
  alphas = nas_bench_201.init_alphas(jax.random.PRNGKey(0))
  skip = nas_bench_201.OPS.index("skip_connect")
  only = lambda k: (lambda logits, key, epoch: jax.nn.one_hot(jnp.full(logits.shape[:1], k),
                                                       logits.shape[-1]))
  a = logits(model.clone(relax=only(skip)), weights, stats, alphas)
  b = logits(model.clone(relax=only(nas_bench_201.OPS.index("nor_conv_3x3"))), weights, stats,
             alphas)
  assert not np.allclose(a, b, atol=1e-3)
  np.testing.assert_allclose(logits(model, weights, stats, alphas),
                             logits(model.clone(relax=relaxations.softmax), weights, stats,
                                    alphas))


def test_unknown_names_are_refused():
  with pytest.raises(ValueError, match="Unknown relaxation 'nope'; expected one of softmax"):
    relaxations.get("nope")
  with pytest.raises(ValueError, match="must be distinct ops"):
    supernet.op_slots(("skip_connect", "conv_9x9"))
