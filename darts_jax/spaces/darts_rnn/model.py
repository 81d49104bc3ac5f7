"""DARTS' recurrent language model: the search cell (alphas as an input) and genotype cells.

    model = RNNModel(vocab_size=10000)                           # the search network
    logits, hidden, raw, stats = model.apply(
        {"params": params, "batch_stats": bn}, tokens, hidden, alphas, train=True,
        rngs={"dropout": key})

A cell turns (x_t, h_{t-1}) into h_t through highway nodes (docs/reference.md,
"Recurrent (PTB) search space"):

    [c0, h0] = [x * mask_x, h_{t-1} * mask_h] W0,  s0 = h_{t-1} + sigmoid(c0) (tanh(h0) - h_{t-1})
    node i, from predecessor s:  [c, h] = (s * mask_h) W_i,  s_i = s + sigmoid(c) (f(h) - s)
    h_t = mean of the concat states (nodes 1..8)

In the search cell node i reads every earlier state through its one W_i and sums
softmax(alpha)-weighted ops over them; every node state (and s0) passes one shared BatchNorm
without affine parameters. The embedding and the decoder share one matrix. Dropout masks are
variational, as in the official code: one mask per sequence, the same at every time step
(x, h, the embedding's output, the cell's output), plus whole-word embedding dropout.

Time runs in a `lax.scan`; steps where `mask` is 0 (padding of a short window) leave the hidden
state and the BN statistics unchanged, so windows of any length share one compiled shape.
"""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from darts_jax import relaxations
from darts_jax.spaces import ops
from darts_jax.spaces.darts_rnn.genotypes import (RNN_NUM_EDGES, RNN_PRIMITIVES, RNN_STEPS,
                                                  RecurrentGenotype)

INIT_RANGE = 0.04  # the official U(-0.04, 0.04) for W0 and the W_i
EMBEDDING_INIT_RANGE = 0.1  # the official U(-0.1, 0.1) for the (tied) embedding
_ACTIVATIONS = {"tanh": jnp.tanh, "relu": jax.nn.relu, "sigmoid": jax.nn.sigmoid,
                "identity": lambda h: h}


def _uniform(scale):
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -scale,
                                                                  scale)


def _dropout_mask(key, rate, shape):
  """1 / (1 - rate) with probability 1 - rate, else 0 (a mask, applied by multiplying)."""
  keep = 1.0 - rate
  return jax.random.bernoulli(key, keep, shape).astype(jnp.float32) / keep


def _highway(s, ch, fn):
  c, h = jnp.split(ch, 2, axis=-1)
  return s + jax.nn.sigmoid(c) * (fn(h) - s)


_MIXED = tuple(op for op in RNN_PRIMITIVES if op != "none")  # `none` adds nothing
_COLUMNS = tuple(RNN_PRIMITIVES.index(op) for op in _MIXED)
assert _COLUMNS == tuple(range(_COLUMNS[0], _COLUMNS[0] + len(_COLUMNS)))  # a slice


def search_cell(x, h_prev, w0, ws, weights, bn, masks, train):
  """One step of the search cell; `weights`: the mixing weights (36, 5), softmax(alphas) in
  DARTS; bn = (mean, var).

  Returns (h_t, new bn statistics).
  """
  x_mask, h_mask = masks
  xh = jnp.concatenate([x * x_mask, h_prev * h_mask] if train else [x, h_prev], axis=-1)
  c0, h0 = jnp.split(xh @ w0, 2, axis=-1)
  s0 = h_prev + jax.nn.sigmoid(c0) * (jnp.tanh(h0) - h_prev)
  s0, bn = ops.batch_norm(s0, *bn, train=train)
  states, offset = s0[None], 0
  fns = [_ACTIVATIONS[name] for name in _MIXED]
  for i in range(RNN_STEPS):
    rows = weights[offset:offset + i + 1, _COLUMNS[0]:_COLUMNS[-1] + 1]  # (i + 1 sources, 4)
    ch = (states * h_mask if train else states) @ ws[i]
    c, h = jnp.split(ch, 2, axis=-1)
    c = jax.nn.sigmoid(c)
    # sum_k w_k (s + c (f_k(h) - s)) = W s + c (sum_k w_k f_k(h) - W s), W = sum_k w_k.
    mixed = sum(rows[:, k, None, None] * fn(h) for k, fn in enumerate(fns))
    total = jnp.sum(rows, axis=1)[:, None, None] * states
    s = jnp.sum(total + c * (mixed - total), axis=0)
    s, bn = ops.batch_norm(s, *bn, train=train)
    states = jnp.concatenate([states, s[None]])
    offset += i + 1
  return jnp.mean(states[1:], axis=0), bn


