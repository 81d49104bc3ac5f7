"""The differentiable-NAS family's relaxations and regularisers (issue P4e): each defining
formula against a hand-written reference, and the alpha step's hypergradient with a sampled
relaxation and a regulariser against central differences of its objective in float64."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from darts_jax import bilevel, regularisers, relaxations

ALPHAS = {"normal": np.random.default_rng(0).normal(size=(14, 8)),
          "reduce": np.random.default_rng(1).normal(size=(14, 8))}


def test_dirichlet_draws_on_the_simplex_and_its_mean_without_a_key():
  logits = jnp.asarray(ALPHAS["normal"], jnp.float32)
  draw = relaxations.dirichlet(logits, jax.random.PRNGKey(0))
  assert draw.shape == logits.shape and bool(jnp.all(draw >= 0))
  np.testing.assert_allclose(jnp.sum(draw, -1), 1.0, rtol=1e-5)
  conc = np.where(ALPHAS["normal"] > 0, ALPHAS["normal"],
                  np.expm1(np.minimum(ALPHAS["normal"], 0))) + 1.0  # elu + 1, by hand
  np.testing.assert_allclose(relaxations.dirichlet(logits), conc / conc.sum(-1, keepdims=True),
                             rtol=1e-5)
  assert not np.allclose(relaxations.dirichlet(logits, jax.random.PRNGKey(1)), draw)


def test_dirichlet_gradient_is_that_of_the_expectation():
  """The reparameterised draw's gradient, averaged over draws, is the gradient of the
  expectation: E[x . c] = c . a / sum(a), whose gradient in a is (c - E) / sum(a)."""
  a = jnp.array([0.7, 1.5, 2.0, 3.2])
  c = jnp.array([1.0, -2.0, 0.5, 3.0])
  keys = jax.random.split(jax.random.PRNGKey(0), 20000)
  sample_grad = jax.vmap(jax.grad(lambda a, k: jax.random.dirichlet(k, a) @ c),
                         in_axes=(None, 0))(a, keys)
  mean, stderr = sample_grad.mean(0), sample_grad.std(0) / math.sqrt(len(keys))
  want = (c - c @ a / a.sum()) / a.sum()
  assert np.all(np.abs(mean - want) < 4 * stderr + 1e-4), (mean, want, stderr)
  assert np.all(stderr < 0.2 * np.abs(want).max())  # tight enough to mean something


def test_sigmoid_is_elementwise():
  x = ALPHAS["normal"]
  np.testing.assert_allclose(relaxations.sigmoid(jnp.asarray(x, jnp.float32)),
                             1 / (1 + np.exp(-x)), rtol=1e-6)


def test_darts_minus_adds_a_decaying_skip():
  """softmax + beta on the skip column, beta = (50 - epoch) / 50 at the release's settings:
  1 at the first epoch, 0.02 at the last."""
  x = jnp.asarray(ALPHAS["normal"])
  soft = np.exp(ALPHAS["normal"]) / np.exp(ALPHAS["normal"]).sum(-1, keepdims=True)
  for epoch, beta in ((0, 1.0), (10, 0.8), (49, 0.02)):
    got = np.asarray(relaxations.darts_minus(x, None, epoch, skip_column=3, beta0=1.0,
                                             epochs=50))
    want = soft.copy()
    want[:, 3] += beta
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
  # The skip column comes from the op list.
  from darts_jax.spaces.darts_cnn.genotypes import PRIMITIVES
  from ml_collections import ConfigDict
  relax = relaxations.build(ConfigDict({"relaxation": "darts_minus", "epochs": 50}), PRIMITIVES)
  assert relax.keywords["skip_column"] == PRIMITIVES.index("skip_connect")


def test_beta_decay_value():
  """lambda(epoch) = 50 epoch / 100 times the mean over all 28 edges of logsumexp(alpha)."""
  rows = np.concatenate([ALPHAS["normal"], ALPHAS["reduce"]])
  lse = np.log(np.exp(rows).sum(-1))
  for epoch in (0, 7, 99):
    got = regularisers.beta_decay({k: jnp.asarray(v) for k, v in ALPHAS.items()}, epoch)
    np.testing.assert_allclose(got, 50 * epoch / 100 * lse.mean(), rtol=1e-6)


def test_zero_one_value():
  rows = np.concatenate([ALPHAS["normal"], ALPHAS["reduce"]])
  want = -10 * np.mean((1 / (1 + np.exp(-rows)) - 0.5) ** 2)
  np.testing.assert_allclose(regularisers.zero_one({k: jnp.asarray(v) for k, v in
                                                    ALPHAS.items()}), want, rtol=1e-6)
  zeros = {"cell": jnp.zeros((6, 5))}
  assert float(regularisers.zero_one(zeros)) == 0.0
  assert float(jnp.abs(jax.grad(regularisers.zero_one)(zeros)["cell"]).max()) == 0.0


def _kl_by_hand(a, b):
  """KL(Dir(a) || Dir(b)) with math.lgamma and digamma as a central difference of lgamma."""
  psi = lambda x, h=1e-5: (math.lgamma(x + h) - math.lgamma(x - h)) / (2 * h)
  a0, b0 = sum(a), sum(b)
  return (math.lgamma(a0) - sum(map(math.lgamma, a)) - math.lgamma(b0)
          + sum(map(math.lgamma, b)) + sum((x - y) * (psi(x) - psi(a0)) for x, y in zip(a, b)))


def test_dirichlet_kl_value():
  cell = ALPHAS["normal"][:6, :5]
  conc = np.where(cell > 0, cell, np.expm1(np.minimum(cell, 0))) + 1.0
  want = 1e-3 * sum(_kl_by_hand(list(row), [1.0] * 5) for row in conc)
  got = regularisers.dirichlet_kl({"cell": jnp.asarray(cell)})
  np.testing.assert_allclose(got, want, rtol=1e-5)
  assert float(regularisers.dirichlet_kl({"cell": jnp.zeros((6, 5))})) == pytest.approx(0, abs=1e-9)


def test_gdas_temperature_and_draws():
  """tau: 10 at the first epoch, 0.1 at the last (250 epochs); the hard draw is one-hot, its
  argmax distributed as softmax(alpha) (the Gumbel-max trick), its gradient the soft one's."""
  tau = lambda e: float(relaxations.gdas_tau(e, tau_max=10.0, tau_min=0.1, epochs=250))
  assert tau(0) == pytest.approx(10.0) and tau(249) == pytest.approx(0.1, rel=1e-5)
  assert tau(124) == pytest.approx(10 - 9.9 * 124 / 249, rel=1e-6)
  alpha = jnp.array([[0.5, -1.0, 1.2, 0.0, 0.3]])
  keys = jax.random.split(jax.random.PRNGKey(0), 20000)
  draws = jax.vmap(lambda k: relaxations.gumbel_hard(alpha, k, 100))(keys)[:, 0]
  np.testing.assert_array_equal(np.sort(np.asarray(draws), -1)[:, -1], 1.0)
  np.testing.assert_array_equal(np.asarray(draws).sum(-1), 1.0)
  freq = np.asarray(draws).mean(0)
  p = np.exp(alpha[0]) / np.exp(alpha[0]).sum()
  assert np.all(np.abs(freq - p) < 4 * np.sqrt(p * (1 - p) / len(keys))), (freq, p)
  # No key: the argmax of alpha.
  np.testing.assert_array_equal(relaxations.gumbel_hard(alpha), np.eye(5)[[2]])


