"""darts_jax.hypergradient against closed forms and finite differences of the unrolled objective.

Everything exact is checked in float64 against a central difference of the objective
written out independently here (not through the library), to <= 1e-6 relative error.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from darts_jax import hypergradient

EXACT_MODES = ("forward_over_reverse", "reverse_over_reverse")


@pytest.fixture(autouse=True)
def float64():
  with jax.enable_x64(True):
    yield


def rel_err(x, ref):
  x, ref = np.concatenate([np.ravel(l) for l in jax.tree.leaves(x)]), np.concatenate(
      [np.ravel(l) for l in jax.tree.leaves(ref)])
  return np.linalg.norm(x - ref) / np.linalg.norm(ref)


def unrolled_objective(loss, weights, state, train_batches, val_batch, opt):
  """L_val(w_k(a), a) written plainly: k inner optax steps, then the validation loss."""

  def objective(alphas):
    w, s = weights, state
    for batch in train_batches:
      g = jax.grad(loss)(w, alphas, batch)
      updates, s = opt.update(g, s, w)
      w = jax.tree.map(lambda p, u: p + u, w, updates)
    return loss(w, alphas, val_batch)

  return objective


def central_difference(f, alphas, h=1e-5):
  """Gradient of a scalar f by central differences, coordinate by coordinate."""
  flat, unravel = jax.flatten_util.ravel_pytree(alphas)
  f = jax.jit(f)
  grad = np.zeros(flat.shape)
  for i in range(flat.size):
    e = np.zeros(flat.shape)
    e[i] = h
    grad[i] = (f(unravel(flat + e)) - f(unravel(flat - e))) / (2 * h)
  return unravel(jnp.asarray(grad))


# --------------------------------------------------------------------------------------------
# (a) A quadratic model whose hypergradient is derived by hand.
#
#   loss(w, a, (P, y)) = 0.5 * ||w - P a - y||^2,   train batch (M, y_t), val batch (N, y_v).
#   grad_w L_train = w - M a - y_t. For SGD(lr) with momentum mu, weight decay wd and momentum
#   buffer m:  w' = w - lr * (mu * m + (w - M a - y_t) + wd * w),  so  dw'/da = lr * M  and
#   d/da L_val(w'(a), a) = (lr * M - N)^T (w' - N a - y_v).


def quadratic_loss(w, a, batch):
  p, y = batch
  return 0.5 * jnp.sum((w - p @ a - y) ** 2)


@pytest.fixture
def quadratic():
  rng = np.random.default_rng(0)
  n, d = 5, 3
  w = jnp.asarray(rng.normal(size=n))
  a = jnp.asarray(rng.normal(size=d))
  train = (jnp.asarray(rng.normal(size=(n, d))), jnp.asarray(rng.normal(size=n)))
  val = (jnp.asarray(rng.normal(size=(n, d))), jnp.asarray(rng.normal(size=n)))
  return w, a, train, val


@pytest.mark.parametrize("exact_mode", EXACT_MODES)
@pytest.mark.parametrize("momentum,wd", [(0.0, 0.0), (0.9, 3e-4)])
def test_quadratic_closed_form(quadratic, exact_mode, momentum, wd):
  w, a, (m_mat, y_t), (n_mat, y_v) = quadratic
  lr = 0.1
  opt = optax.chain(optax.add_decayed_weights(wd), optax.sgd(lr, momentum=momentum or None))
  state = opt.init(w)
  if momentum:
    # A non-zero momentum buffer, as in the middle of a search.
    _, state = opt.update(jnp.linspace(-1.0, 1.0, w.size), state, w)
    buffer = state[1][0].trace
    assert np.abs(buffer).sum() > 0
  else:
    buffer = jnp.zeros_like(w)

  w_virtual = w - lr * (momentum * buffer + (w - m_mat @ a - y_t) + wd * w)
  by_hand = (lr * m_mat - n_mat).T @ (w_virtual - n_mat @ a - y_v)

  got = hypergradient(quadratic_loss, w, a, (m_mat, y_t), (n_mat, y_v), opt, state,
                      exact_mode=exact_mode)
  assert rel_err(got, by_hand) <= 1e-12
  fd = central_difference(
      unrolled_objective(quadratic_loss, w, state, [(m_mat, y_t)], (n_mat, y_v), opt), a)
  assert rel_err(got, fd) <= 1e-6


def test_first_order_closed_form(quadratic):
  w, a, train, (n_mat, y_v) = quadratic
  got = hypergradient(quadratic_loss, w, a, train, (n_mat, y_v), None, None,
                      method="first_order")
  np.testing.assert_allclose(got, -n_mat.T @ (w - n_mat @ a - y_v), rtol=1e-12)


# --------------------------------------------------------------------------------------------
# (b) A small nonlinear network whose alphas mix candidate operations, pytree weights/alphas.

CANDIDATES = (
    lambda h, w: jnp.zeros_like(h @ w),  # none
    lambda h, w: h @ jnp.eye(*w.shape),  # identity-like skip
    lambda h, w: jnp.tanh(h @ w),
    lambda h, w: jnp.sin(h @ w) ** 2,
    lambda h, w: jax.nn.softplus(h @ w),
)


def mixed_layer(h, weights, alpha):
  mix = jax.nn.softmax(alpha)
  return sum(mix[k] * op(h, weights[k]) for k, op in enumerate(CANDIDATES))


def mixed_net_loss(weights, alphas, batch):
  x, labels = batch
  h = mixed_layer(x, weights["layer1"], alphas["normal"][0])
  h = mixed_layer(h, weights["layer2"], alphas["normal"][1])
  h = h + mixed_layer(h, weights["layer2"], alphas["reduce"])
  logits = h @ weights["head"]["kernel"] + weights["head"]["bias"]
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def make_mixed_net(seed=0, batch_size=6, dim=4, classes=3, dtype=jnp.float64):
  rng = np.random.default_rng(seed)
  normal = lambda *shape: jnp.asarray(0.5 * rng.normal(size=shape), dtype)
  weights = {
      "layer1": [normal(dim, dim) for _ in CANDIDATES],
      "layer2": [normal(dim, dim) for _ in CANDIDATES],
      "head": {"kernel": normal(dim, classes), "bias": normal(classes)},
  }
  alphas = {"normal": normal(2, len(CANDIDATES)), "reduce": normal(len(CANDIDATES))}
  new_batch = lambda: (normal(batch_size, dim),
                       jnp.asarray(rng.integers(0, classes, batch_size)))
  return weights, alphas, new_batch


INNER_OPTS = {
    "sgd": lambda: optax.sgd(0.3),
    "sgd_momentum_wd": lambda: optax.chain(optax.add_decayed_weights(3e-4),
                                           optax.sgd(0.3, momentum=0.9)),
    # optax's advice for differentiating through Adam: eps_root > 0 keeps d sqrt(nu) finite
    # where a weight's gradient is exactly zero (here the weights of the `none` candidate).
    "adam": lambda: optax.adam(0.05, b1=0.5, eps_root=1e-12),
}


def warm_state(opt, weights, alphas, batch, steps=3):
  """An optimiser state after a few real steps: non-zero momentum, Adam moments and count."""

  @jax.jit
  def step(weights, state):
    g = jax.grad(mixed_net_loss)(weights, alphas, batch)
    updates, state = opt.update(g, state, weights)
    return optax.apply_updates(weights, updates), state

  state = opt.init(weights)
  for _ in range(steps):
    weights, state = step(weights, state)
  return weights, state


def jitted_hypergradient(loss, opt, **kwargs):
  """The way users call it: inside jit, closing over the loss and the optimiser."""
  return jax.jit(lambda *arrays: hypergradient(loss, *arrays[:4], opt, arrays[4], **kwargs))


@pytest.mark.parametrize("exact_mode", EXACT_MODES)
@pytest.mark.parametrize("opt_name", sorted(INNER_OPTS))
@pytest.mark.parametrize("unroll_steps", [1, 2])
def test_mixed_net_exact_matches_finite_difference_of_objective(opt_name, exact_mode,
                                                                unroll_steps):
  weights, alphas, new_batch = make_mixed_net()
  opt = INNER_OPTS[opt_name]()
  weights, state = warm_state(opt, weights, alphas, new_batch())
  train_batches = [new_batch() for _ in range(unroll_steps)]
  val_batch = new_batch()
  if unroll_steps == 1:
    train = train_batches[0]
  else:
    train = jax.tree.map(lambda *xs: jnp.stack(xs), *train_batches)

  got = jitted_hypergradient(mixed_net_loss, opt, exact_mode=exact_mode,
                             unroll_steps=unroll_steps)(weights, alphas, train, val_batch, state)
  objective = unrolled_objective(mixed_net_loss, weights, state, train_batches, val_batch, opt)
  fd = central_difference(objective, alphas)
  assert jax.tree.structure(got) == jax.tree.structure(alphas)
  assert rel_err(got, fd) <= 1e-6
  # The second-order term matters here: the first-order answer is measurably different.
  first = hypergradient(mixed_net_loss, weights, alphas, train_batches[0], val_batch, opt,
                        state, method="first_order")
  assert rel_err(first, fd) > 1e-3


def test_first_order_is_grad_of_validation_loss():
  weights, alphas, new_batch = make_mixed_net()
  val_batch = new_batch()
  got = hypergradient(mixed_net_loss, weights, alphas, new_batch(), val_batch, None, None,
                      method="first_order")
  expected = jax.grad(mixed_net_loss, argnums=1)(weights, alphas, val_batch)
  assert rel_err(got, expected) == 0.0


@pytest.mark.parametrize("opt_name", ["sgd_momentum_wd", "adam"])
def test_finite_difference_approaches_exact(opt_name):
  weights, alphas, new_batch = make_mixed_net(seed=1)
  opt = INNER_OPTS[opt_name]()
  weights, state = warm_state(opt, weights, alphas, new_batch())
  train, val = new_batch(), new_batch()
  arrays = (weights, alphas, train, val, state)
  exact = jitted_hypergradient(mixed_net_loss, opt)(*arrays)
  finite_difference = jax.jit(lambda eps, w, a, t, v, s: hypergradient(
      mixed_net_loss, w, a, t, v, opt, s, method="finite_difference", fd_epsilon=eps))
  errors = [rel_err(finite_difference(eps, *arrays), exact) for eps in (1e-1, 1e-2, 1e-3, 1e-4)]
  # Central differences: the error falls roughly as eps^2 until roundoff.
  assert all(later < earlier for earlier, later in zip(errors, errors[1:])), errors
  assert errors[-1] <= 1e-6, errors
  assert errors[1] > 0  # DARTS' default r = 0.01 is an approximation.


def test_finite_difference_is_darts_formula_for_sgd():
  """With plain momentum SGD, our general form is the official w +- r v central difference."""
  weights, alphas, new_batch = make_mixed_net(seed=2)
  lr, mu, wd = 0.3, 0.9, 3e-4
  opt = INNER_OPTS["sgd_momentum_wd"]()
  weights, state = warm_state(opt, weights, alphas, new_batch())
  train, val = new_batch(), new_batch()
  got = hypergradient(mixed_net_loss, weights, alphas, train, val, opt, state,
                      method="finite_difference")

  # The official recipe, written out on flat vectors.
  flat_w, unravel = jax.flatten_util.ravel_pytree(weights)
  buffer = jax.flatten_util.ravel_pytree(state[1][0].trace)[0]
  grad_w = lambda w, batch: jax.flatten_util.ravel_pytree(
      jax.grad(mixed_net_loss)(unravel(w), alphas, batch))[0]
  grad_a = lambda w, batch: jax.grad(mixed_net_loss, argnums=1)(unravel(w), alphas, batch)
  w_virtual = flat_w - lr * (mu * buffer + grad_w(flat_w, train) + wd * flat_w)
  v = grad_w(w_virtual, val)
  dalpha = grad_a(w_virtual, val)
  r = 0.01 / jnp.linalg.norm(v)
  implicit = jax.tree.map(lambda p, n: (p - n) / (2 * r), grad_a(flat_w + r * v, train),
                          grad_a(flat_w - r * v, train))
  official = jax.tree.map(lambda d, i: d - lr * i, dalpha, implicit)
  assert rel_err(got, official) <= 1e-9


@pytest.mark.parametrize("method", ["exact", "finite_difference", "first_order"])
def test_jit_and_no_jit_agree(method):
  weights, alphas, new_batch = make_mixed_net(seed=3)
  opt = INNER_OPTS["adam"]()
  weights, state = warm_state(opt, weights, alphas, new_batch())
  train, val = new_batch(), new_batch()

  def step(weights, alphas, train, val, state):
    return hypergradient(mixed_net_loss, weights, alphas, train, val, opt, state,
                         method=method)

  eager = step(weights, alphas, train, val, state)
  jitted = jax.jit(step)(weights, alphas, train, val, state)
  assert rel_err(jitted, eager) <= 1e-12


def test_float32_and_has_aux():
  weights, alphas, new_batch = make_mixed_net(seed=4, dtype=jnp.float32)
  opt = optax.sgd(0.3)
  state = opt.init(weights)
  train, val = new_batch(), new_batch()

  def loss_with_aux(w, a, batch):
    value = mixed_net_loss(w, a, batch)
    return value, {"loss": value}

  grads, aux = jax.jit(lambda w, a: hypergradient(loss_with_aux, w, a, train, val, opt, state,
                                                  has_aux=True))(weights, alphas)
  assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(grads))
  # aux comes from the validation loss at the virtual weights w'.
  g = jax.grad(mixed_net_loss)(weights, alphas, train)
  w_virtual = optax.apply_updates(weights, opt.update(g, state, weights)[0])
  np.testing.assert_allclose(aux["loss"], mixed_net_loss(w_virtual, alphas, val), rtol=1e-6)
  with jax.enable_x64(True):
    weights64, alphas64, _ = make_mixed_net(seed=4)
  exact64 = hypergradient(mixed_net_loss, weights64, alphas64,
                          jax.tree.map(lambda x: x.astype(jnp.result_type(x, jnp.float64))
                                       if jnp.issubdtype(x.dtype, jnp.floating) else x, train),
                          jax.tree.map(lambda x: x.astype(jnp.result_type(x, jnp.float64))
                                       if jnp.issubdtype(x.dtype, jnp.floating) else x, val),
                          opt, opt.init(weights64))
  assert rel_err(grads, exact64) <= 1e-4


# --------------------------------------------------------------------------------------------
# Clear errors.


def test_bad_arguments_raise_clear_value_errors():
  weights, alphas, new_batch = make_mixed_net()
  opt = optax.sgd(0.1, momentum=0.9)
  state = opt.init(weights)
  train, val = new_batch(), new_batch()
  call = functools.partial(hypergradient, mixed_net_loss, weights, alphas)

  with pytest.raises(ValueError, match="Unknown hypergradient method 'second_order'"):
    call(train, val, opt, state, method="second_order")
  with pytest.raises(ValueError, match="Unknown exact_mode"):
    call(train, val, opt, state, exact_mode="magic")
  with pytest.raises(ValueError, match="inner_opt_state does not match"):
    call(train, val, opt, optax.adam(0.1).init(weights))
  with pytest.raises(ValueError, match="inner_opt_state does not match"):
    call(train, val, opt, opt.init({"other": weights["head"]}))
  with pytest.raises(ValueError, match="same pytree structure"):
    call(train, {"x": val[0], "y": val[1]}, opt, state)
  with pytest.raises(ValueError, match="leading axis of 2"):
    call(train, val, opt, state, unroll_steps=2)
  with pytest.raises(ValueError, match="unroll_steps=1 only"):
    call(train, val, opt, state, method="finite_difference", unroll_steps=2)
  with pytest.raises(ValueError, match="positive int"):
    call(train, val, opt, state, unroll_steps=0)
  with pytest.raises(ValueError, match="needs inner_opt"):
    call(train, val, None, state)
  with pytest.raises(ValueError, match="floating-point leaves"):
    hypergradient(mixed_net_loss, weights, {"normal": jnp.zeros((2, 5), jnp.int32)}, train,
                  val, opt, state)
  with pytest.raises(ValueError, match="real scalar loss"):
    hypergradient(lambda w, a, b: jnp.ones(3) * mixed_net_loss(w, a, b), weights, alphas,
                  train, val, opt, state)
  with pytest.raises(ValueError, match="pass has_aux=True"):
    hypergradient(lambda w, a, b: (mixed_net_loss(w, a, b), {}), weights, alphas, train, val,
                  opt, state)
  with pytest.raises(ValueError, match="did not return a"):
    call(train, val, opt, state, has_aux=True)
