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
  with pytest.raises(ValueError, match="which these alphas lack"):
    supernet.SearchNetwork(channels=4, layers=3, edge_normalisation=True).init(
        jax.random.PRNGKey(0), images, alphas)
  with pytest.raises(ValueError, match="partial_channels=3 must divide channels=4"):
    supernet.SearchNetwork(channels=4, layers=3, partial_channels=3).init(
        jax.random.PRNGKey(0), images, alphas)


def test_node_softmax_normalises_each_nodes_inputs():
  betas = jnp.asarray(np.random.default_rng(3).normal(size=14))
  w = np.asarray(supernet.node_softmax(betas))
  start = 0
  for node in range(4):
    rows = slice(start, start + 2 + node)
    e = np.exp(np.asarray(betas[rows]))
    np.testing.assert_allclose(w[rows], e / e.sum(), rtol=1e-6)
    start += 2 + node


def test_edge_normalisation_scales_each_edge_as_its_mix_would():
  """Without partial channels a mixed edge is linear in its mix, so the supernet with edge
  weights w (PC-DARTS) equals the supernet without them given mix * w, in value and in the
  gradient of the edge parameters (float64; the mixes as given, no relaxation)."""
  from darts_jax.train.cnn_search import _given
  with jax.enable_x64(True):
    kw = dict(channels=2, layers=3, impl="dense", relax=_given)
    model = supernet.SearchNetwork(edge_normalisation=True, **kw)
    plain = supernet.SearchNetwork(**kw)
    weights, stats = supernet.init_supernet(model, seed=0, image_shape=(8, 8, 3))
    weights, stats = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), (weights, stats))
    rng = np.random.default_rng(4)
    mix = {k: jnp.asarray(rng.dirichlet(np.ones(8), size=14)) for k in ("normal", "reduce")}
    betas = {k: jnp.asarray(rng.normal(size=14)) for k in ("normal_edges", "reduce_edges")}
    images = jnp.asarray(rng.normal(size=(2, 8, 8, 3)))
    g = jnp.asarray(rng.normal(size=(2, 10)))

    def with_edges(betas):
      logits, _ = model.apply({"params": weights, "batch_stats": stats}, images,
                              {**mix, **betas}, train=True, mutable=["batch_stats"])
      return jnp.sum(g * logits)

    def folded(betas):
      scaled = {k: mix[k] * supernet.node_softmax(betas[k + "_edges"])[:, None] for k in mix}
      logits, _ = plain.apply({"params": weights, "batch_stats": stats}, images, scaled,
                              train=True, mutable=["batch_stats"])
      return jnp.sum(g * logits)

    np.testing.assert_allclose(with_edges(betas), folded(betas), rtol=1e-10)
    got, want = jax.grad(with_edges)(betas), jax.grad(folded)(betas)
    for k in betas:
      assert np.abs(want[k]).max() > 1e-6
      np.testing.assert_allclose(got[k], want[k], rtol=1e-8, atol=1e-12)


def test_genotype_weighs_each_row_by_its_edge():
  """PC-DARTS' rule on hand-built weights (alphas the logs of the softmax wanted): into node 1,
  edges A, B, C with best ops at 0.6, 0.5, 0.4 and edge weights 0.1, 0.3, 0.6 score 0.06,
  0.15, 0.24, so C and B are kept; without the edge weights A and B."""
  from darts_jax.spaces import SPACES, WITHOUT_NONE
  rows = np.full((14, 7), np.log(1 / 7))
  a, b, c = (genotypes_edge(1, j) for j in range(3))
  for row, op, p in ((a, 0, 0.6), (b, 2, 0.5), (c, 4, 0.4)):
    probs = np.full(7, (1 - p) / 6)
    probs[op] = p
    rows[row] = np.log(probs)
  edges = np.zeros(14)
  edges[a:c + 1] = np.log([0.1, 0.3, 0.6])
  derive = SPACES["darts_without_none"].derive
  alphas = {"normal": rows, "reduce": rows}
  got = derive({**alphas, "normal_edges": edges, "reduce_edges": edges}).normal[2:4]
  assert got == ((WITHOUT_NONE[4], 2), (WITHOUT_NONE[2], 1))
  assert derive(alphas).normal[2:4] == ((WITHOUT_NONE[0], 0), (WITHOUT_NONE[2], 1))