def test_gdas_edge_computes_one_op_and_passes_gradient_to_all():
  """NAS-Bench-201's GDAS edge: the value of the chosen op alone (as mixed_edge with that
  one-hot mix), only its BN statistics moved, and d/d mix[i] of sum(g * out) = sum(g) for the
  ops not drawn (the release's added weights), sum(g * op_k(x)) for the drawn one."""
  from darts_jax.spaces import nas_bench_201 as nb
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(4, 5, 5, 3)), jnp.float32)
  k1 = jnp.asarray(rng.normal(size=(3, 3)), jnp.float32)
  k3 = jnp.asarray(rng.normal(size=(3, 3, 3, 3)), jnp.float32)
  stats = {"mean": jnp.zeros((2, 3)), "var": jnp.ones((2, 3))}
  g = jnp.asarray(rng.normal(size=(4, 5, 5, 3)), jnp.float32)
  for k, op in enumerate(nb.OPS):
    mix = jnp.eye(5)[k]
    got, new = nb.one_op_edge(x, mix, k1, k3, stats, train=True)
    want, want_stats = nb.mixed_edge(x, mix, k1, k3, stats, train=True)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=op)
    changed = [i for i in range(2) if not np.allclose(new["mean"][i], 0)]
    conv_rows = {"nor_conv_1x1": [0], "nor_conv_3x3": [1]}
    assert changed == conv_rows.get(op, []), op
    for i in changed:
      np.testing.assert_allclose(new["var"][i], want_stats["var"][i], rtol=1e-5)
    grad = jax.grad(lambda m: jnp.sum(g * nb.one_op_edge(x, m, k1, k3, stats, train=True)[0]))(mix)
    want_grad = np.full(5, float(jnp.sum(g)))
    want_grad[k] = float(jnp.sum(g * want))
    np.testing.assert_allclose(grad, want_grad, rtol=1e-4, atol=1e-4, err_msg=op)


