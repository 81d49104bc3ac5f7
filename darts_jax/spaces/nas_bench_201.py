"""The NAS-Bench-201 search space (Dong & Yang, ICLR 2020) for DARTS: cell, network, genotype.

A cell is a DAG of 4 nodes: node 0 is the cell's input, node i (1..3) the sum of one op on
every earlier node, the output node 3. Its 6 edges choose among 5 ops (`OPS`); one alpha of
shape (6, 5) serves all 15 cells. The network (docs/reference.md, "NAS-Bench-201 search
space"): a 3x3 conv stem (C channels) and BN, 3 stages of 5 cells at C, 2C, 4C channels joined
by stride-2 residual blocks, then BN, ReLU, global average pool and a linear classifier.

    model = SearchNetwork201(channels=16, cells_per_stage=5, num_classes=10)
    logits, new = model.apply({"params": w, "batch_stats": bn}, images, {"cell": alphas},
                              train=True, mutable=["batch_stats"])

Where the DARTS and NAS-Bench-201 papers are silent this follows the NAS-Bench-201 release's
DARTS search network (D-X-Y/AutoDL-Projects):
the cells' BN has no affine parameters (the residual blocks', stem's and last BN have), BN
running statistics are kept, convolutions have no bias, `avg_pool_3x3` does not count the
padding, and `none` is a zero that still takes its share of the softmax. (The release's cell
convolutions carry a bias, `bias=not affine`; the BN right after them subtracts it in
training, so it never gets a gradient and is left out here.)

`track_running_stats=False` is the NATS-Bench searches' setting (`exps/NATS-algos/
search-cell.py`, `--track_running_stats 0 --affine 0` by default): the cells' BN normalises
with the batch's statistics in evaluation too and keeps no running averages, as PyTorch's
`BatchNorm2d(track_running_stats=False)`; only the cells follow it (the stem, the residual
blocks and the last BN keep theirs, as in the release).

Layout for XLA: a cell stacks the weights of its 6 same-shaped edges and runs them in one
`lax.scan` (one mixed op in the compiled program per cell), and each stage's 5 cells are one
`nn.scan`: the compiled network holds 3 mixed ops, not 90.
"""

from __future__ import annotations

import json
import math
from typing import Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from darts_jax import relaxations
from darts_jax.spaces import ops
from darts_jax.spaces.darts_cnn.supernet import EDGES as EDGES_SUFFIX, channel_shuffle
from darts_jax.errors import GenotypeError

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NODES = 4
# (to, from) in the order of the alpha rows and of the string form: 1<-0, 2<-0, 2<-1, 3<-0, ...
EDGES = tuple((i, j) for i in range(1, NODES) for j in range(i))


class Genotype201(NamedTuple):
  """One op per edge, in `EDGES` order; `str()` is the benchmark's own string form."""

  ops: tuple[str, ...]

  def to_string(self) -> str:
    """`|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`: node by node, `op~j` for the edge from j."""
    nodes, k = [], 0
    for i in range(1, NODES):
      nodes.append("|" + "|".join(f"{self.ops[k + j]}~{j}" for j in range(i)) + "|")
      k += i
    return "+".join(nodes)

  __str__ = to_string

  @classmethod
  def from_string(cls, text: str) -> "Genotype201":
    """Parses the string form; raises `GenotypeError` naming what is wrong."""
    nodes = text.strip().split("+")
    if len(nodes) != NODES - 1:
      raise GenotypeError(f"NAS-Bench-201 genotype {text!r} has {len(nodes)} nodes; expected "
                          f"{NODES - 1} separated by '+', like {_EXAMPLE}.")
    found = []
    for i, node in enumerate(nodes, start=1):
      edges = [e for e in node.strip("|").split("|")]
      want = [str(j) for j in range(i)]
      pairs = [e.rsplit("~", 1) for e in edges]
      if any(len(p) != 2 for p in pairs) or [p[1] for p in pairs] != want:
        raise GenotypeError(f"Node {i} of NAS-Bench-201 genotype {text!r} must list the edges "
                            f"from nodes {', '.join(want)} in order as op~j, like {_EXAMPLE}.")
      for op, _ in pairs:
        if op not in OPS:
          raise GenotypeError(f"Unknown op {op!r} in NAS-Bench-201 genotype {text!r}; known "
                              f"ops: {', '.join(OPS)}.")
        found.append(op)
    return cls(tuple(found))

  def to_json(self) -> str:
    return json.dumps({"nas_bench_201": self.to_string()})

  @classmethod
  def from_json(cls, text: str) -> "Genotype201":
    return cls.from_string(json.loads(text)["nas_bench_201"])