def genotypes_edge(node, source):
  from darts_jax.spaces.darts_cnn.genotypes import edge_index
  return edge_index(node, source)


@pytest.mark.slow  # a float64 second-order compile of the supernet
def test_exact_hypergradient_through_a_pc_darts_supernet_matches_central_differences():
  """float64, a PC-DARTS supernet (k = 2, edge weights): the exact hypergradient (read off an
  SGD(1) alpha step) along a direction of the edge parameters alone and one of every alpha
  equals the central differences of G(alpha) = L_val(w - lr grad_w L_train(w, alpha), alpha)
  at two step sizes (they agree to 5e-10)."""
  import optax

  from darts_jax import bilevel
  from darts_jax.train import cnn_search
  with jax.enable_x64(True):
    model = supernet.SearchNetwork(channels=4, layers=3, partial_channels=2,
                                   edge_normalisation=True, impl="dense")
    weights, stats = supernet.init_supernet(model, seed=0, image_shape=(8, 8, 3))
    weights, stats = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), (weights, stats))
    rng = np.random.default_rng(5)
    alphas = jax.tree.map(lambda a: jnp.asarray(rng.normal(size=a.shape) * 0.5),
                          supernet.init_alphas(jax.random.PRNGKey(0), edge_normalisation=True))
    batch = lambda: {"images": jnp.asarray(rng.normal(size=(4, 8, 8, 3))),
                     "labels": jnp.asarray(rng.integers(0, 10, size=4))}
    train, val = batch(), batch()
    lr = 0.1
    loss_fn = cnn_search.make_loss_fn(model)
    opts = bilevel.same_step(optax.sgd(lr), optax.sgd(1.0))
    state = bilevel.init_search_state(weights, alphas, opts, bilevel.ModelState(stats))
    new, _ = bilevel.bilevel_step(loss_fn, opts, state, train, val, method="exact")
    grad = jax.tree.map(lambda a, b: a - b, alphas, new.alphas)
    shared = bilevel.LossState(stats)

    @jax.jit
    def objective(alphas):
      g = jax.grad(lambda w: loss_fn(w, alphas, train, shared, None)[0])(weights)
      virtual = jax.tree.map(lambda w, d: w - lr * d, weights, g)
      return loss_fn(virtual, alphas, val, shared, None)[0]

    everything = jax.tree.map(lambda a: jnp.asarray(rng.normal(size=a.shape)), alphas)
    edges_only = {k: v if k.endswith("_edges") else jnp.zeros_like(v)
                  for k, v in everything.items()}
    for direction in (edges_only, everything):
      want = float(sum(jnp.sum(g * d) for g, d in zip(jax.tree.leaves(grad),
                                                        jax.tree.leaves(direction))))
      assert abs(want) > 1e-6
      # Small steps: larger ones cross the kinks of ReLU and max-pool (at 1e-4 the second
      # direction's differences are 20x off).
      for h in (1e-5, 1e-6):
        shift = lambda s: jax.tree.map(lambda a, d: a + s * h * d, alphas, direction)
        central = (float(objective(shift(1))) - float(objective(shift(-1)))) / (2 * h)
        assert central == pytest.approx(want, rel=1e-7, abs=1e-10), h


