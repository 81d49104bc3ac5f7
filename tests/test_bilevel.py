"""`darts_jax.bilevel`: the one alternating search step, checked against a hand-written one.

A tiny model with every kind of state the step carries: BN-like shared statistics (updated by
the weight step only), a per-stream carry (the training stream's updated by the weight step,
the validation stream's by the outer loss) and a key per evaluation. float64 throughout.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from darts_jax import bilevel, hypergradient



@pytest.fixture(scope="module", autouse=True)
def float64():
  with jax.enable_x64(True):
    yield


def loss_fn(weights, alphas, batch, model_state, key):
  """A mixed op over two 'ops' (tanh and the identity) with a carried state and noise."""
  mix = jax.nn.softmax(alphas["mix"])
  noise = 1e-2 * jax.random.normal(key, batch["x"].shape, batch["x"].dtype)
  h = batch["x"] + noise + model_state.carry
  z = h @ weights["w"]
  out = mix[0] * jnp.tanh(z) + mix[1] * z
  loss = jnp.mean((out @ weights["v"] - batch["y"]) ** 2)
  shared = 0.9 * model_state.shared + 0.1 * jax.lax.stop_gradient(jnp.mean(z))
  carry = jax.lax.stop_gradient(0.5 * h)
  return loss, (bilevel.LossState(shared, carry), {"mean": jnp.mean(out)})


@pytest.fixture(scope="module")
def setup():
  rng = np.random.default_rng(0)
  weights = {"w": rng.normal(size=(3, 4)), "v": rng.normal(size=(4,))}
  alphas = {"mix": 1e-3 * rng.normal(size=(2,))}
  batch = lambda: {"x": rng.normal(size=(5, 3)), "y": rng.normal(size=(5,))}
  opts = bilevel.darts_optimizers(lr=0.1, epochs=2, steps_per_epoch=1)
  model_state = bilevel.ModelState(np.float64(0.3), rng.normal(size=(5, 3)),
                                   rng.normal(size=(5, 3)))
  state = bilevel.init_search_state(weights, alphas, opts, model_state)
  # A real weight step first, so the momentum buffer the virtual step reads is not zero.
  state, _ = bilevel.bilevel_step(loss_fn, opts, state, batch(), batch(),
                                  jax.random.PRNGKey(9), method="first_order")
  return opts, state, batch(), batch()


@pytest.mark.parametrize("method", ["exact", "finite_difference", "first_order"])
def test_step_is_the_alpha_step_then_the_weight_step(setup, method):
  opts, state, train, val = setup
  key = jax.random.PRNGKey(3)
  new, metrics = jax.jit(functools.partial(bilevel.bilevel_step, loss_fn, opts,
                                           method=method))(state, train, val, key)

  # By hand: the keys, the two streams' states, the clip-free virtual step.
  k_inner, k_outer, k_weight = jax.random.split(key, 3)
  ms = state.model_state
  inner_state = state.weight_opt_state[1]  # chain(clip, inner): the inner optimiser's state

  def objective(alphas):
    if method == "first_order":
      w_virtual = state.weights
    else:
      g = jax.grad(lambda w: loss_fn(w, alphas, train, bilevel.LossState(ms.shared, ms.train),
                                     k_inner)[0])(state.weights)
      u, _ = opts.inner.update(g, inner_state, state.weights)
      w_virtual = optax.apply_updates(state.weights, u)
    return loss_fn(w_virtual, alphas, val, bilevel.LossState(ms.shared, ms.val), k_outer)

  exact, (val_state, val_metrics) = jax.grad(objective, has_aux=True)(state.alphas)
  if method == "finite_difference":  # DARTS' approximation: close to exact, not equal
    got = np.asarray(hypergradient(
        lambda w, a, b: loss_fn(w, a, b["batch"], bilevel.LossState(ms.shared, b["carry"]),
                                b["key"])[0], state.weights, state.alphas,
        {"batch": train, "carry": ms.train, "key": k_inner},
        {"batch": val, "carry": ms.val, "key": k_outer}, opts.inner, inner_state,
        method="finite_difference")["mix"])
    np.testing.assert_allclose(got, exact["mix"], rtol=1e-3)
    grads = {"mix": got}
  else:
    grads = exact
  updates, alpha_opt_state = opts.alpha.update(grads, state.alpha_opt_state, state.alphas)
  alphas = optax.apply_updates(state.alphas, updates)
  np.testing.assert_allclose(new.alphas["mix"], alphas["mix"], rtol=1e-9, atol=1e-12)
  assert not np.allclose(new.alphas["mix"], state.alphas["mix"])

  (train_loss, (train_state, train_metrics)), g = jax.value_and_grad(loss_fn, has_aux=True)(
      state.weights, alphas, train, bilevel.LossState(ms.shared, ms.train), k_weight)
  updates, _ = opts.weight.update(g, state.weight_opt_state, state.weights)
  weights = optax.apply_updates(state.weights, updates)
  for name in weights:
    np.testing.assert_allclose(new.weights[name], weights[name], rtol=1e-9, atol=1e-12)
  # The shared state and the training carry come from the weight step, the validation
  # carry from the outer loss.
  np.testing.assert_allclose(new.model_state.shared, train_state.shared, rtol=1e-12)
  np.testing.assert_allclose(new.model_state.train, train_state.carry, rtol=1e-12)
  np.testing.assert_allclose(new.model_state.val, val_state.carry, rtol=1e-12)
  assert not np.allclose(new.model_state.val, ms.val)
  np.testing.assert_allclose(metrics["train_loss"], train_loss, rtol=1e-12)
  np.testing.assert_allclose(metrics["train_mean"], train_metrics["mean"], rtol=1e-12)
  np.testing.assert_allclose(metrics["val_mean"], val_metrics["mean"], rtol=1e-9)
  np.testing.assert_allclose(metrics["alpha_grad_norm"], np.linalg.norm(grads["mix"]),
                             rtol=1e-9)


def test_unrolled_steps_differentiate_through_k_virtual_steps(setup):
  opts, state, train, val = setup
  key = jax.random.PRNGKey(4)
  k = 3
  new, _ = bilevel.bilevel_step(loss_fn, opts, state, train, val, key, method="exact",
                                unroll_steps=k)
  k_inner, k_outer, _ = jax.random.split(key, 3)
  ms = state.model_state
  keys = jax.random.split(k_inner, k)

  def objective(alphas):  # k virtual steps on the step's batch, one key each
    w, s = state.weights, state.weight_opt_state[1]
    for i in range(k):
      g = jax.grad(lambda w_: loss_fn(w_, alphas, train,
                                      bilevel.LossState(ms.shared, ms.train), keys[i])[0])(w)
      u, s = opts.inner.update(g, s, w)
      w = optax.apply_updates(w, u)
    return loss_fn(w, alphas, val, bilevel.LossState(ms.shared, ms.val), k_outer)[0]

  grads = jax.grad(objective)(state.alphas)
  updates, _ = opts.alpha.update(grads, state.alpha_opt_state, state.alphas)
  want = optax.apply_updates(state.alphas, updates)
  np.testing.assert_allclose(new.alphas["mix"], want["mix"], rtol=1e-9, atol=1e-12)
  one, _ = bilevel.bilevel_step(loss_fn, opts, state, train, val, key, method="exact")
  assert not np.allclose(one.alphas["mix"], new.alphas["mix"])  # k mattered


def test_the_virtual_step_reads_the_state_inner_state_names(setup):
  """`BilevelOptimizers.inner_state` picks what the virtual step starts from: a wrong pick
  (a fresh state instead of the momentum buffer) changes the hypergradient."""
  opts, state, train, val = setup
  key = jax.random.PRNGKey(5)
  right, _ = bilevel.bilevel_step(loss_fn, opts, state, train, val, key)
  fresh = opts._replace(inner_state=lambda s: opts.inner.init(state.weights))
  wrong, _ = bilevel.bilevel_step(loss_fn, fresh, state, train, val, key)
  assert not np.allclose(right.alphas["mix"], wrong.alphas["mix"], rtol=1e-6)
  # `same_step` differentiates through the real (clipped) step.
  same = bilevel.same_step(opts.weight, opts.alpha)
  assert same.inner is same.weight and same.inner_state(state.weight_opt_state) is (
      state.weight_opt_state)