@pytest.mark.parametrize("stride", [1, 2])
def test_gdas_darts_space_edge_computes_one_op(stride):
  """The DARTS space's GDAS edge: for each drawn op, the value of mixed_edge with that one-hot
  mix, only that op's BN rows moved (to mixed_edge's values), and d/d mix = sum(g * op_k(x))
  at the drawn op, 0 elsewhere (the release's DARTS-space MixedOp adds no other weights)."""
  from darts_jax.spaces.darts_cnn import supernet as sn
  from darts_jax.spaces.darts_cnn.genotypes import PRIMITIVES
  rng = np.random.default_rng(stride)
  c = 4
  normal = lambda *shape: jnp.asarray(rng.normal(size=shape) / 2, jnp.float32)
  slots = sn.op_slots(PRIMITIVES)
  params = {}
  for op, (k, _, stages) in sn._CONV_OPS.items():
    for stage in range(1, stages + 1):
      params[f"{op}_dw{stage}"], params[f"{op}_pw{stage}"] = normal(k, k, c), normal(c, c)
  stat = lambda n: {"mean": normal(n, c), "var": 1.0 + jnp.abs(normal(n, c))}
  stats = {"bn1": stat(len(slots.first)), "bn2": stat(len(slots.second))}
  if stride == 2:
    params.update(skip_conv1=normal(c, c // 2), skip_conv2=normal(c, c // 2))
    stats["skip_bn"] = {"mean": normal(c), "var": 1.0 + jnp.abs(normal(c))}
  x = normal(4, 6, 6, c)
  g = normal(4, 6 // stride, 6 // stride, c)
  edge = lambda fn, mix: fn(x, mix, params, stats, stride=stride, impl="dense", train=True,
                            slots=slots)
  for k, op in enumerate(PRIMITIVES):
    mix = jnp.eye(len(PRIMITIVES))[k]
    got, new = edge(sn.one_op_edge, mix)
    want, want_stats = edge(sn.mixed_edge, mix)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=op)
    rows = {"bn1": slots.first.index(op) if op in slots.first else None,
            "bn2": slots.second.index(op) if op in slots.second else None}
    for name, row in rows.items():
      for m in ("mean", "var"):
        for i in range(len(stats[name][m])):
          expected = want_stats[name][m][i] if i == row else stats[name][m][i]
          np.testing.assert_allclose(new[name][m][i], expected, rtol=1e-5, atol=1e-6,
                                     err_msg=f"{op} {name} {m} row {i}")
    if stride == 2:
      expected = want_stats["skip_bn"] if op == "skip_connect" else stats["skip_bn"]
      for m in ("mean", "var"):
        np.testing.assert_allclose(new["skip_bn"][m], expected[m], rtol=1e-5, err_msg=op)
    grad = jax.grad(lambda m: jnp.sum(g * edge(sn.one_op_edge, m)[0]))(mix)
    want_grad = np.zeros(len(PRIMITIVES))
    want_grad[k] = float(jnp.sum(g * want))
    np.testing.assert_allclose(grad, want_grad, rtol=1e-4, atol=1e-4, err_msg=op)


def test_sdarts_simplex_clip_and_random_smoothing():
  """The release's clip: clamp to [0, 1], a row clamped to all zeros gets a 1 at its largest
  entry, rows renormalised; RS's weights stay within eps of the softmax before that map."""
  from darts_jax import perturbations
  mix = jnp.array([[0.5, -0.2, 0.9, 0.1], [-0.3, -0.1, -0.5, -0.2], [1.4, 0.2, 0.0, 0.0]])
  want = np.array([[0.5, 0, 0.9, 0.1], [0, 1, 0, 0], [1.0, 0.2, 0, 0]])
  want = want / want.sum(-1, keepdims=True)
  np.testing.assert_allclose(perturbations.simplex_clip(mix), want, rtol=1e-6)
  eps = lambda e: float(perturbations.epsilon(e, eps_max=0.3, epochs=100))
  assert eps(0) == pytest.approx(0.03) and eps(50) == pytest.approx(0.165)
  assert eps(99) == pytest.approx(0.03 + 0.27 * 0.99)
  logits = jnp.asarray(ALPHAS["normal"], jnp.float32)
  soft = jax.nn.softmax(logits)
  np.testing.assert_allclose(perturbations.random_smoothing(logits), soft, rtol=1e-6)
  key = jax.random.PRNGKey(0)
  got = perturbations.random_smoothing(logits, key, 50, eps_max=0.3, epochs=100)
  delta = jax.random.uniform(key, soft.shape, soft.dtype, -1.0, 1.0) * 0.165
  np.testing.assert_allclose(got, perturbations.simplex_clip(soft + delta), rtol=1e-6)
  assert 0 < float(jnp.abs(got - soft).max()) < 0.4


def test_snas_temperature_and_soft_draws():
  """SNAS: t = (1 - (e + 1) / 150) * 0.97 + 0.03 per epoch (0.9935 at the first, 0.03 at the
  last, never below); each draw is softmax((alpha + g) / t), on the simplex and soft; its
  argmax falls on op k with probability softmax(alpha)_k (the Gumbel-max property), whatever
  t; without a key, softmax(alpha / t)."""
  t = lambda e: float(relaxations.snas_temperature(e, temp=1.0, temp_min=0.03, epochs=150))
  assert t(0) == pytest.approx(1 - 0.97 / 150) and t(149) == pytest.approx(0.03)
  assert t(74) == pytest.approx((1 - 75 / 150) * 0.97 + 0.03) and t(400) == pytest.approx(0.03)
  assert float(relaxations.snas_temperature(9, temp=1.0, temp_min=1.0, epochs=150)) == 1.0
  logits = jnp.asarray([[0.5, -1.0, 1.2, 0.0]], jnp.float32)
  snas = functools.partial(relaxations.gumbel_soft, temp=1.0, temp_min=0.03, epochs=150)
  draws = jax.vmap(lambda k: snas(logits, k, 100)[0])(
      jax.random.split(jax.random.PRNGKey(0), 40000))
  np.testing.assert_allclose(jnp.sum(draws, -1), 1.0, rtol=1e-5)
  assert 0.05 < float(jnp.mean(jnp.max(draws, -1))) < 0.999  # soft, not one-hot
  freq = np.bincount(np.asarray(jnp.argmax(draws, -1)), minlength=4) / 40000
  np.testing.assert_allclose(freq, jax.nn.softmax(logits)[0], atol=0.01)
  key = jax.random.PRNGKey(3)
  by_hand = jax.nn.softmax((logits + jax.random.gumbel(key, logits.shape)) / t(100))
  np.testing.assert_allclose(snas(logits, key, 100), by_hand, rtol=1e-6)
  np.testing.assert_allclose(snas(logits, None, 100), jax.nn.softmax(logits / t(100)),
                             rtol=1e-6)


# --- The alpha step with a sampled relaxation and a regulariser -------------------------------

def _toy(relax):
  """A linear 'supernet': 3 candidate maps of the inputs mixed by relax(alpha) (`mixed`, the
  loss of given mixing weights); the loss records the relaxation keys it is given."""
  seen = []

  def mixed(weights, mix, batch):
    pred = jnp.einsum("k,nd,kd->n", mix[0], batch["x"], weights["w"])
    return jnp.mean((jnp.tanh(pred) - batch["y"]) ** 2)

  def loss_fn(weights, alphas, batch, state, key):
    del key
    seen.append(state.relax_key)
    return mixed(weights, relax(alphas["cell"], state.relax_key, state.epoch), batch), (state, {})

  return loss_fn, mixed, seen


def _central(f, x, h):
  """Central differences of a scalar f at the array x."""
  flat = np.asarray(x, np.float64).ravel()
  out = []
  for i in range(flat.size):
    e = np.zeros_like(flat)
    e[i] = h
    out.append((f(jnp.asarray((flat + e).reshape(x.shape)))
                - f(jnp.asarray((flat - e).reshape(x.shape)))) / (2 * h))
  return np.array(out)


GDAS = functools.partial(relaxations.gumbel_hard, tau_max=10.0, tau_min=0.1, epochs=50)


@pytest.mark.parametrize("relax,penalty", [
    (relaxations.dirichlet, regularisers.dirichlet_kl),
    (relaxations.softmax, regularisers.beta_decay),
    (GDAS, regularisers.beta_decay),
])
def test_exact_hypergradient_with_penalty_matches_central_differences(relax, penalty):
  """float64: the alpha step's gradient (read off an SGD(1) alpha step) is the derivative of
  G(m(alpha)) + penalty(alpha, epoch), G(m) = L_val(w - lr grad_w L_train(w, m), m), with the
  relaxation's draw m held fixed: the virtual step and the validation loss get one key, the
  weight step another. The reference: central differences of G in m and of the penalty in
  alpha, and the draw's Jacobian dm/dalpha (JAX's reparameterisation, whose mean the
  expectation test above checks; for the softmax, central differences of the whole
  objective too)."""
  with jax.enable_x64(True):
    rng = np.random.default_rng(3)
    batch = lambda: {"x": jnp.asarray(rng.normal(size=(8, 4))),
                     "y": jnp.asarray(rng.normal(size=8))}
    train, val = batch(), batch()
    weights = {"w": jnp.asarray(rng.normal(size=(3, 4)))}
    alphas = {"cell": jnp.asarray(rng.normal(size=(1, 3)))}
    lr, epoch = 0.1, 30
    opts = bilevel.same_step(optax.sgd(lr), optax.sgd(1.0))
    state = bilevel.init_search_state(weights, alphas, opts)
    loss_fn, mixed, seen = _toy(relax)
    new, metrics = bilevel.bilevel_step(loss_fn, opts, state, train, val,
                                        jax.random.PRNGKey(5), method="exact", epoch=epoch,
                                        alpha_penalty=penalty)
    got = np.asarray(alphas["cell"] - new.alphas["cell"]).ravel()
    keys = [np.asarray(k) for k in seen]
    # Every evaluation of the alpha step saw one key; the weight step (the last) another.
    assert len(keys) >= 3 and all(np.array_equal(k, keys[0]) for k in keys[:-1])
    assert not np.array_equal(keys[-1], keys[0])
    relax_key = seen[0]

    def unrolled(m):
      w1 = jax.tree.map(lambda w, g: w - lr * g, weights,
                        jax.grad(mixed)(weights, m, train))
      return mixed(w1, m, val)

    draw = lambda a: relax(a, relax_key, epoch)
    m0 = draw(alphas["cell"])
    pen = lambda a: penalty({"cell": a}, epoch)
    d_m = [_central(unrolled, m0, h) for h in (1e-4, 1e-5)]
    d_pen = [_central(pen, alphas["cell"], h) for h in (1e-4, 1e-5)]
    assert np.abs(d_m[0] - d_m[1]).max() < 1e-7 and np.abs(d_pen[0] - d_pen[1]).max() < 1e-7
    if relax is GDAS:  # straight-through: the Jacobian of the Gumbel-softmax probabilities
      gumbel = jax.random.gumbel(relax_key, (1, 3), jnp.float64)
      tau = 10.0 - 9.9 * epoch / 49
      probs = lambda a: jax.nn.softmax((jax.nn.log_softmax(a) + gumbel) / tau)
      jacobian = np.stack([_central(lambda a: probs(a).ravel()[i], alphas["cell"], 1e-6)
                           for i in range(3)])
      assert sorted(np.asarray(m0).ravel().tolist()) == [0.0, 0.0, 1.0]  # one-hot in value
    else:
      jacobian = np.asarray(jax.jacobian(draw)(alphas["cell"])).reshape(m0.size, -1)
    want = jacobian.T @ d_m[1] + d_pen[1]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)
    if relax is relaxations.softmax:
      whole = _central(lambda a: unrolled(draw(a)) + pen(a), alphas["cell"], 1e-5)
      np.testing.assert_allclose(got, whole, rtol=1e-6, atol=1e-9)
    assert float(metrics["alpha_penalty"]) == pytest.approx(float(penalty(alphas, epoch)))
    # The penalty is in it: without it the step differs.
    plain, _ = bilevel.bilevel_step(loss_fn, opts, state, train, val, jax.random.PRNGKey(5),
                                    method="exact", epoch=epoch)
    assert not np.allclose(np.asarray(alphas["cell"] - plain.alphas["cell"]).ravel(), got)


def test_single_level_step_is_one_gradient_of_the_training_loss():
  """SNAS' single level, float64: the weights and the alphas both move by the gradient of the
  training loss at (w, alpha) with one draw (SGD(1) on each: the step is minus the gradient),
  the alphas' clipped to norm 0.05 by `darts_optimizers`' alpha_grad_clip; the reference is
  central differences of L_train(w, m(alpha)) at the draw the step used. The validation batch
  is not read."""
  with jax.enable_x64(True):
    rng = np.random.default_rng(6)
    train = {"x": jnp.asarray(rng.normal(size=(8, 4))), "y": jnp.asarray(rng.normal(size=8))}
    weights = {"w": jnp.asarray(rng.normal(size=(3, 4)))}
    alphas = {"cell": jnp.asarray(rng.normal(size=(1, 3)))}
    snas = functools.partial(relaxations.gumbel_soft, temp=1.0, temp_min=0.03, epochs=150)
    opts = bilevel.same_step(optax.sgd(1.0), optax.sgd(1.0))
    state = bilevel.init_search_state(weights, alphas, opts)
    loss_fn, mixed, seen = _toy(snas)
    new, metrics = bilevel.bilevel_step(loss_fn, opts, state, train, None,
                                        jax.random.PRNGKey(2), method="single_level", epoch=4)
    assert len(seen) == 1 and "val_loss" not in metrics
    loss = lambda w, a: mixed({"w": w}, snas(a, seen[0], 4), train)
    d_w = _central(lambda w: loss(w, alphas["cell"]), weights["w"], 1e-5)
    d_a = _central(lambda a: loss(weights["w"], a), alphas["cell"], 1e-5)
    np.testing.assert_allclose(np.asarray(weights["w"] - new.weights["w"]).ravel(), d_w,
                               rtol=1e-6, atol=1e-10)
    np.testing.assert_allclose(np.asarray(alphas["cell"] - new.alphas["cell"]).ravel(), d_a,
                               rtol=1e-6, atol=1e-10)
    assert float(metrics["train_loss"]) == pytest.approx(float(loss(weights["w"],
                                                                    alphas["cell"])))
    clip = bilevel.darts_optimizers(alpha_optimizer="sgd", alpha_lr=1.0, alpha_weight_decay=0.0,
                                    alpha_grad_clip=0.05, steps_per_epoch=1)
    clipped, _ = bilevel.bilevel_step(loss_fn, clip, bilevel.init_search_state(
        weights, alphas, clip), train, None, jax.random.PRNGKey(2), method="single_level",
        epoch=4)
    moved = np.asarray(alphas["cell"] - clipped.alphas["cell"]).ravel()
    assert np.linalg.norm(d_a) > 0.05
    np.testing.assert_allclose(moved, d_a * 0.05 / np.linalg.norm(d_a), rtol=1e-6)


@pytest.mark.parametrize("method", ["first_order", "exact", "single_level"])
def test_warmup_step_trains_the_weights_alone(method):
  """update_alphas=False (traced, under jit): the alphas and their Adam state are the step's
  inputs, the weights move by the weight step at the old alphas (SGD(1): minus the central
  differences of the training loss, float64, at the weight step's draw); update_alphas=True
  traced gives the unconditional step's result."""
  with jax.enable_x64(True):
    rng = np.random.default_rng(8)
    batch = lambda: {"x": jnp.asarray(rng.normal(size=(8, 4))),
                     "y": jnp.asarray(rng.normal(size=8))}
    train, val = batch(), batch()
    weights = {"w": jnp.asarray(rng.normal(size=(3, 4)))}
    alphas = {"cell": jnp.asarray(rng.normal(size=(1, 3)))}
    opts = bilevel.same_step(optax.sgd(1.0), optax.adam(0.1))
    state = bilevel.init_search_state(weights, alphas, opts)
    loss_fn, mixed, _ = _toy(relaxations.dirichlet)
    step = jax.jit(lambda state, update: bilevel.bilevel_step(
        loss_fn, opts, state, train, val, jax.random.PRNGKey(3), method=method,
        update_alphas=update))
    frozen, metrics = step(state, jnp.asarray(False))
    for got, want in zip(jax.tree.leaves((frozen.alphas, frozen.alpha_opt_state)),
                         jax.tree.leaves((state.alphas, state.alpha_opt_state))):
      np.testing.assert_array_equal(got, want)
    if method != "single_level":
      assert float(metrics["alpha_grad_norm"]) == 0.0
    # The weight step's draw (bilevel_step's key for it; single level: its only one).
    key = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(3), 7))[1]
    d_w = _central(lambda w: mixed({"w": w}, relaxations.dirichlet(alphas["cell"], key),
                                   train), weights["w"], 1e-5)
    np.testing.assert_allclose(np.asarray(weights["w"] - frozen.weights["w"]).ravel(), d_w,
                               rtol=1e-6, atol=1e-10)
    moved, _ = step(state, jnp.asarray(True))
    plain, _ = bilevel.bilevel_step(loss_fn, opts, state, train, val, jax.random.PRNGKey(3),
                                    method=method)
    assert not np.allclose(moved.alphas["cell"], alphas["cell"])
    for got, want in zip(jax.tree.leaves(moved), jax.tree.leaves(plain)):
      np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