_EXAMPLE = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|" \
           "nor_conv_3x3~1|skip_connect~2|"


def derive_genotype(alphas) -> Genotype201:
  """NAS-Bench-201's derivation: the argmax op of every edge, `none` included (so a cell may
  lose edges, unlike DARTS' top-2 rule)."""
  cell = np.asarray(alphas["cell"] if isinstance(alphas, dict) else alphas)
  return Genotype201(tuple(OPS[k] for k in np.argmax(cell, axis=-1)))


def node_softmax(betas):
  """PC-DARTS' edge normalisation on this cell: (6,) edge parameters, in `EDGES` order,
  softmaxed over each node's incoming edges (1, 2 and 3 of them), as PC-DARTS' DARTS-space
  supernet does over its nodes' (yuhuixu1993/PC-DARTS, model_search.py `Network.forward`)."""
  out, start = [], 0
  for node in range(1, NODES):
    out.append(jax.nn.softmax(betas[start:start + node]))
    start += node
  return jnp.concatenate(out)


def init_alphas(key, scale: float = 1e-3, edge_normalisation: bool = False):
  """1e-3 * N(0, 1), as DARTS: one (6, 5) matrix shared by every cell; with
  `edge_normalisation` also PC-DARTS' edge parameters "cell_edges", 1e-3 * N(0, 1), (6,), from
  a key of their own (the op alphas are the same either way)."""
  alphas = {"cell": scale * jax.random.normal(key, (len(EDGES), len(OPS)))}
  if edge_normalisation:
    alphas["cell" + EDGES_SUFFIX] = scale * jax.random.normal(jax.random.fold_in(key, 1),
                                                              (len(EDGES),))
  return alphas


_CONVS = ("nor_conv_1x1", "nor_conv_3x3")  # their outputs share one BN call, in this order
_MIXED = tuple(op for op in OPS if op != "none")  # `none` adds nothing
_COLUMNS = tuple(OPS.index(op) for op in _MIXED)
assert _COLUMNS == tuple(range(_COLUMNS[0], _COLUMNS[0] + len(_COLUMNS)))  # a slice of mix


def mixed_edge(x, mix, conv1x1, conv3x3, stats, *, train, track_running_stats=True):
  """sum_k mix[k] * op_k(x) over `OPS`.

  Args:
    x: (N, H, W, C) node.
    mix: (5,) mixing weights of the edge (softmax(alpha) in DARTS), in `OPS` order.
    conv1x1, conv3x3: (C, C) and (3, 3, C, C) kernels of nor_conv_1x1 and nor_conv_3x3.
    stats: the two convs' BN running statistics, `mean`/`var` (2, C).
    train: training mode (BN on the batch's statistics, which update the running ones).
    track_running_stats: False: BN on the batch's statistics in both modes, and `stats`
      returned unchanged (PyTorch's `track_running_stats=False`).
  Returns:
    (N, H, W, C) and the new statistics.
  """
  relu_x = jax.nn.relu(x)
  # The two conv outputs share one BN call, with statistics per op: features (2, C).
  conv = {"nor_conv_1x1": lambda: ops.pointwise(relu_x, conv1x1),
          "nor_conv_3x3": lambda: ops.conv2d(relu_x, conv3x3)}
  convs = jnp.stack([conv[op]() for op in _CONVS], axis=-2)
  convs, (mean, var) = ops.batch_norm(convs, stats["mean"], stats["var"],
                                      train=train or not track_running_stats, feature_ndim=2)
  if not track_running_stats:
    mean, var = stats["mean"], stats["var"]
  out = {"skip_connect": x, "avg_pool_3x3": ops.avg_pool_3x3(x, 1),
         **{op: convs[..., i, :] for i, op in enumerate(_CONVS)}}
  outputs = jnp.stack([out[op] for op in _MIXED], -2)
  mix = mix[_COLUMNS[0]:_COLUMNS[-1] + 1].astype(x.dtype)
  return jnp.einsum("nhwkc,k->nhwc", outputs, mix), {"mean": mean, "var": var}