def genotype_cell(x, h_prev, w0, ws, genotype: RecurrentGenotype, masks, train):
  """One step of a derived cell (no BN, one op per node)."""
  x_mask, h_mask = masks
  xh = jnp.concatenate([x * x_mask, h_prev * h_mask] if train else [x, h_prev], axis=-1)
  states = [_highway(h_prev, xh @ w0, jnp.tanh)]
  for i, (name, source) in enumerate(genotype.recurrent):
    s = states[source]
    states.append(_highway(s, (s * h_mask if train else s) @ ws[i], _ACTIVATIONS[name]))
  return jnp.mean(jnp.stack([states[i] for i in genotype.concat]), axis=0)


class RNNModel(nn.Module):
  """Embedding -> DARTS recurrent cell over time -> tied decoder.

  Attributes:
    vocab_size: 10,000 on PTB.
    embed_size, hidden_size: 300 in the search, 850 (PTB) / 700 (WikiText-2) in evaluation;
      the tied decoder needs them equal.
    genotype: None for the search cell (alphas are an input), else the derived cell.
    dropout, dropout_h, dropout_x, dropout_i, dropout_e: output, node input, cell input x,
      embedding output and whole-word embedding dropout rates.
    remat: recompute each time step's cell in the backward pass instead of storing it.
    relax: the relaxation, `relax(alphas, key, epoch) -> mixing weights` (`darts_jax.relaxations`;
      DARTS' softmax by default).
  """

  vocab_size: int
  embed_size: int = 300
  hidden_size: int = 300
  genotype: RecurrentGenotype | None = None
  dropout: float = 0.75
  dropout_h: float = 0.25
  dropout_x: float = 0.75
  dropout_i: float = 0.2
  dropout_e: float = 0.0
  remat: bool = True
  relax: Callable = relaxations.softmax

  @nn.compact
  def __call__(self, tokens, hidden, alphas=None, mask=None, train: bool = False,
               relax_key=None, epoch=0):
    """tokens (T, B) int, hidden (B, H) -> (logits (T, B, V), new hidden (B, H), the cell's
    outputs (T, B, H) before output dropout, for the TAR penalty)."""
    if self.embed_size != self.hidden_size:
      raise ValueError("The tied decoder needs embed_size == hidden_size.")
    steps, batch = tokens.shape
    emb_w = self.param("embedding", _uniform(EMBEDDING_INIT_RANGE),
                       (self.vocab_size, self.embed_size))
    w0 = self.param("w0", _uniform(INIT_RANGE),
                    (self.embed_size + self.hidden_size, 2 * self.hidden_size))
    steps_ = RNN_STEPS if self.genotype is None else len(self.genotype.recurrent)
    ws = self.param("ws", _uniform(INIT_RANGE), (steps_, self.hidden_size, 2 * self.hidden_size))
    bias = self.param("decoder_bias", nn.initializers.zeros, (self.vocab_size,))
    mask = jnp.ones((steps,), jnp.float32) if mask is None else mask

    ones = lambda n: jnp.ones((batch, n), jnp.float32)
    masks = (ones(self.embed_size), ones(self.hidden_size))
    lookup = emb_w
    if train:
      k_e, k_i, k_x, k_h, k_o = jax.random.split(self.make_rng("dropout"), 5)
      if self.dropout_e:
        lookup = emb_w * _dropout_mask(k_e, self.dropout_e, (self.vocab_size, 1))
      masks = (_dropout_mask(k_x, self.dropout_x, (batch, self.embed_size)),
               _dropout_mask(k_h, self.dropout_h, (batch, self.hidden_size)))
    emb = lookup[tokens]
    if train and self.dropout_i:
      emb = emb * _dropout_mask(k_i, self.dropout_i, (batch, self.embed_size))

    if self.genotype is None:
      if alphas is None:
        raise ValueError("The search cell needs alphas of shape "
                         f"({RNN_NUM_EDGES}, {len(RNN_PRIMITIVES)}).")
      weights = self.relax(alphas, relax_key, epoch)
      bn_mean = self.variable("batch_stats", "mean", jnp.zeros, (self.hidden_size,))
      bn_var = self.variable("batch_stats", "var", jnp.ones, (self.hidden_size,))
      cell = lambda x, h, bn: search_cell(x, h, w0, ws, weights, bn, masks, train)
      bn = (bn_mean.value, bn_var.value)
    else:
      cell = lambda x, h, bn: (genotype_cell(x, h, w0, ws, self.genotype, masks, train), bn)
      bn = ()

    def step(carry, inputs):
      h, bn = carry
      x, real = inputs
      h_new, bn_new = cell(x, h, bn)
      keep = lambda new, old: jnp.where(real > 0, new, old)  # padding leaves the state alone
      return (keep(h_new, h), jax.tree.map(keep, bn_new, bn)), h_new

    if self.remat:
      # Keep only each step's carry for the backward pass and recompute the cell: the
      # search cell's 36 edges leave ~20 activations of (B, 2H) per step otherwise.
      step = jax.checkpoint(step)
    (hidden, bn), raw = jax.lax.scan(step, (hidden, bn), (emb, mask))
    if self.genotype is None and train and not self.is_initializing():
      if self.is_mutable_collection("batch_stats"):
        bn_mean.value, bn_var.value = bn
    out = raw
    if train and self.dropout:
      out = raw * _dropout_mask(k_o, self.dropout, (batch, self.hidden_size))
    logits = out @ emb_w.T + bias
    return logits, hidden, raw


