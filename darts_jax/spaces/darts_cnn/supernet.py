"""The DARTS CNN search network (supernet), laid out for the XLA compiler.

`SearchNetwork` is a Flax module applied functionally:

    logits, new_state = SearchNetwork().apply({"params": weights, "batch_stats": bn}, images,
                                             alphas, train=True, mutable=["batch_stats"])

with `alphas = {"normal": (14, 8), "reduce": (14, 8)}` an input, not module state.

Layout. A naive supernet builds one module per op per edge (8 cells x 14 edges x 8 ops), and
XLA compiles every one of them separately: minutes on CPU. Here a cell stacks the weights and
BN statistics of its 14 edges, `(14, ...)` in the order of the alpha rows
(`genotypes.edge_index`), and runs the edges in a `lax.scan` whose body is one mixed op
(`mixed_edge`), so the compiled program holds one mixed op per cell. Within it, same-shaped
outputs share their BN call, and on CPU each depthwise convolution is a sum of shifted windows
with a hand-written gradient (`darts_jax.spaces.ops.depthwise`, `impl="shifted"`).

Mixed precision. `SearchNetwork(dtype="bfloat16")` computes in bfloat16 and keeps float32
parameters, alphas and BN statistics: the images are cast on entry, the weights where they are
used, and the logits come back float32, so every gradient, the hypergradient included, is
float32 and the loss and optimisers are unchanged (tests/test_mixed_precision.py bounds the
hypergradient's error).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple, Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.ad_checkpoint import checkpoint_name

from darts_jax import relaxations
from darts_jax.spaces import ops
from darts_jax.spaces.darts_cnn.genotypes import NUM_EDGES, PRIMITIVES, STEPS

_CONV_OPS = {  # name: (kernel, dilation, stages)
    "sep_conv_3x3": (3, 1, 2),
    "sep_conv_5x5": (5, 1, 2),
    "dil_conv_3x3": (3, 2, 1),
    "dil_conv_5x5": (5, 2, 1),
}
_POOLS = {"max_pool_3x3": ops.max_pool_3x3, "avg_pool_3x3": ops.avg_pool_3x3}
SUPPORTED_OPS = ("none", "skip_connect", *_POOLS, *_CONV_OPS)


class OpSlots(NamedTuple):
  """Where each op of a mixed edge is computed, derived from the op list.

  Same-shaped outputs share one BN call over a stacked op axis (per-channel statistics are
  unchanged by stacking), which halves the kernels XLA compiles: `first` are the outputs of
  the first BN (the pools and every conv's first stage), `second` those of the second BN
  (the separable convs' second stage). `mixed` lists the ops that produce an output, in the
  order of the alpha columns, and `columns` their columns (`none` adds nothing, though its
  weight takes its share of the mixing weights).
  """

  first: tuple[str, ...]
  second: tuple[str, ...]
  mixed: tuple[str, ...]
  columns: tuple[int, ...]


def op_slots(primitives) -> OpSlots:
  """The `OpSlots` of a mixed edge over `primitives` (any subset of `SUPPORTED_OPS`, in the
  order of the alpha columns)."""
  unknown = [op for op in primitives if op not in SUPPORTED_OPS]
  if unknown or len(set(primitives)) != len(primitives):
    raise ValueError(f"primitives {tuple(primitives)} must be distinct ops of "
                     f"{SUPPORTED_OPS}; unknown: {unknown}.")
  first = tuple(op for op in primitives if op in _POOLS) + tuple(
      op for op in primitives if op in _CONV_OPS)
  second = tuple(op for op in primitives if op in _CONV_OPS and _CONV_OPS[op][2] == 2)
  mixed = tuple(op for op in primitives if op != "none")
  return OpSlots(first, second, mixed, tuple(primitives.index(op) for op in mixed))


def mixed_edge(x, mix, params, stats, *, stride, impl, train, slots: OpSlots):
  """One edge: sum_k mix[k] * op_k(x) over the edge's ops (`slots`).

  Args:
    x: (N, H, W, C) input state.
    mix: (K,) mixing weights of the edge (softmax(alpha) in DARTS), in alpha-column order.
    params: the edge's weights, `{op}_dw1/pw1` (and `dw2/pw2` for the separable convs),
      plus `skip_conv1/2` at stride 2.
    stats: running BN statistics, `bn1` (len(slots.first), C) and `bn2`
      (len(slots.second), C), `skip_bn` at stride 2.
    slots: where each op is computed (`op_slots`).
  Returns:
    (N, H', W', C) and the new statistics.
  """
  new = {}
  relu_x = jax.nn.relu(x)
  conv = lambda *args: checkpoint_name(ops.separable(*args, impl), "conv")
  out = {}
  if slots.first:
    first = [_POOLS[op](x, stride) if op in _POOLS else
             conv(relu_x, params[f"{op}_dw1"], params[f"{op}_pw1"], stride, _CONV_OPS[op][1])
             for op in slots.first]
    first, new["bn1"] = _bn(jnp.stack(first, axis=-2), stats["bn1"], train)
    out.update({op: first[..., i, :] for i, op in enumerate(slots.first)})
  if slots.second:
    second = [conv(jax.nn.relu(out[op]), params[f"{op}_dw2"], params[f"{op}_pw2"], 1,
                   _CONV_OPS[op][1]) for op in slots.second]
    second, new["bn2"] = _bn(jnp.stack(second, axis=-2), stats["bn2"], train)
    out.update({op: second[..., i, :] for i, op in enumerate(slots.second)})
  if "skip_connect" in slots.mixed:
    if stride == 1:
      out["skip_connect"] = x
    else:
      out["skip_connect"], new["skip_bn"] = _bn(
          ops.factorized_reduce_convs(x, params["skip_conv1"], params["skip_conv2"]),
          stats["skip_bn"], train)
  if not slots.mixed:  # only `none`
    return jnp.zeros_like(x[:, ::stride, ::stride]), new
  outputs = jnp.stack([out[op] for op in slots.mixed], axis=-2)
  columns = slots.columns
  contiguous = columns == tuple(range(columns[0], columns[0] + len(columns)))
  mix = mix[columns[0]:columns[-1] + 1] if contiguous else mix[jnp.asarray(columns)]
  return jnp.einsum("nhwkc,k->nhwc", outputs, mix), new


def one_op_edge(x, mix, params, stats, *, stride, impl, train, slots: OpSlots):
  """GDAS' edge: only the op `k = argmax(mix)` is computed, `mix[k] * op_k(x)`
  (AutoDL-Projects, search_cells.py, `MixedOp.forward_gdas`; unlike the release's
  NAS-Bench-201 cell, the DARTS-space edge adds none of the other weights, so they get no
  gradient). Only op k's BN statistics move. The arguments and returns are `mixed_edge`'s.
  """
  relu_x = jax.nn.relu(x)
  conv = lambda *args: checkpoint_name(ops.separable(*args, impl), "conv")

  def bn_row(y, name, i, current):  # op i's row of the stacked BN `name`; other rows kept
    row = {m: current[name][m][i:i + 1] for m in ("mean", "var")}
    y, (mean, var) = ops.batch_norm(y[..., None, :], row["mean"], row["var"], train=train,
                                    feature_ndim=2)
    moved = {m: current[name][m].at[i].set(v[0]) for m, v in (("mean", mean), ("var", var))}
    return y[..., 0, :], {**current, name: moved}

  def branch(op):
    if op == "none":
      return lambda: (jnp.zeros_like(x[:, ::stride, ::stride]), stats)
    if op == "skip_connect" and stride == 1:
      return lambda: (x, stats)
    if op == "skip_connect":
      def reduce():
        y, moved = _bn(ops.factorized_reduce_convs(x, params["skip_conv1"],
                                                   params["skip_conv2"]), stats["skip_bn"], train)
        return y, {**stats, "skip_bn": moved}
      return reduce
    if op in _POOLS:
      return lambda: bn_row(_POOLS[op](x, stride), "bn1", slots.first.index(op), stats)

    def separable():
      dilation = _CONV_OPS[op][1]
      y, new = bn_row(conv(relu_x, params[f"{op}_dw1"], params[f"{op}_pw1"], stride, dilation),
                      "bn1", slots.first.index(op), stats)
      if op in slots.second:
        y, new = bn_row(conv(jax.nn.relu(y), params[f"{op}_dw2"], params[f"{op}_pw2"], 1,
                             dilation), "bn2", slots.second.index(op), new)
      return y, new
    return separable

  # The alpha columns in order: `slots.columns` are the ops that produce an output, the
  # remaining column (if any) is `none`.
  ops_by_column = ["none"] * mix.shape[-1]
  for op, column in zip(slots.mixed, slots.columns):
    ops_by_column[column] = op
  k = jnp.argmax(mix)
  y, new = lax.switch(k, [branch(op) for op in ops_by_column])
  return mix[k] * y, new


def channel_shuffle(x, groups: int):
  """PC-DARTS' channel shuffle on NHWC: the channels as (groups, C / groups), transposed, so
  channel `g * (C / groups) + i` moves to `i * groups + g` (yuhuixu1993/PC-DARTS,
  model_search.py `channel_shuffle`, on NCHW)."""
  *lead, c = x.shape
  return x.reshape(*lead, groups, c // groups).swapaxes(-1, -2).reshape(*lead, c)


def partial_channel_edge(edge_fn, x, mix, params, stats, *, k: int, stride: int, **options):
  """PC-DARTS' partial-channel edge: `edge_fn` (a mixed edge) on the first C/k channels of x,
  the other channels passed by (max-pooled 2x2 at stride 2), the two concatenated in that
  order and channel-shuffled in k groups (PC-DARTS, model_search.py `MixedOp.forward`). The
  arguments are `mixed_edge`'s, the edge's weights and statistics of C/k channels."""
  c = x.shape[-1]
  y, new = edge_fn(x[..., :c // k], mix, params, stats, stride=stride, **options)
  bypass = x[..., c // k:]
  if stride == 2:
    bypass = lax.reduce_window(bypass, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
  return channel_shuffle(jnp.concatenate([y, bypass.astype(y.dtype)], axis=-1), k), new


def _bn(x, stats, train):
  y, (mean, var) = ops.batch_norm(x, stats["mean"], stats["var"], train=train,
                                  feature_ndim=x.ndim - 3)
  return y, {"mean": mean, "var": var}


def _scan_edges(edge_fn, buffer, sources, read, write, xs, unroll):
  """Runs `edge_fn` over stacked edges in order, adding each output to buffer[write].

  As a loop (`unroll=False`), one body serves every edge, so XLA compiles the mixed op once
  per cell rather than once per edge. `x` is `sources[read]`, or `buffer[read]` when sources
  is None.
  """

  def body(buffer, inputs):
    r, w, per_edge = inputs
    x = lax.dynamic_index_in_dim(buffer if sources is None else sources, r, keepdims=False)
    y, new_stats = edge_fn(x, *per_edge)
    total = lax.dynamic_index_in_dim(buffer, w, keepdims=False) + y
    return lax.dynamic_update_index_in_dim(buffer, total, w, 0), new_stats

  return lax.scan(body, buffer, (jnp.asarray(read), jnp.asarray(write), xs), unroll=unroll)


class ReLUConvBN1x1(nn.Module):
  """ReLU -> 1x1 conv (no bias) -> BN without affine: the cell's input preprocessing."""

  features: int

  @nn.compact
  def __call__(self, x, train: bool):
    kernel = _param(self, "kernel", (x.shape[-1], self.features))
    return ops.BatchNorm(name="bn")(ops.pointwise(jax.nn.relu(x), kernel), train)


class FactorizedReduce(nn.Module):
  """ReLU, two 1x1 stride-2 convs (x and x shifted by a pixel), concat, BN."""

  features: int
  affine: bool = False

  @nn.compact
  def __call__(self, x, train: bool):
    shape = (x.shape[-1], self.features // 2)
    conv = lambda name: _param(self, name, shape)
    y = ops.factorized_reduce_convs(x, conv("conv1"), conv("conv2"))
    return ops.BatchNorm(affine=self.affine, name="bn")(y, train)


class SearchCell(nn.Module):
  """Two inputs, STEPS nodes, 14 mixed edges; output: the nodes concatenated.

  The edges' weights and BN statistics are stacked, (14, ...) in the order of the alpha rows
  (`genotypes.edge_index`), and the edges run in a `lax.scan`: in that order every edge's
  input is complete before it is read. A reduction cell runs its 8 stride-2 edges (from the
  cell inputs) in one scan and the 6 edges between nodes in a second.
  """

  features: int
  reduction: bool
  reduction_prev: bool
  impl: str
  edge_loop: str
  remat: str
  slots: OpSlots
  one_op: bool = False
  partial_channels: int = 1

  @nn.compact
  def __call__(self, s0, s1, mix, train: bool, edge_weights=None):
    """`mix`: (14, K) mixing weights; `edge_weights`: None, or (14,) weights multiplying each
    edge's output (PC-DARTS' edge normalisation, `node_softmax`)."""
    if self.reduction_prev:
      s0 = FactorizedReduce(self.features, name="preprocess0")(s0, train)
    else:
      s0 = ReLUConvBN1x1(self.features, name="preprocess0")(s0, train)
    s1 = ReLUConvBN1x1(self.features, name="preprocess1")(s1, train)

    c = self.features // self.partial_channels  # the channels the ops see (PC-DARTS: C/k)
    params = {}
    for op in self.slots.first:
      if op not in _CONV_OPS:
        continue
      k, _, stages = _CONV_OPS[op]
      for stage in range(1, stages + 1):
        params[f"{op}_dw{stage}"] = _param(self, f"{op}_dw{stage}", (NUM_EDGES, k, k, c))
        params[f"{op}_pw{stage}"] = _param(self, f"{op}_pw{stage}", (NUM_EDGES, c, c))
    stat = lambda name, shape: {
        "mean": self.variable("batch_stats", f"{name}_mean", jnp.zeros, shape, jnp.float32),
        "var": self.variable("batch_stats", f"{name}_var", jnp.ones, shape, jnp.float32)}
    variables = {name: stat(name, (NUM_EDGES, len(outputs), c))
                 for name, outputs in (("bn1", self.slots.first), ("bn2", self.slots.second))
                 if outputs}
    stats = jax.tree.map(lambda v: v.value, variables)
    edges = [(i, j) for i in range(STEPS) for j in range(2 + i)]  # alpha-row order
    unroll = self.edge_loop == "unroll"
    read = np.array([j for _, j in edges])
    write = np.array([i for i, _ in edges])
    edge = one_op_edge if self.one_op else mixed_edge
    if self.partial_channels > 1:
      edge = functools.partial(partial_channel_edge, edge, k=self.partial_channels)
    edge_fn = lambda stride: _weighted(_remat(functools.partial(
        edge, stride=stride, impl=self.impl, train=train, slots=self.slots), self.remat),
        edge_weights is not None)
    # The per-edge inputs of the scan: the mix, and the edge weight if there is one.
    mix = (mix,) if edge_weights is None else (mix, edge_weights)

    if not self.reduction:
      states = jnp.stack([s0, s1] + [jnp.zeros_like(s1)] * STEPS)
      states, new_stats = _scan_edges(edge_fn(1), states, None, read, write + 2,
                                      (mix, params, stats), unroll)
      nodes = states[2:]
    else:
      inputs = np.array([e for e, (_, j) in enumerate(edges) if j < 2])
      inner = np.array([e for e, (_, j) in enumerate(edges) if j >= 2])
      skip, skip_stats = {}, {}
      if "skip_connect" in self.slots.mixed:  # a factorized reduce on the stride-2 edges
        skip = {name: _param(self, name, (len(inputs), c, c // 2))
                for name in ("skip_conv1", "skip_conv2")}
        variables["skip_bn"] = stat("skip_bn", (len(inputs), c))
        skip_stats = {"skip_bn": jax.tree.map(lambda v: v.value, variables["skip_bn"])}
      take = lambda tree, rows: jax.tree.map(lambda a: a[rows], tree)
      nodes = jnp.zeros((STEPS, s0.shape[0], s0.shape[1] // 2, s0.shape[2] // 2,
                         self.features), s0.dtype)
      nodes, new_inputs = _scan_edges(
          edge_fn(2), nodes, jnp.stack([s0, s1]), read[inputs], write[inputs],
          (take(mix, inputs), {**take(params, inputs), **skip},
           {**take(stats, inputs), **skip_stats}), unroll)
      nodes, new_inner = _scan_edges(edge_fn(1), nodes, None, read[inner] - 2, write[inner],
                                     (take(mix, inner), take(params, inner), take(stats, inner)),
                                     unroll)
      new_stats = {key: jax.tree.map(lambda a, b: _merge_rows(a, b, inputs, inner),
                                     new_inputs[key], new_inner[key]) for key in new_inner}
      new_stats.update({k: v for k, v in new_inputs.items() if k == "skip_bn"})

    if train and self.is_mutable_collection("batch_stats") and not self.is_initializing():
      jax.tree.map(lambda var, value: setattr(var, "value", value), variables, new_stats,
                   is_leaf=lambda v: isinstance(v, flax.core.scope.Variable))
    return jnp.concatenate(list(nodes), axis=-1)


REMAT_POLICIES = ("none", "conv", "edge")


def _weighted(edge_fn, weighted: bool):
  """`edge_fn(x, (mix,), params, stats)`, or with `weighted` `edge_fn(x, (mix, w), params,
  stats)` whose output is multiplied by the edge weight w (PC-DARTS: the whole edge, its
  bypassed channels included)."""
  if not weighted:
    return lambda x, mix, params, stats: edge_fn(x, mix[0], params, stats)

  def fn(x, mix, params, stats):
    y, new = edge_fn(x, mix[0], params, stats)
    return mix[1].astype(y.dtype) * y, new

  return fn


def node_softmax(betas):
  """PC-DARTS' edge normalisation: (14,) edge parameters, in alpha-row order, softmaxed over
  each node's incoming edges (2, 3, 4 and 5 of them; yuhuixu1993/PC-DARTS, model_search.py
  `Network.forward`)."""
  out, start = [], 0
  for node in range(STEPS):
    out.append(jax.nn.softmax(betas[start:start + 2 + node]))
    start += 2 + node
  return jnp.concatenate(out)


def _remat(edge_fn, remat):
  """What the backward pass keeps of a mixed op: everything ("none"), the convolution
  outputs, recomputing the cheap BN/ReLU/pool work ("conv"), or only the edge's input,
  recomputing the whole op ("edge")."""
  if remat == "none":
    return edge_fn
  policy = (jax.checkpoint_policies.save_only_these_names("conv") if remat == "conv"
            else jax.checkpoint_policies.nothing_saveable)
  return jax.checkpoint(edge_fn, policy=policy)


def _merge_rows(a, b, rows_a, rows_b):
  out = jnp.zeros((len(rows_a) + len(rows_b), *a.shape[1:]), a.dtype)
  return out.at[rows_a].set(a).at[rows_b].set(b)


class SearchNetwork(nn.Module):
  """DARTS' CNN supernet: stem, `layers` cells (reductions at layers//3, 2*layers//3), head.

  Attributes:
    channels: C (16 in the paper).
    num_classes: 10 for CIFAR-10.
    layers: number of cells (8).
    stem_multiplier: the stem has stem_multiplier * C channels (3).
    impl: the depthwise formulation, "shifted" | "grouped" | "dense" (`ops.DEPTHWISE_IMPLS`);
      None picks by backend (`ops.default_depthwise_impl`).
    edge_loop: "scan" (default) runs a cell's edges in a loop: a small program, one compiled
      mixed op per cell (measured at batch 16 on 2 CPU cores: gradient compile 13 s, step
      2.6 s); "unroll" writes them out (61 s, 2.6 s). On CPU the loop is only fast because
      `ops.conv2d` writes its gradients in XLA's fast convolution layout.
    primitives: the ops of every mixed edge, in the order of the alpha columns (DARTS' 8 by
      default; any distinct subset of `SUPPORTED_OPS`): the mixed op, its BN slots and the
      weights it creates follow this list.
    relax: the relaxation, `relax(alpha, key, epoch) -> mixing weights` per alpha array
      (`darts_jax.relaxations`; DARTS' softmax by default).
    dtype: the compute dtype, "float32" or "bfloat16" (`ops.COMPUTE_DTYPES`); parameters,
      alphas, BN statistics and the returned logits stay float32. None (default) computes in
      the images' dtype. bfloat16 is meant for GPU/TPU, which have bfloat16 matrix units.
    one_op: compute only each edge's argmax op (`one_op_edge`), for relaxations whose mixing
      weights are one-hot in value (GDAS' `relaxations.gumbel_hard`).
    partial_channels: k; each mixed op sees 1/k of its input's channels, the rest pass by
      (PC-DARTS, `partial_channel_edge`; its release's k = 4). 1: every channel (DARTS).
    edge_normalisation: PC-DARTS' edge weights: `alphas` then also holds "normal_edges" and
      "reduce_edges", (14,) each, and every edge's output is multiplied by its node's softmax
      of them (`node_softmax`); the relaxation sees only "normal" and "reduce".
  """

  channels: int = 16
  num_classes: int = 10
  layers: int = 8
  stem_multiplier: int = 3
  impl: str | None = None
  edge_loop: str | None = None
  remat: str = "edge"
  primitives: tuple = PRIMITIVES
  relax: Callable = relaxations.softmax
  dtype: Any = None
  one_op: bool = False
  partial_channels: int = 1
  edge_normalisation: bool = False

  @nn.compact
  def __call__(self, images, alphas, train: bool = True, relax_key=None, epoch=0):
    """Logits of `images` (N, H, W, C) with `alphas` {"normal", "reduce"}: (14, K) each;
    `relax_key` and `epoch` are the relaxation's PRNG key (None for a deterministic one) and
    epoch (its schedules')."""
    impl = self.impl or ops.default_depthwise_impl()
    edge_loop = self.edge_loop or "scan"
    if edge_loop not in ("scan", "unroll"):
      raise ValueError(f"Unknown edge_loop {edge_loop!r}; expected 'scan' or 'unroll'.")
    if impl not in ops.DEPTHWISE_IMPLS:
      raise ValueError(f"Unknown depthwise impl {impl!r}; expected one of {ops.DEPTHWISE_IMPLS}.")
    if self.remat not in REMAT_POLICIES:
      raise ValueError(f"Unknown remat {self.remat!r}; expected one of {REMAT_POLICIES}.")
    if self.edge_normalisation and any(kind + EDGES not in alphas
                                       for kind in ("normal", "reduce")):
      raise ValueError("edge_normalisation=True reads alphas['normal_edges'] and "
                       "['reduce_edges'], (14,) each, which these alphas lack: make them with "
                       "init_alphas(key, edge_normalisation=True).")
    k = self.partial_channels
    if k < 1 or self.channels % k:  # then it divides every stage's 2^s C, each reduction
      # cell's C/k even, as its stride-2 skip (two convs of half the channels) needs
      raise ValueError(f"partial_channels={k} must divide channels={self.channels}.")
    if self.dtype is not None:
      images = images.astype(ops.compute_dtype(self.dtype))
    # The mixing weights follow the activations' dtype, whatever precision alphas are kept in
    # (mixing in float32 brought the bfloat16 hypergradient no closer to the float32 one: mean
    # cosine 0.980 either way over 4 seeds x 2 alpha scales, tests/test_mixed_precision.py).
    mix = {kind: m.astype(images.dtype)
           for kind, m in relaxations.relax_all(self.relax, alphas, relax_key,
                                                     epoch).items()}
    slots = op_slots(tuple(self.primitives))
    c_stem = self.stem_multiplier * self.channels
    stem = _param(self, "stem_conv", (3, 3, images.shape[-1], c_stem))
    s0 = s1 = ops.BatchNorm(affine=True, name="stem_bn")(ops.conv2d(images, stem), train)

    c, reduction_prev = self.channels, False
    for i in range(self.layers):
      reduction = i in reduction_cells(self.layers)
      c = c * 2 if reduction else c
      cell = SearchCell(c, reduction, reduction_prev, impl, edge_loop, self.remat, slots,
                        self.one_op, self.partial_channels, name=f"cell_{i}")
      kind = "reduce" if reduction else "normal"
      edge_weights = None
      if self.edge_normalisation:
        edge_weights = node_softmax(alphas[kind + EDGES]).astype(images.dtype)
      s0, s1 = s1, cell(s0, s1, mix[kind], train, edge_weights)
      reduction_prev = reduction

    # The classifier is a sliver of the compute; in float32 the logits need no cast back.
    pooled = ops.at_least_float32(jnp.mean(s1, axis=(1, 2)))
    kernel = _param(self, "classifier_kernel", (pooled.shape[-1], self.num_classes))
    bias = _param(self, "classifier_bias", (self.num_classes,), fan_in=pooled.shape[-1])
    return pooled @ kernel + bias


def reduction_cells(layers: int) -> Sequence[int]:
  return (layers // 3, 2 * layers // 3)


EDGES = "_edges"  # the suffix of PC-DARTS' edge parameters in the alphas


def init_alphas(key, scale: float = 1e-3, primitives=PRIMITIVES,
                edge_normalisation: bool = False):
  """DARTS' alpha initialisation, 1e-3 * N(0, 1), one (14, len(primitives)) matrix per cell
  type; with `edge_normalisation` also PC-DARTS' edge parameters, 1e-3 * N(0, 1), (14,) per
  cell type, drawn from a key of their own (the op alphas are the same either way)."""
  k_normal, k_reduce = jax.random.split(key)
  shape = (NUM_EDGES, len(primitives))
  alphas = {"normal": scale * jax.random.normal(k_normal, shape),
            "reduce": scale * jax.random.normal(k_reduce, shape)}
  if edge_normalisation:
    k_normal, k_reduce = jax.random.split(jax.random.fold_in(key, 1))
    alphas["normal" + EDGES] = scale * jax.random.normal(k_normal, (NUM_EDGES,))
    alphas["reduce" + EDGES] = scale * jax.random.normal(k_reduce, (NUM_EDGES,))
  return alphas


def _fan_in(name: str, shape) -> int:
  """Fan-in of a supernet weight, from its name and shape (PyTorch's default init uses it)."""
  if name.endswith(("_dw1", "_dw2")):  # (E, k, k, C) depthwise: k * k inputs per output
    return shape[-3] * shape[-2]
  if name.startswith(("sep_conv", "dil_conv", "skip_conv")):  # (E, C_in, C_out), per edge
    return shape[-2]
  return math.prod(shape[:-1])


def _param(module: nn.Module, name: str, shape, fan_in: int | None = None):
  return module.param(name, ops.torch_uniform(fan_in or _fan_in(name, shape)), shape)


def init_supernet(model: SearchNetwork, seed: int, image_shape=(32, 32, 3)):
  """Returns (weights, batch_stats) as `model.init` would make them, in about a second.

  `model.init` runs the forward pass: eagerly that compiles thousands of small ops, and under
  `jax.jit` a program with one RNG computation per weight; either takes a minute here. The
  shapes come from `jax.eval_shape` instead, and the values (PyTorch's default init,
  U(-1/sqrt(fan_in), 1/sqrt(fan_in)); BN: scale 1, bias 0, running mean 0 and var 1) are
  drawn on the host with numpy from `seed`.
  """
  alphas = init_alphas(jax.random.PRNGKey(0), primitives=model.primitives,
                       edge_normalisation=model.edge_normalisation)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                             jnp.zeros((1, *image_shape), jnp.float32), alphas,
                                             train=True))
  rng = np.random.default_rng(seed)
  fan_in_of_classifier = shapes["params"]["classifier_kernel"].shape[0]

  def value(path, leaf):
    name = getattr(path[-1], "key", str(path[-1]))
    if path[0].key == "batch_stats" or name in ("scale", "bias"):
      fill = 1.0 if name.endswith("var") or name == "scale" else 0.0
      return jnp.full(leaf.shape, fill, leaf.dtype)
    fan_in = fan_in_of_classifier if name == "classifier_bias" else _fan_in(name, leaf.shape)
    bound = 1.0 / math.sqrt(fan_in)
    return jnp.asarray(rng.uniform(-bound, bound, leaf.shape), leaf.dtype)

  variables = jax.tree_util.tree_map_with_path(value, shapes)
  return variables["params"], variables["batch_stats"]