def test_sdarts_adversarial_ascends_within_the_box_and_keeps_clean_when_it_cannot():
  """A linear loss c . m: the attack raises it well above the clean value and the random
  start's, and stays within eps of the clean weights up to the renormalisation; a loss whose
  maximum is the clean point: the clean weights come back exactly."""
  from darts_jax import perturbations
  clean = {"cell": jax.nn.softmax(jnp.asarray(ALPHAS["normal"][:6, :5], jnp.float32))}
  c = jnp.asarray(np.random.default_rng(5).normal(size=(6, 5)), jnp.float32)
  linear = lambda m: jnp.sum(c * m["cell"])
  eps = 0.1
  got = perturbations.adversarial(linear, clean, jax.random.PRNGKey(0), eps)
  start = perturbations.simplex_clip(clean["cell"] + eps * jax.random.uniform(
      jax.random.split(jax.random.PRNGKey(0), 1)[0], (6, 5), jnp.float32, -1.0, 1.0))
  assert float(linear(got)) > float(linear(clean)) + 0.3
  assert float(linear(got)) > float(jnp.sum(c * start)) + 0.1
  np.testing.assert_allclose(jnp.sum(got["cell"], -1), 1.0, rtol=1e-5)
  assert float(jnp.abs(got["cell"] - clean["cell"]).max()) < 3 * eps  # renormalised: > eps
  peaked = lambda m: -jnp.sum((m["cell"] - clean["cell"]) ** 2)
  kept = perturbations.adversarial(peaked, clean, jax.random.PRNGKey(0), eps)
  np.testing.assert_array_equal(kept["cell"], clean["cell"])