def masked_nll(logits, targets, mask):
  """Mean next-token cross-entropy over the real (mask 1) steps."""
  nll = optax.softmax_cross_entropy_with_integer_labels(logits, targets)  # (T, B)
  return jnp.sum(nll * mask[:, None]) / (jnp.sum(mask) * targets.shape[1])


def temporal_activation_penalty(raw, mask):
  """TAR: mean squared change of the cell output between consecutive real steps."""
  pairs = mask[1:] * mask[:-1]
  change = jnp.mean(jnp.square(raw[1:] - raw[:-1]), axis=(1, 2))
  return jnp.sum(change * pairs) / jnp.maximum(jnp.sum(pairs), 1)


def init_rnn(model: RNNModel, seed: int, batch_size: int = 2):
  """`{"params", "batch_stats"}` of the model (batch_stats empty for a genotype cell)."""
  tokens = jnp.zeros((2, batch_size), jnp.int32)
  hidden = jnp.zeros((batch_size, model.hidden_size))
  alphas = jnp.zeros((RNN_NUM_EDGES, len(RNN_PRIMITIVES))) if model.genotype is None else None
  variables = jax.jit(lambda: model.init(jax.random.PRNGKey(seed), tokens, hidden, alphas))()
  return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}


def init_rnn_alphas(key, scale: float = 1e-3):
  """DARTS' recurrent alpha initialisation, 1e-3 * N(0, 1), shape (36, 5)."""
  return scale * jax.random.normal(key, (RNN_NUM_EDGES, len(RNN_PRIMITIVES)))
