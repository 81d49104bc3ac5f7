"""Recurrent DARTS: corpora, the cells, genotypes, the hypergradient through the cell, search."""

import json
import math
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import ptb_search
from darts_jax import averaging
from darts_jax import hypergradient
from darts_jax.spaces.darts_rnn import model as rnn
from darts_jax.bilevel import LossState
from darts_jax.train import rnn_common, rnn_search
from darts_jax.data import text as text_data
from darts_jax.errors import DataError
from darts_jax.spaces.darts_rnn.genotypes import (
    RNN_DARTS_V1, RNN_DARTS_V2, RNN_PRIMITIVES, RecurrentGenotype, derive_recurrent_genotype,
    recurrent_genotype_from_name_or_file)
from darts_jax.errors import GenotypeError

ROOT = pathlib.Path(__file__).resolve().parents[1]


def write_corpus(folder, lines=(300, 60, 60), seed=0):
  """A tiny corpus with structure: each word is mostly followed by the next in a cycle."""
  rng = np.random.default_rng(seed)
  folder.mkdir(parents=True, exist_ok=True)
  for split, n in zip(text_data.SPLITS, lines):
    with open(folder / f"ptb.{split}.txt", "w") as f:
      for _ in range(n):
        start, length = rng.integers(0, 12), rng.integers(3, 9)
        f.write(" " + " ".join(f"w{(start + k) % 12}" for k in range(length)) + " \n")
  return folder


def test_corpus_vocabulary_streams_and_windows(tmp_path):
  (tmp_path / "train.txt").write_text(" a b c \n b a \n")
  (tmp_path / "valid.txt").write_text(" c d \n")
  (tmp_path / "test.txt").write_text(" a e \n")
  corpus = text_data.load_corpus(str(tmp_path))
  # First appearance over train, valid, test; one <eos> per line.
  assert corpus.vocab == ("a", "b", "c", "<eos>", "d", "e")
  np.testing.assert_array_equal(corpus.train, [0, 1, 2, 3, 1, 0, 3])
  np.testing.assert_array_equal(corpus.test, [0, 5, 3])
  streams = text_data.batchify(np.arange(11), 2)  # 5 steps x 2 streams, the 11th dropped
  np.testing.assert_array_equal(streams[:, 0], [0, 1, 2, 3, 4])
  np.testing.assert_array_equal(streams[:, 1], [5, 6, 7, 8, 9])
  w = text_data.window(streams, 2, 5, max_len=8)  # only 2 steps remain after position 2
  np.testing.assert_array_equal(w["inputs"][:2, 0], [2, 3])
  np.testing.assert_array_equal(w["targets"][:2, 0], [3, 4])
  np.testing.assert_array_equal(w["mask"], [1, 1, 0, 0, 0, 0, 0, 0])
  assert [text_data.bucket(n) for n in (5, 8, 9, 35, 55)] == [5, 10, 10, 35, 55]
  assert [text_data.bucket(n, 8) for n in (5, 8, 9, 35)] == [8, 8, 16, 40]


def test_missing_corpus_is_a_one_line_data_error(tmp_path):
  with pytest.raises(DataError) as error:
    text_data.load_corpus(str(tmp_path), "wikitext2")
  message = str(error.value)
  assert "\n" not in message and "wikitext-2-v1.zip" in message and "--config.data.dir" in message


@pytest.mark.parametrize("vocab, size, expected", [(10_000, 850, 22_960_000),
                                                   (33_278, 700, 33_127_878)])
def test_evaluation_model_parameter_counts(vocab, size, expected):
  model = rnn.RNNModel(vocab, size, size, genotype=RNN_DARTS_V2)
  shapes = jax.eval_shape(lambda: rnn.init_rnn(model, 0))["params"]
  assert sum(math.prod(x.shape) for x in jax.tree.leaves(shapes)) == expected


def test_derivation_recovers_the_published_cells():
  for genotype in (RNN_DARTS_V1, RNN_DARTS_V2):
    alphas = np.zeros((36, 5))
    start = 0
    for node, (op, source) in enumerate(genotype.recurrent):
      alphas[start + source, RNN_PRIMITIVES.index(op)] = 3.0
      alphas[start:start + node + 1, 0] = 5.0  # `none` is strongest everywhere: ignored
      start += node + 1
    assert derive_recurrent_genotype(alphas) == genotype
  # Ties go to the lower predecessor and the first op.
  assert derive_recurrent_genotype(np.zeros((36, 5))).recurrent == (("tanh", 0),) * 8
  assert RecurrentGenotype.from_json(RNN_DARTS_V2.to_json()) == RNN_DARTS_V2
  with pytest.raises(GenotypeError, match="Unknown recurrent op 'gelu'"):
    RecurrentGenotype((("gelu", 0),), (1,)).validate()
  with pytest.raises(GenotypeError, match="Unknown recurrent genotype"):
    recurrent_genotype_from_name_or_file("DARTS_V9")