def one_op_edge(x, mix, conv1x1, conv3x3, stats, *, train, track_running_stats=True):
  """GDAS' edge: only the op `k = argmax(mix)` is computed, `mix[k] * op_k(x)`, plus the other
  ops' weights added as scalars (AutoDL-Projects, search_cells.py, `forward_gdas`): with
  straight-through weights they add 0, and pass the node's gradient (its sum) to those ops'
  weights, as the release's do. Only the chosen conv's BN statistics move. The arguments and
  returns are `mixed_edge`'s.
  """
  relu_x = jax.nn.relu(x)

  def conv(i, make):
    def branch():
      y = make()[..., None, :]
      row = {name: stats[name][i:i + 1] for name in ("mean", "var")}
      y, (mean, var) = ops.batch_norm(y, row["mean"], row["var"],
                                      train=train or not track_running_stats, feature_ndim=2)
      if not track_running_stats:
        return y[..., 0, :], stats
      return y[..., 0, :], {"mean": stats["mean"].at[i].set(mean[0]),
                            "var": stats["var"].at[i].set(var[0])}
    return branch

  make = {"none": lambda: (jnp.zeros_like(x), stats), "skip_connect": lambda: (x, stats),
          "avg_pool_3x3": lambda: (ops.avg_pool_3x3(x, 1), stats),
          "nor_conv_1x1": conv(_CONVS.index("nor_conv_1x1"),
                               lambda: ops.pointwise(relu_x, conv1x1)),
          "nor_conv_3x3": conv(_CONVS.index("nor_conv_3x3"),
                               lambda: ops.conv2d(relu_x, conv3x3))}
  mix = mix.astype(x.dtype)
  k = jnp.argmax(mix)
  y, new = lax.switch(k, [make[op] for op in OPS])
  others = jnp.sum(mix) - mix[k]
  return mix[k] * y + others, new


class SearchCell201(nn.Module):
  """The 4-node cell, its 6 edges' weights stacked (6, ...) in `EDGES` order.

  With `partial_channels` k > 1 (PC-DARTS) each mixed op sees the first C/k channels of its
  input and the rest pass by, the two concatenated and channel-shuffled in k groups (the
  cell's edges all have stride 1: nothing is pooled); `edge_weights` (6,), when given,
  multiply each edge's output (PC-DARTS' edge normalisation, `node_softmax`).
  """

  train: bool
  track_running_stats: bool = True
  one_op: bool = False
  partial_channels: int = 1

  @nn.compact
  def __call__(self, x, weights, edge_weights=None):
    k = self.partial_channels
    c, e = x.shape[-1] // k, len(EDGES)
    conv1x1 = self.param("conv1x1", ops.torch_uniform(c), (e, c, c))
    conv3x3 = self.param("conv3x3", ops.torch_uniform(9 * c), (e, 3, 3, c, c))
    mean = self.variable("batch_stats", "mean", jnp.zeros, (e, len(_CONVS), c), jnp.float32)
    var = self.variable("batch_stats", "var", jnp.ones, (e, len(_CONVS), c), jnp.float32)
    nodes = jnp.zeros((NODES, *x.shape), x.dtype).at[0].set(x)

    def body(nodes, edge):
      (to, source), w, k1, k3, stats, *scale = edge
      edge_fn = one_op_edge if self.one_op else mixed_edge
      inputs = lax.dynamic_index_in_dim(nodes, source, keepdims=False)
      y, new = edge_fn(inputs[..., :c], w, k1.astype(x.dtype), k3.astype(x.dtype), stats,
                       train=self.train, track_running_stats=self.track_running_stats)
      if k > 1:
        y = channel_shuffle(jnp.concatenate([y, inputs[..., c:]], axis=-1), k)
      if scale:
        y = y * scale[0]
      total = lax.dynamic_index_in_dim(nodes, to, keepdims=False) + y
      return lax.dynamic_update_index_in_dim(nodes, total, to, 0), new

    # The edges run in order: every edge into node j comes before any edge out of it.
    edges = (tuple(jnp.asarray(v) for v in zip(*EDGES)), weights, conv1x1, conv3x3,
             {"mean": mean.value, "var": var.value}) + (
                 () if edge_weights is None else (edge_weights.astype(x.dtype),))
    nodes, new = lax.scan(body, nodes, edges)
    if self.train and self.is_mutable_collection("batch_stats") and not self.is_initializing():
      mean.value, var.value = new["mean"], new["var"]
    return nodes[-1]


