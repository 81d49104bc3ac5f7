"""PC-DARTS' partial channels (issue P4f): the channel shuffle and the partial-channel edge
against hand-written references, and the supernet built with them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from darts_jax.spaces.darts_cnn import supernet


def test_channel_shuffle_interleaves_the_groups():
  """The release's view(b, g, C/g, h, w) -> transpose(1, 2) -> view(b, C, h, w), written as
  a loop: output channel i * g + j is input channel j * (C / g) + i."""
  x = np.random.default_rng(0).normal(size=(2, 3, 3, 12)).astype(np.float32)
  for groups in (1, 2, 4):
    want = np.empty_like(x)
    per = 12 // groups
    for j in range(groups):
      for i in range(per):
        want[..., i * groups + j] = x[..., j * per + i]
    np.testing.assert_array_equal(supernet.channel_shuffle(jnp.asarray(x), groups), want)


@pytest.mark.parametrize("stride", [1, 2])
def test_partial_channel_edge_runs_the_ops_on_the_first_channels(stride):
  """The edge sees channels [0, C/k) (a stand-in op: 2x + 1, subsampled at stride 2), the rest
  pass by (2x2 max-pooled at stride 2, by hand), concatenated ops-first, then shuffled."""
  k, c = 4, 8
  x = np.random.default_rng(stride).normal(size=(2, 6, 6, c)).astype(np.float32)
  seen = []

  def edge(part, mix, params, stats, *, stride, **options):
    seen.append(part.shape)
    return 2 * part[:, ::stride, ::stride] + 1, stats

  got, _ = supernet.partial_channel_edge(edge, jnp.asarray(x), None, None, {}, k=k,
                                         stride=stride)
  assert seen == [(2, 6, 6, c // k)]
  ops = 2 * x[:, ::stride, ::stride, :c // k] + 1
  bypass = x[..., c // k:]
  if stride == 2:
    bypass = np.max(bypass.reshape(2, 3, 2, 3, 2, c - c // k), axis=(2, 4))
  joined = np.concatenate([ops, bypass], axis=-1)
  want = np.empty_like(joined)
  for j in range(k):
    for i in range(c // k):
      want[..., i * k + j] = joined[..., j * (c // k) + i]
  np.testing.assert_allclose(got, want, rtol=1e-6)


def test_partial_channel_supernet_has_weights_of_c_over_k_channels():
  """SearchNetwork(partial_channels=2): the mixed ops' weights, BN statistics and stride-2
  skips are built on C/2 channels, the cells' outputs keep C, and the logits are finite."""
  model = supernet.SearchNetwork(channels=4, layers=3, partial_channels=2, impl="dense")
  full = supernet.SearchNetwork(channels=4, layers=3, impl="dense")
  weights, stats = supernet.init_supernet(model, seed=0, image_shape=(8, 8, 3))
  full_weights, _ = supernet.init_supernet(full, seed=0, image_shape=(8, 8, 3))
  cell = weights["cell_1"]  # the first reduction cell: 8 channels, 4 per op
  assert cell["sep_conv_3x3_pw1"].shape == (14, 4, 4)
  assert full_weights["cell_1"]["sep_conv_3x3_pw1"].shape == (14, 8, 8)
  assert cell["skip_conv1"].shape == (8, 4, 2)  # the 8 edges from the cell inputs
  assert stats["cell_1"]["bn1_mean"].shape[-1] == 4
  assert cell["preprocess1"]["kernel"].shape == full_weights["cell_1"]["preprocess1"][
      "kernel"].shape
  alphas = supernet.init_alphas(jax.random.PRNGKey(0))
  images = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 8, 3))
  logits, _ = model.apply({"params": weights, "batch_stats": stats}, images, alphas,
                          train=True, mutable=["batch_stats"])
  assert logits.shape == (2, 10) and bool(jnp.all(jnp.isfinite(logits)))
  with pytest.raises(ValueError, match="partial_channels=3 must divide channels=4"):
    supernet.SearchNetwork(channels=4, layers=3, partial_channels=3).init(
        jax.random.PRNGKey(0), images, alphas)