def test_sdarts_perturbs_the_weight_step_only():
  """With SDARTS-RS's weight loss, the alpha step is DARTS' (the same new alphas) and the weight
  step differs (it saw perturbed mixing weights)."""
  from darts_jax import perturbations
  rng = np.random.default_rng(4)
  batch = lambda: {"x": jnp.asarray(rng.normal(size=(8, 4)), jnp.float32),
                   "y": jnp.asarray(rng.normal(size=8), jnp.float32)}
  train, val = batch(), batch()
  weights = {"w": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)}
  alphas = {"cell": jnp.asarray(rng.normal(size=(1, 3)), jnp.float32)}
  opts = bilevel.same_step(optax.sgd(0.1), optax.sgd(1.0))
  state = bilevel.init_search_state(weights, alphas, opts)
  loss_fn, _, _ = _toy(relaxations.softmax)
  rs = functools.partial(perturbations.random_smoothing, eps_max=0.3, epochs=10)
  weight_loss_fn, _, _ = _toy(rs)
  step = lambda **kw: bilevel.bilevel_step(loss_fn, opts, state, train, val,
                                           jax.random.PRNGKey(1), method="exact", epoch=5, **kw)
  plain, _ = step()
  smooth, _ = step(weight_loss_fn=weight_loss_fn)
  np.testing.assert_array_equal(plain.alphas["cell"], smooth.alphas["cell"])
  assert not np.allclose(plain.weights["w"], smooth.weights["w"])


