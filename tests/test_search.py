"""One bilevel search step (alpha step, then weight step) on a tiny supernet, per method."""

import jax
import numpy as np
import optax
import pytest

from darts_jax import bilevel, hypergradient
from darts_jax.spaces.darts_cnn import supernet
from darts_jax.train import cnn_search


@pytest.fixture(scope="module")
def setup():
  model = supernet.SearchNetwork(channels=2, layers=3, num_classes=3)
  weights, stats = supernet.init_supernet(model, seed=0, image_shape=(8, 8, 3))
  alphas = supernet.init_alphas(jax.random.PRNGKey(0))
  opts = bilevel.darts_optimizers(epochs=2, steps_per_epoch=1)
  state = bilevel.init_search_state(weights, alphas, opts, bilevel.ModelState(stats))
  key = jax.random.PRNGKey(1)
  batch = lambda k: {"images": jax.random.normal(k, (4, 8, 8, 3)),
                     "labels": jax.random.randint(k, (4,), 0, 3)}
  return model, opts, state, batch(key), batch(jax.random.fold_in(key, 1))


# The step's code is the same for every method but the hypergradient call, so one cheap
# method checks the wiring (~20 s of compile per method, ~50 s for exact). The hypergradients
# are checked in test_hypergradient.py, the generic step in test_bilevel.py; the exact step
# runs in test_parallel.py (1 and 4 devices) and test_resume.py (through main.py).
@pytest.mark.parametrize("method", ["first_order"])
def test_search_step_updates_alphas_with_the_hypergradient_then_weights(setup, method):
  model, opts, state, train, val = setup
  step = jax.jit(cnn_search.make_search_step(model, opts, method=method))
  new, metrics = step(state, train, val, jax.random.PRNGKey(2))

  # The alpha step is Adam on the hypergradient, computed here on its own.
  loss_fn = cnn_search.make_loss_fn(model)
  stats = state.model_state.shared
  three_arg = lambda w, a, b: loss_fn(w, a, b, bilevel.LossState(stats), None)

  @jax.jit
  def alpha_step(state):
    # DARTS' weight optimiser is chain(clip, inner): the virtual step starts from inner's state.
    _, inner_state = state.weight_opt_state
    grads = hypergradient(three_arg, state.weights, state.alphas, train, val, opts.inner,
                          inner_state, method=method, has_aux=True)[0]
    updates, _ = opts.alpha.update(grads, state.alpha_opt_state, state.alphas)
    return optax.apply_updates(state.alphas, updates)

  want = alpha_step(state)
  for kind in ("normal", "reduce"):
    np.testing.assert_allclose(new.alphas[kind], want[kind], rtol=1e-4, atol=1e-8)
    assert not np.allclose(new.alphas[kind], state.alphas[kind])

  # The weight step sees the new alphas: its loss is the training loss under them.
  loss, (new_stats, _) = three_arg(state.weights, new.alphas, train)
  np.testing.assert_allclose(metrics["train_loss"], loss, rtol=1e-5)
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(new))
  moved = [not np.allclose(a, b) for a, b in zip(jax.tree.leaves(new.weights),
                                                 jax.tree.leaves(state.weights))]
  assert all(moved)
  for a, b in zip(jax.tree.leaves(new.model_state.shared), jax.tree.leaves(new_stats.shared)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  assert 0.0 <= float(metrics["val_accuracy"]) <= 1.0