@pytest.mark.parametrize("genotype", [None, RNN_DARTS_V2])
def test_padded_steps_leave_the_state_alone(genotype):
  model = rnn.RNNModel(20, 6, 6, genotype=genotype)
  variables = rnn.init_rnn(model, 0, batch_size=3)
  alphas = rnn.init_rnn_alphas(jax.random.PRNGKey(1)) if genotype is None else None
  tokens = jax.random.randint(jax.random.PRNGKey(2), (8, 3), 0, 20)
  hidden = jax.random.normal(jax.random.PRNGKey(3), (3, 6))
  short = model.apply(variables, tokens[:4], hidden, alphas)
  padded = model.apply(variables, tokens, hidden, alphas, jnp.arange(8) < 4)
  np.testing.assert_allclose(padded[0][:4], short[0], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(padded[1], short[1], rtol=1e-5, atol=1e-6)
  if genotype is None:  # the BN statistics follow only the real steps in training too
    stats = lambda mask, t: model.apply(variables, t, hidden, alphas, mask, train=True,
                                        rngs={"dropout": jax.random.PRNGKey(4)},
                                        mutable=["batch_stats"])[1]
    np.testing.assert_allclose(stats(jnp.arange(8) < 4, tokens)["batch_stats"]["mean"],
                               stats(None, tokens[:4])["batch_stats"]["mean"], rtol=1e-5)


def test_temporal_activation_penalty_counts_real_consecutive_steps():
  raw = jnp.arange(4.0)[:, None, None] ** 2 * jnp.ones((4, 2, 3))  # 0, 1, 4, 9
  assert float(rnn.temporal_activation_penalty(raw, jnp.ones(4))) == pytest.approx(35 / 3)
  assert float(rnn.temporal_activation_penalty(raw, jnp.array([1, 1, 1, 0.]))) == 5.0


def test_exact_hypergradient_through_the_recurrent_cell_matches_finite_differences():
  """float64, tiny sizes; the inner step is the search's real optimiser, clipping included."""
  with jax.enable_x64():
    config = ptb_search.get_config()
    config.learning_rate, config.grad_clip = 0.5, 0.05  # a clip that is active
    model = rnn.RNNModel(12, 5, 5, dropout=0.3, dropout_h=0.2, dropout_x=0.3, dropout_i=0.1)
    to64 = lambda t: jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), t)
    variables = to64(rnn.init_rnn(model, 0, batch_size=3))
    alphas = to64(rnn.init_rnn_alphas(jax.random.PRNGKey(1), scale=0.5))
    opt = rnn_common.make_weight_optimizer(config)
    opt_state = to64(opt.init(variables["params"]))
    loss_fn = rnn_common.make_loss_fn(model)
    # The window, the stream's incoming hidden state and its dropout key, as bilevel_step
    # passes them.
    loss = lambda w, a, b: loss_fn(w, a, b["window"], LossState(variables["batch_stats"],
                                                                b["hidden"]), b["key"])

    def batch(seed, steps=5):
      tokens = jax.random.randint(jax.random.PRNGKey(seed), (steps + 1, 3), 0, 12)
      return {"window": {"inputs": tokens[:-1], "targets": tokens[1:], "mask": jnp.ones(steps)},
              "hidden": 0.1 * jnp.ones((3, 5)), "key": jax.random.PRNGKey(seed + 100)}

    train, val = batch(10), batch(11)
    weights = variables["params"]
    grad_norm = optax.tree.norm(jax.grad(lambda w: loss(w, alphas, train)[0])(weights))
    assert grad_norm > config.grad_clip

    @jax.jit
    def objective(a):
      g = jax.grad(lambda w: loss(w, a, train)[0])(weights)
      updates, _ = opt.update(g, opt_state, weights)
      return loss(optax.apply_updates(weights, updates), a, val)[0]

    exact, _ = jax.jit(lambda a: hypergradient(loss, weights, a, train, val, opt, opt_state,
                                               has_aux=True))(alphas)
    direction = jax.random.normal(jax.random.PRNGKey(5), alphas.shape, jnp.float64)
    eps = 1e-5
    numeric = (objective(alphas + eps * direction) - objective(alphas - eps * direction)) / (
        2 * eps)
    assert float(jnp.vdot(exact, direction)) == pytest.approx(float(numeric), rel=1e-6)
    first_order = jax.grad(lambda a: loss(weights, a, val)[0])(alphas)
    assert abs(float(jnp.vdot(first_order, direction)) - float(numeric)) > 1e-4 * abs(
        float(numeric))  # the second-order term matters here


def tiny_config(folder, method):
  config = ptb_search.get_config()
  config.data.dir = str(folder)
  config.model.embed_size = config.model.hidden_size = 8
  config.batch_size, config.eval_batch_size = 4, 2
  config.bptt, config.max_seq_len_delta = 8, 0  # with buckets of 8: one compiled length
  config.window_bucket = 8
  config.epochs, config.log_every, config.progress_bar = 1, 1, False
  config.hypergradient.method = method
  return config