# --- Each method's config: a search on the tiny NAS-Bench-201 supernet -----------------------

@pytest.mark.parametrize("name,method", [
    ("nb201_gdas", "first_order"), ("nb201_gdas", "exact"), ("nb201_drnas", "first_order"),
    # Their relaxation or regulariser is checked above, DARTS- also on DARTS' space below.
    pytest.param("nb201_beta_darts", "first_order", marks=pytest.mark.slow),
    pytest.param("nb201_fair_darts", "first_order", marks=pytest.mark.slow),
    pytest.param("nb201_darts_minus", "first_order", marks=pytest.mark.slow),
    ("nb201_sdarts_rs", "first_order"),
    ("nb201_sdarts_adv", "first_order"), ("nb201_snas", "single_level"),
    ("nb201_pc_darts", "first_order")])
def test_method_config_searches(name, method, tmp_path):
  """Two epochs of one step (32 digits; first order as the releases, and GDAS' one-op supernet
  with the exact hypergradient): the alphas move, the cell is derived and looked up, two
  epochs logged."""
  import importlib
  import json

  from darts_jax.train import cnn_search
  from tests.helpers import override

  module = importlib.import_module(f"configs.{name}")
  config = override(module.get_config(), **{
      "data.name": "digits", "data.num_train": 32, "augment": False, "model.channels": 4,
      "model.cells_per_stage": 1, "epochs": 2, "batch_size": 16, "alpha_learning_rate": 3e-2,
      "progress_bar": False, "eval_examples": 16, "seed": 0, "hypergradient.method": method})
  if "alpha_warmup_epochs" in config:  # PC-DARTS: one epoch of weights alone, one of both
    config.alpha_warmup_epochs = 1
  result = cnn_search.train_and_evaluate(config, str(tmp_path))
  alphas = np.load(tmp_path / "alphas.npz")["cell"]
  assert np.all(np.isfinite(alphas)) and np.abs(alphas).max() > 0.01  # 2 Adam steps of 3e-2
  assert "nas_bench_201/cifar10.test.200" in result
  lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert len(lines) == 2


