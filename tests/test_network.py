"""The evaluation networks: parameter counts, scanned cells, drop path, the op registry."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from darts_jax.spaces.darts_cnn import network
from darts_jax.spaces import ops
from darts_jax.spaces.darts_cnn.genotypes import DARTS_V1, DARTS_V2, Genotype
from darts_jax.errors import GenotypeError


def shapes(model, image_shape):
  return jax.eval_shape(lambda: network.init_network(model, 0, image_shape))["params"]


@pytest.mark.parametrize("model, image_shape, without_aux, aux", [
    (network.NetworkCIFAR(DARTS_V2), (32, 32, 3), 3_349_342, 476_426),
    (network.NetworkCIFAR(DARTS_V1), (32, 32, 3), 3_169_414, 476_426),
    (network.NetworkImageNet(DARTS_V2), (224, 224, 3), 4_718_752, 1_260_776),
    (network.NetworkCIFAR(DARTS_V2, scan_cells=False), (32, 32, 3), 3_349_342, 476_426),
])
def test_parameter_counts_match_the_official_ones(model, image_shape, without_aux, aux):
  params = shapes(model, image_shape)
  assert network.count_params(params) == without_aux
  assert network.count_params(params, include_auxiliary=True) - without_aux == aux


def test_mult_adds_of_darts_v2_on_cifar():
  # Convolutions and matrix products of one forward pass: the 528M quoted for DARTS_V2 on
  # CIFAR-10 in later papers (DARTS reports only the ImageNet figure).
  count = network.count_mult_adds(network.NetworkCIFAR(DARTS_V2), (32, 32, 3))
  assert round(count / 1e6) == 528


def test_scanned_cells_compute_what_separate_cells_compute():
  """Cells 2-3, 6-7 and 10-11 of a 12-cell network run as scans; the same weights, unstacked
  into separate cells, give the same logits."""
  kwargs = dict(genotype=DARTS_V2, channels=4, layers=12, auxiliary=False)
  scanned = network.NetworkCIFAR(**kwargs)
  separate = network.NetworkCIFAR(**kwargs, scan_cells=False)
  variables = network.init_network(scanned, 0, (16, 16, 3))
  runs = [k for k in variables["params"] if k.startswith("cells_")]
  assert sorted(runs) == ["cells_10_11", "cells_2_3", "cells_6_7"]

  def unstack(tree):
    out = {k: v for k, v in tree.items() if not k.startswith("cells_")}
    for run in runs:
      first, last = map(int, run.split("_")[1:])
      for i in range(first, last + 1):
        out[f"cell_{i}"] = jax.tree.map(lambda a: a[i - first], tree[run]["cell"])
    return out

  # Running statistics that are not 0 and 1, so evaluation mode uses each cell's own.
  key = iter(jax.random.split(jax.random.PRNGKey(1), 10_000))
  variables = {"params": variables["params"], "batch_stats": jax.tree.map(
      lambda a: a + 0.1 * jax.random.uniform(next(key), a.shape), variables["batch_stats"])}
  images = jax.random.normal(jax.random.PRNGKey(2), (2, 16, 16, 3))
  logits, aux = jax.jit(lambda v: scanned.apply(v, images))(variables)
  unstacked = {k: unstack(v) for k, v in variables.items()}
  expected, _ = jax.jit(lambda v: separate.apply(v, images))(unstacked)
  assert aux is None
  np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)


def test_drop_path_keeps_the_expectation_and_drops_whole_samples():
  x = jnp.ones((20_000, 2, 2, 3))
  y = network.drop_path(x, 0.3, jax.random.PRNGKey(0))
  per_sample = np.asarray(y).reshape(len(x), -1)
  kept = per_sample[:, 0] != 0
  assert np.all(per_sample[kept] == pytest.approx(1 / 0.7))  # survivors scaled by 1/keep
  assert np.all(per_sample[~kept] == 0)  # dropped samples are zero everywhere
  assert abs(kept.mean() - 0.7) < 0.02
  assert abs(per_sample.mean() - 1.0) < 0.03  # E[drop_path(x)] = x


def test_drop_path_leaves_identity_edges_untouched():
  # DARTS_V2's normal cell: nodes 0 and 1 are convolutions only; nodes 2 and 3 each have a
  # skip_connect from input 0. With every droppable op dropped, only the identities remain.
  cell = network.Cell(DARTS_V2.normal, DARTS_V2.normal_concat, 4, False, False, "dense")
  s0, s1 = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 8, 8, 6))
  rngs = {"params": jax.random.PRNGKey(1), "drop_path": jax.random.PRNGKey(2)}
  variables = cell.init(rngs, s0, s1, True, 0.5)

  def run(rate):
    out, _ = cell.apply(variables, s0, s1, True, rate, rngs={"drop_path": jax.random.PRNGKey(3)},
                        mutable=["batch_stats"])
    return np.asarray(out).reshape(3, 8, 8, 4, 4)  # (..., node, channel)

  dropped, full = run(1.0), run(0.0)
  s0_pre = network.ReLUConvBN(4).apply({"params": variables["params"]["preprocess0"],
                                        "batch_stats": variables["batch_stats"]["preprocess0"]},
                                       s0, True, mutable=["batch_stats"])[0]
  np.testing.assert_array_equal(dropped[..., 0, :], 0)  # sep convs only: dropped
  np.testing.assert_array_equal(dropped[..., 1, :], 0)
  np.testing.assert_allclose(dropped[..., 2, :], s0_pre, rtol=1e-6)  # skip + dropped sep conv
  np.testing.assert_allclose(dropped[..., 3, :], s0_pre, rtol=1e-6)  # skip + dropped dil conv
  assert np.abs(full[..., 0, :]).min() >= 0 and np.abs(full[..., 0, :]).max() > 0.1


def test_unknown_op_in_a_genotype_is_a_genotype_error():
  bad = Genotype((("sep_conv_7x7", 0),) + DARTS_V2.normal[1:], (2, 3, 4, 5), DARTS_V2.reduce,
                 (2, 3, 4, 5))
  with pytest.raises(GenotypeError, match="Unknown op 'sep_conv_7x7'.*known ops: none"):
    shapes(network.NetworkCIFAR(bad, channels=4, layers=5), (32, 32, 3))


def test_every_registered_op_keeps_or_halves_the_shape():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 4))
  for name, make in network.OPS.items():
    for stride in (1, 2):
      op = make(4, stride, "shifted", name)
      out, _ = op.init_with_output(jax.random.PRNGKey(1), x, True)
      assert out.shape == (2, 8 // stride, 8 // stride, 4), (name, stride)


@pytest.mark.parametrize("k, dilation, stride, size", [(3, 1, 1, 8), (5, 1, 2, 9),
                                                       (3, 2, 2, 8), (5, 2, 1, 7)])
def test_shifted_depthwise_matches_grouped_convolution(k, dilation, stride, size):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, size, size, 3)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(k, k, 3)), jnp.float32)
  f = lambda impl: lambda x, w: jnp.sum(jnp.sin(ops.depthwise(x, w, stride, dilation, impl)))
  np.testing.assert_allclose(ops.depthwise(x, w, stride, dilation, "shifted"),
                             ops.depthwise(x, w, stride, dilation, "grouped"), atol=1e-5)
  for got, want in zip(jax.grad(f("shifted"), (0, 1))(x, w), jax.grad(f("grouped"), (0, 1))(x, w)):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
