"""One bilevel search step (alpha step, then weight step) on a tiny supernet, per method."""

import jax
import numpy as np
import optax
import pytest

from darts_jax import hypergradient, search, supernet


@pytest.fixture(scope="module")
def setup():
  model = supernet.SearchNetwork(channels=2, layers=3, num_classes=3)
  weights, stats = supernet.init_supernet(model, seed=0, image_shape=(8, 8, 3))
  alphas = supernet.init_alphas(jax.random.PRNGKey(0))
  opts = search.make_optimizers(epochs=2, steps_per_epoch=1)
  state = search.init_search_state(weights, stats, alphas, opts[0], opts[2])
  key = jax.random.PRNGKey(1)
  batch = lambda k: {"images": jax.random.normal(k, (4, 8, 8, 3)),
                     "labels": jax.random.randint(k, (4,), 0, 3)}
  return model, opts, state, batch(key), batch(jax.random.fold_in(key, 1))


# The step's code is the same for every method but the hypergradient call, so one cheap
# method checks the wiring (~20 s of compile per method, ~50 s for exact). The hypergradients
# are checked in test_hypergradient.py; the exact step runs in test_parallel.py (1 and 4
# devices) and test_resume.py (through main.py).
@pytest.mark.parametrize("method", ["first_order"])
def test_search_step_updates_alphas_with_the_hypergradient_then_weights(setup, method):
  model, (weight_opt, inner_opt, alpha_opt), state, train, val = setup
  step = jax.jit(search.make_search_step(model, weight_opt, inner_opt, alpha_opt, method))
  new, metrics = step(state, train, val)

  # The alpha step is Adam on the hypergradient, computed here on its own.
  loss_fn = search.make_loss_fn(model)
  @jax.jit
  def alpha_step(state):
    grads = hypergradient(
        loss_fn, state.weights, state.alphas, {**train, "batch_stats": state.batch_stats},
        {**val, "batch_stats": state.batch_stats}, inner_opt, state.weight_opt_state[1],
        method=method, has_aux=True)[0]
    updates, _ = alpha_opt.update(grads, state.alpha_opt_state, state.alphas)
    return optax.apply_updates(state.alphas, updates)

  want = alpha_step(state)
  for kind in ("normal", "reduce"):
    np.testing.assert_allclose(new.alphas[kind], want[kind], rtol=1e-4, atol=1e-8)
    assert not np.allclose(new.alphas[kind], state.alphas[kind])

  # The weight step sees the new alphas: its loss is the training loss under them.
  loss, (stats, _) = loss_fn(state.weights, new.alphas, {**train,
                                                         "batch_stats": state.batch_stats})
  np.testing.assert_allclose(metrics["train_loss"], loss, rtol=1e-5)
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(new))
  moved = [not np.allclose(a, b) for a, b in zip(jax.tree.leaves(new.weights),
                                                 jax.tree.leaves(state.weights))]
  assert all(moved)
  for a, b in zip(jax.tree.leaves(new.batch_stats), jax.tree.leaves(stats)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  assert 0.0 <= float(metrics["val_accuracy"]) <= 1.0