@pytest.mark.parametrize("name", ["nb201_drnas",
                                  pytest.param("nb201_snas", marks=pytest.mark.slow)])
def test_stochastic_method_resumes_bit_for_bit(name, tmp_path, monkeypatch):
  """DrNAS (a Dirichlet draw in every loss) and SNAS (a Gumbel draw, single level), crashed
  after step 3 of 4 (in the second epoch) and resumed: the final state, the alphas' history
  and the result are the uninterrupted run's, bit for bit, so the draws are functions of
  (seed, step) and nothing else."""
  import importlib

  from darts_jax.train import cnn_search
  from tests.helpers import override
  from tests.test_resume import run_interrupted

  config = override(importlib.import_module(f"configs.{name}").get_config(), **{
      "data.name": "digits", "data.num_train": 64, "augment": True, "model.channels": 4,
      "model.cells_per_stage": 1, "epochs": 2, "batch_size": 16, "progress_bar": False,
      "eval_examples": 16, "seed": 1, "hypergradient.method": "first_order"
      if name == "nb201_drnas" else "single_level", "checkpoint.every_steps": 1,
      # SNAS trains on all the digits it is given: 32 make the same 2 steps per epoch.
      **({"data.num_train": 32} if name == "nb201_snas" else {})})
  reference, resumed = run_interrupted(cnn_search.train_and_evaluate, config, tmp_path,
                                       monkeypatch, 3, "crash")
  timing = lambda r: {k: v for k, v in r.items() if k != "epoch_seconds"}
  assert timing(resumed) == timing(reference)
  ours, theirs = np.load(tmp_path / "run" / "alphas.npz"), np.load(
      tmp_path / "reference" / "alphas.npz")
  for key in theirs.files:
    np.testing.assert_array_equal(ours[key], theirs[key], err_msg=key)