@pytest.mark.parametrize("k,normalise", [(2, False), (2, True), (1, True)])
def test_nas_bench_201_cell_with_partial_channels_and_edge_weights(k, normalise):
  """NAS-Bench-201's cell with PC-DARTS' options against a loop over its nodes written here:
  node i = sum over j < i of w_ij * shuffle(concat(mixed_edge(node_j[..., :C/k]),
  node_j[..., C/k:])), w from each node's softmax of the edge parameters (1 without)."""
  from darts_jax.spaces import nas_bench_201 as nb

  c = 8
  rng = np.random.default_rng(k + normalise)
  x = jnp.asarray(rng.normal(size=(4, 5, 5, c)), jnp.float32)
  mix = jax.nn.softmax(jnp.asarray(rng.normal(size=(6, 5)), jnp.float32), -1)
  betas = jnp.asarray(rng.normal(size=(6,)), jnp.float32)
  cell = nb.SearchCell201(train=True, partial_channels=k)
  edge_weights = nb.node_softmax(betas) if normalise else None
  variables = cell.init(jax.random.PRNGKey(0), x, mix, edge_weights)
  params = jax.tree.map(lambda a: a + 0.1 * jax.random.normal(jax.random.PRNGKey(1), a.shape),
                        variables["params"])
  assert params["conv1x1"].shape == (6, c // k, c // k)
  got = cell.apply({"params": params, "batch_stats": variables["batch_stats"]}, x, mix,
                   edge_weights, mutable=["batch_stats"])[0]

  weights = np.ones(6, np.float32)
  if normalise:  # by hand: node 1's one input, node 2's two, node 3's three
    b = np.asarray(betas, np.float64)
    soft = lambda v: np.exp(v) / np.exp(v).sum()
    weights = np.concatenate([soft(b[0:1]), soft(b[1:3]), soft(b[3:6])]).astype(np.float32)
  nodes = [x]
  stats = variables["batch_stats"]
  for i in range(1, nb.NODES):
    total = 0
    for j in range(i):
      e = nb.EDGES.index((i, j))
      y, _ = nb.mixed_edge(nodes[j][..., :c // k], mix[e], params["conv1x1"][e],
                           params["conv3x3"][e], {n: stats[n][e] for n in ("mean", "var")},
                           train=True)
      joined = np.concatenate([np.asarray(y), np.asarray(nodes[j][..., c // k:])], -1)
      shuffled = np.empty_like(joined)
      for g in range(k):
        for m in range(c // k):
          shuffled[..., m * k + g] = joined[..., g * (c // k) + m]
      total = total + weights[e] * shuffled
    nodes.append(jnp.asarray(total))
  np.testing.assert_allclose(got, nodes[-1], rtol=2e-5, atol=2e-6)


def test_nas_bench_201_supernet_takes_pc_darts_options():
  from darts_jax import spaces
  from darts_jax.spaces import nas_bench_201 as nb

  model = nb.SearchNetwork201(channels=8, cells_per_stage=1, partial_channels=4,
                              edge_normalisation=True)
  weights, stats = nb.init_supernet(model, seed=0, image_shape=(8, 8, 3))
  assert weights["stage_0"]["cell"]["conv3x3"].shape == (1, 6, 3, 3, 2, 2)
  assert weights["stage_2"]["cell"]["conv3x3"].shape == (1, 6, 3, 3, 8, 8)
  alphas = spaces.SPACES["nas_bench_201"].init_alphas(jax.random.PRNGKey(0), model)
  assert alphas["cell_edges"].shape == (6,)
  np.testing.assert_array_equal(alphas["cell"], nb.init_alphas(jax.random.PRNGKey(0))["cell"])
  logits = model.apply({"params": weights, "batch_stats": stats}, jnp.ones((2, 8, 8, 3)),
                       alphas, train=False)
  assert logits.shape == (2, 10) and np.all(np.isfinite(logits))
  with pytest.raises(ValueError, match="cell_edges"):
    model.apply({"params": weights, "batch_stats": stats}, jnp.ones((2, 8, 8, 3)),
                {"cell": alphas["cell"]}, train=False)