def test_exact_search_steps_move_the_alphas(tmp_path):
  result = rnn_search.train_and_evaluate(tiny_config(write_corpus(tmp_path / "ptb"), "exact"),
                                         str(tmp_path / "run"))
  alphas = np.load(tmp_path / "run" / "alphas.npz")["alphas"]
  assert alphas.shape == (36, 5) and np.abs(alphas).max() > 1e-2  # from a 1e-3 start
  assert np.isfinite(result["valid_ppl"]) and len(result["genotype"]["recurrent"]) == 8


def test_first_order_search_through_main(tmp_path):
  folder = write_corpus(tmp_path / "ptb")
  workdir = tmp_path / "run"
  out = subprocess.run(
      [sys.executable, "main.py", "--config", "configs/ptb_search.py", f"--workdir={workdir}",
       f"--config.data.dir={folder}", "--config.model.embed_size=8",
       "--config.model.hidden_size=8", "--config.batch_size=4", "--config.eval_batch_size=2",
       "--config.bptt=8", "--config.max_seq_len_delta=0", "--config.window_bucket=8",
       "--config.epochs=2",
       "--config.hypergradient.method=first_order", "--config.progress_bar=False"],
      capture_output=True, text=True, timeout=600, cwd=ROOT)
  assert out.returncode == 0, out.stderr
  assert "epoch 2/2" in out.stdout and "derived genotype" in out.stdout
  genotype = json.loads((workdir / "genotype.json").read_text())
  assert len(genotype["recurrent"]) == 8 and genotype["concat"] == list(range(1, 9))
  metrics = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [m["epoch"] for m in metrics] == [1, 2] and all(m["valid_ppl"] > 1 for m in metrics)


@pytest.mark.parametrize("config", ["configs/ptb_search.py", "configs/ptb_eval.py"])
def test_untied_sizes_are_one_line_through_main(tmp_path, config):
  out = subprocess.run(
      [sys.executable, "main.py", "--config", config, f"--workdir={tmp_path}",
       "--config.model.hidden_size=64"], capture_output=True, text=True, timeout=120, cwd=ROOT)
  assert out.returncode != 0
  lines = out.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("ConfigError:") and "tied" in lines[0], (
      out.stderr)


def test_polyak_average_is_the_mean_of_the_iterates_after_the_switch():
  opt = optax.chain(optax.sgd(0.5), averaging.polyak_average())
  params = {"w": jnp.array([1.0, -2.0])}
  state = opt.init(params)
  grad = lambda p: {"w": 2 * p["w"]}  # d/dw of w^2
  iterates = []
  for i in range(5):
    if i == 2:
      state = averaging.start_averaging(state)
      assert averaging.is_averaging(state)
      assert averaging.averaged_params(state, params) is params  # no averaged step yet
    updates, state = opt.update(grad(params), state, params)
    params = optax.apply_updates(params, updates)
    if i >= 2:
      iterates.append(params["w"])
  np.testing.assert_allclose(averaging.averaged_params(state, params)["w"],
                             np.mean(iterates, axis=0), rtol=1e-6)
  np.testing.assert_allclose(params["w"], np.array([1.0, -2.0]) * 0.0 ** 5)  # SGD unchanged


def test_evaluation_training_through_main_switches_to_averaged_sgd(tmp_path):
  folder = write_corpus(tmp_path / "ptb", lines=(300, 40, 40))
  workdir = tmp_path / "run"
  out = subprocess.run(
      [sys.executable, "main.py", "--config", "configs/ptb_eval.py", f"--workdir={workdir}",
       f"--config.data.dir={folder}", "--config.genotype=DARTS_V1",
       "--config.model.embed_size=8", "--config.model.hidden_size=8", "--config.batch_size=4",
       "--config.bptt=8", "--config.max_seq_len_delta=0", "--config.window_bucket=8",
       "--config.epochs=3",
       "--config.nonmono=0", "--config.learning_rate=50", "--config.progress_bar=False"],
      capture_output=True, text=True, timeout=600, cwd=ROOT)
  assert out.returncode == 0, out.stderr
  metrics = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [m["epoch"] for m in metrics] == [1, 2, 3]
  # nonmono=0: the first epoch worse than the best before it switches (lr 50 overshoots in
  # the second epoch); from then on averaging stays on.
  flags = [m["averaging"] for m in metrics]
  assert flags == [0, 1, 1] and metrics[1]["valid_ppl"] > metrics[0]["valid_ppl"]
  assert "switching to averaged SGD" in out.stdout
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["test_ppl"] > 1 and summary["parameters"] > 0
  assert any((workdir / "checkpoints" / "best").iterdir())