@pytest.mark.parametrize("name", [
    "cifar_sdarts_adv", "cifar_darts_minus", "cifar_gdas", "cifar_drnas", "cifar_pc_darts",
    pytest.param("cifar_sdarts_rs", marks=pytest.mark.slow),
    pytest.param("cifar_beta_darts", marks=pytest.mark.slow),
    pytest.param("cifar_snas", marks=pytest.mark.slow),
    pytest.param("cifar_fair_darts", marks=pytest.mark.slow)])
def test_darts_space_method_config_searches(name, tmp_path):
  """Two epochs of one step on DARTS' space (3 cells of 2 channels, 32 digits): the alphas
  move and a genotype of the config's ops is written (SDARTS: the 7 ops without none); GDAS
  runs its one-op supernet; DrNAS' warm-up (1 epoch here) keeps the first epoch's alphas at
  their initial values; PC-DARTS' edge parameters move too (alphas.npz)."""
  import importlib
  import json

  from darts_jax import spaces
  from darts_jax.train import cnn_search
  from tests.helpers import override

  module = importlib.import_module(f"configs.{name}")
  config = override(module.get_config(), **{
      "data.name": "digits", "data.num_train": 32, "augment": False, "model.channels": 2,
      "model.layers": 3, "epochs": 2, "batch_size": 16, "alpha_learning_rate": 3e-2,
      "progress_bar": False, "eval_examples": 16, "seed": 0,
      **({"alpha_warmup_epochs": 1} if name in ("cifar_drnas", "cifar_pc_darts") else {}),
      **({"model.channels": 4} if name == "cifar_pc_darts" else {}),  # k = 4: 1 per op
      **({"alpha_learning_rate": 3.0} if name == "cifar_snas" else {})})  # plain SGD
  cnn_search.train_and_evaluate(config, str(tmp_path))
  alphas = np.load(tmp_path / "alphas.npz")
  space = spaces.get(config.search_space)
  ops = space.ops
  assert alphas["normal"].shape == (14, len(ops)) and np.abs(alphas["normal"]).max() > 0.01
  if name == "cifar_pc_darts":
    assert alphas["normal_edges"].shape == (14,) and np.abs(alphas["normal_edges"]).max() > 0.01
  if name in ("cifar_drnas", "cifar_pc_darts"):
    initial = jax.nn.softmax(space.init_alphas(jax.random.PRNGKey(0))["normal"], axis=-1)
    per_epoch = alphas["softmax_normal_per_epoch"]
    np.testing.assert_array_equal(per_epoch[0], np.asarray(initial, np.float32))
    assert not np.allclose(per_epoch[1], per_epoch[0], rtol=0, atol=1e-4)
  genotype = json.loads((tmp_path / "genotype.json").read_text())
  assert {op for op, _ in genotype["normal"] + genotype["reduce"]} <= set(ops) - {"none"}