class _ScannedCell(nn.Module):
  train: bool
  track_running_stats: bool = True
  one_op: bool = False
  partial_channels: int = 1

  @nn.compact
  def __call__(self, x, weights, edge_weights=None):
    return SearchCell201(self.train, self.track_running_stats, self.one_op,
                         self.partial_channels, name="cell")(x, weights, edge_weights), None


class ResidualReduction(nn.Module):
  """The stride-2 block between stages: ReLUConvBN 3x3 stride 2, ReLUConvBN 3x3, plus the
  input through a 2x2 average pool and a 1x1 conv."""

  features: int

  @nn.compact
  def __call__(self, x, train: bool):
    y = ops.ReLUConvBN(self.features, 3, 2, name="conv_a")(x, train)
    y = ops.ReLUConvBN(self.features, 3, 1, name="conv_b")(y, train)
    shortcut = lax.reduce_window(x, 0.0, lax.add, (1, 2, 2, 1), (1, 2, 2, 1), "VALID") / 4
    kernel = self.param("shortcut", ops.torch_uniform(x.shape[-1]),
                        (x.shape[-1], self.features))
    return y + ops.pointwise(shortcut, kernel)


class SearchNetwork201(nn.Module):
  """NAS-Bench-201's network with a mixed op on every edge (the supernet DARTS searches).

  Attributes:
    channels: C, the first stage's width (16 in the benchmark).
    cells_per_stage: N (5 in the benchmark).
    relax: the relaxation, `relax(alpha, key, epoch) -> mixing weights` (`darts_jax.relaxations`;
      DARTS' softmax by default).
    dtype: the compute dtype ("float32" | "bfloat16"), None for the images' dtype.
    track_running_stats: False: the cells' BN on batch statistics in evaluation too (the
      NATS-Bench searches); the other BN layers keep running statistics either way.
    one_op: compute only each edge's argmax op (`one_op_edge`), for relaxations whose
      mixing weights are one-hot in value (GDAS' `relaxations.gumbel_hard`).
    partial_channels: PC-DARTS' k: each mixed op on 1/k of the channels (`SearchCell201`);
      1: all (DARTS).
    edge_normalisation: PC-DARTS' edge weights: each edge's output times its node's softmax
      of the alphas' "cell_edges" (`node_softmax`), which the relaxation does not see.
  """

  channels: int = 16
  cells_per_stage: int = 5
  num_classes: int = 10
  relax: Callable = relaxations.softmax
  dtype: str | None = None
  track_running_stats: bool = True
  one_op: bool = False
  partial_channels: int = 1
  edge_normalisation: bool = False

  @nn.compact
  def __call__(self, images, alphas, train: bool = True, relax_key=None, epoch=0):
    x = images if self.dtype is None else images.astype(ops.compute_dtype(self.dtype))
    weights = relaxations.relax_all(self.relax, alphas, relax_key, epoch)["cell"]
    edge_weights = None
    if self.edge_normalisation:
      name = "cell" + EDGES_SUFFIX
      if name not in alphas:
        raise ValueError(f"SearchNetwork201(edge_normalisation=True) reads alphas[{name!r}], "
                         "(6,) edge parameters: pass init_alphas(key, edge_normalisation=True).")
      edge_weights = node_softmax(alphas[name])
    kernel = self.param("stem", ops.torch_uniform(9 * x.shape[-1]),
                        (3, 3, x.shape[-1], self.channels))
    x = ops.BatchNorm(affine=True, name="stem_bn")(ops.conv2d(x, kernel), train)
    for stage in range(3):
      if stage:
        x = ResidualReduction(self.channels * 2 ** stage, name=f"reduction_{stage}")(x, train)
      cells = nn.scan(_ScannedCell, variable_axes={"params": 0, "batch_stats": 0},
                      split_rngs={"params": True}, in_axes=nn.broadcast,
                      length=self.cells_per_stage)
      x, _ = cells(train, self.track_running_stats, self.one_op, self.partial_channels,
                   name=f"stage_{stage}")(x, weights, edge_weights)
    x = jax.nn.relu(ops.BatchNorm(affine=True, name="last_bn")(x, train))
    pooled = ops.at_least_float32(jnp.mean(x, axis=(1, 2)))
    c = pooled.shape[-1]
    kernel = self.param("classifier_kernel", ops.torch_uniform(c), (c, self.num_classes))
    bias = self.param("classifier_bias", ops.torch_uniform(c), (self.num_classes,))
    return pooled @ kernel + bias


def init_supernet(model: SearchNetwork201, seed: int, image_shape=(32, 32, 3)):
  """Returns (weights, batch_stats) of `model` from `seed`: PyTorch's default init.

  Convolution and linear weights U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (the classifier's bias
  with the classifier's fan-in), BN scale 1 and bias 0, running mean 0 and variance 1. The
  shapes come from `jax.eval_shape` and the values are drawn on the host with numpy: a jitted
  `model.init` would compile the network's RNG program, ~15 s on a CPU, for each run (and
  each seed of a many-seed search).
  """
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                             jnp.zeros((1, *image_shape), jnp.float32),
                                             init_alphas(jax.random.PRNGKey(0),
                                                         edge_normalisation=model.edge_normalisation),
                                             train=True))
  rng = np.random.default_rng(seed)
  classifier_fan_in = shapes["params"]["classifier_kernel"].shape[0]

  def value(path, leaf):
    name = path[-1].key
    if path[0].key == "batch_stats" or name in ("scale", "bias"):
      return jnp.full(leaf.shape, 1.0 if name in ("var", "scale") else 0.0, leaf.dtype)
    if name == "classifier_bias":
      fan_in = classifier_fan_in
    elif name in ("conv3x3", "stem", "kernel"):  # (..., k, k, C_in, C_out)
      fan_in = math.prod(leaf.shape[-4:-1])
    elif name in ("conv1x1", "shortcut", "classifier_kernel"):  # (..., C_in, C_out)
      fan_in = leaf.shape[-2]
    else:
      raise ValueError(f"init_supernet: no initialiser for the weight {name!r}")
    bound = 1.0 / math.sqrt(fan_in)
    return jnp.asarray(rng.uniform(-bound, bound, leaf.shape), leaf.dtype)

  variables = jax.tree_util.tree_map_with_path(value, shapes)
  return variables["params"], variables["batch_stats"]


def draw_cell(genotype, filename):
  """Draws a NAS-Bench-201 cell: nodes 0 (input) to 3 (output), an arrow per edge whose op
  is not `none`, labelled with the op."""
  from darts_jax.spaces import drawing  # matplotlib, only when drawing

  pos = {i: (1.6 * i, 0.0 if i in (0, NODES - 1) else (0.9 if i % 2 else -0.9))
         for i in range(NODES)}
  fig = drawing.figure(figsize=(2.2 * NODES, 4.0))
  ax = fig.subplots()
  ax.set_xlim(-0.6, 1.6 * (NODES - 1) + 0.6)
  ax.set_ylim(-2.0, 2.0)
  ax.axis("off")
  ax.set_title(str(genotype), fontsize=8)
  fig.tight_layout()
  colours = drawing.op_colours(OPS)
  for (to, source), op in zip(EDGES, genotype.ops):
    if op != "none":
      # Input to output runs straight, between the nodes above and below it.
      rad = 0.0 if (source, to) == (0, NODES - 1) else drawing.RAD
      drawing.arrow(ax, pos[source], pos[to], op.replace("_", " "), colours.get(op, "black"), rad)
  for node, (x, y) in pos.items():
    name = "input" if node == 0 else "output" if node == NODES - 1 else str(node)
    ax.text(x, y, name, ha="center", va="center", fontsize=12, zorder=3,
            bbox=dict(boxstyle="round", fc="lightblue" if node in (0, NODES - 1)
                      else "lightgrey"))
  fig.savefig(filename, dpi=100)
