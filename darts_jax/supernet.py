"""The DARTS CNN search network (supernet), laid out for the XLA compiler.

`SearchNetwork` is a Flax module applied functionally:

    logits, new_state = SearchNetwork().apply({"params": weights, "batch_stats": bn}, images,
                                             alphas, train=True, mutable=["batch_stats"])

with `alphas = {"normal": (14, 8), "reduce": (14, 8)}` an input, not module state.

Layout. A cell has 14 edges; edge (node i, state j) carries a mixed op over the 8 PRIMITIVES.
Instead of one module per op per edge, the edges are grouped by their *source* state: the
edges leaving state j (to every later node) share their input, so
  * the parameter-free ops (max/avg pool + BN) are computed once per source, not per edge;
  * the first depthwise+pointwise stage of every conv op of all those edges is ONE dense
    convolution with the edges' kernels side by side (on CPU), or one depthwise convolution;
  * every parameter of the E edges of a source is one stacked array, (E, ...).
So a cell is 5 source groups (E = 4, 4, 3, 2, 1 edges) instead of 14 x 8 op modules, and the
compiled program stays small. `MixedEdges_j` holds the edges leaving state j in target-node
order; `darts_jax.genotypes.edge_index(node, j)` gives the matching row of alphas.
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from darts_jax import ops
from darts_jax.genotypes import NUM_EDGES, PRIMITIVES, STEPS, edge_index

_CONV_OPS = {  # name: (kernel, dilation, stages); the two-stage ops first
    "sep_conv_3x3": (3, 1, 2),
    "sep_conv_5x5": (5, 1, 2),
    "dil_conv_3x3": (3, 2, 1),
    "dil_conv_5x5": (5, 2, 1),
}
_COLUMN = {name: k for k, name in enumerate(PRIMITIVES)}


class MixedEdges(nn.Module):
  """The mixed ops of the E edges leaving one state, all applied to that state.

  Attributes:
    num_edges: E.
    stride: 2 for the edges leaving a reduction cell's inputs, else 1.
    impl: depthwise formulation, see `darts_jax.ops`.
  """

  num_edges: int
  stride: int
  impl: str

  @nn.compact
  def __call__(self, x, weights, train: bool):
    """x: (N, H, W, C); weights: (E, 8) softmax(alpha) rows. Returns (N, H', W', E, C).

    Ops of the same shape share one BN call over a stacked op axis (per-channel statistics
    are unchanged by stacking), which keeps the number of compiled kernels down.
    """
    e, c = self.num_edges, x.shape[-1]
    bn = lambda name, y: ops.BatchNorm(feature_ndim=y.ndim - 3, name=name)(y, train)
    column = lambda op: weights[:, _COLUMN[op]]  # (E,)

    # `none` is zero: it adds nothing (its weight still takes its share of the softmax).
    # Pools have no parameters, so one pooled map (and its BN) serves every edge.
    pools = bn("pool_bn", jnp.stack([ops.max_pool_3x3(x, self.stride),
                                     ops.avg_pool_3x3(x, self.stride)], axis=-2))
    out = jnp.einsum("nhwpc,pe->nhwec", pools,
                     jnp.stack([column("max_pool_3x3"), column("avg_pool_3x3")]))
    if self.stride == 1:
      out += column("skip_connect")[:, None] * x[..., None, :]
    else:
      conv = lambda name: _param(self, name, (e, c, c // 2))
      reduced = ops.factorized_reduce_convs(x, conv("skip_conv1"), conv("skip_conv2"))
      out += column("skip_connect")[:, None] * bn("skip_bn", reduced)

    # Stage 1 of every conv op: ReLU -> depthwise (stride) -> 1x1 -> BN.
    relu_x = jax.nn.relu(x)
    dw = lambda op, stage, k: _param(self, f"{op}_dw{stage}", (e, k, k, c))
    pw = lambda op, stage: _param(self, f"{op}_pw{stage}", (e, c, c))
    stage1 = bn("bn1", jnp.stack([
        ops.separable_replicated(relu_x, dw(op, 1, k), pw(op, 1), self.stride, dilation,
                                 self.impl)
        for op, (k, dilation, _) in _CONV_OPS.items()], axis=-3))  # (N, H', W', 4, E, C)
    # Stage 2 of the separable convs: ReLU -> depthwise -> 1x1 -> BN.
    stage2 = bn("bn2", jnp.stack([
        ops.separable_separate(jax.nn.relu(stage1[..., i, :, :]), dw(op, 2, k), pw(op, 2), 1,
                               dilation, self.impl)
        for i, (op, (k, dilation, stages)) in enumerate(_CONV_OPS.items()) if stages == 2],
        axis=-3))  # (N, H', W', 2, E, C)
    finals = [stage2[..., 0, :, :], stage2[..., 1, :, :], stage1[..., 2, :, :],
              stage1[..., 3, :, :]]
    mix = jnp.stack([column(op) for op in _CONV_OPS])  # (4, E)
    return out + jnp.einsum("onhwec,oe->nhwec", jnp.stack(finals), mix)


class ReLUConvBN1x1(nn.Module):
  """ReLU -> 1x1 conv (no bias) -> BN without affine: the cell's input preprocessing."""

  features: int

  @nn.compact
  def __call__(self, x, train: bool):
    kernel = _param(self, "kernel", (x.shape[-1], self.features))
    return ops.BatchNorm(name="bn")(jax.nn.relu(x) @ kernel, train)


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
  """Two inputs, STEPS nodes, 14 mixed edges; output: the nodes concatenated."""

  features: int
  reduction: bool
  reduction_prev: bool
  impl: str

  @nn.compact
  def __call__(self, s0, s1, weights, train: bool):
    if self.reduction_prev:
      s0 = FactorizedReduce(self.features, name="preprocess0")(s0, train)
    else:
      s0 = ReLUConvBN1x1(self.features, name="preprocess0")(s0, train)
    s1 = ReLUConvBN1x1(self.features, name="preprocess1")(s1, train)

    nodes = [None] * STEPS
    states = [s0, s1]
    for source in range(2 + STEPS - 1):
      if source >= 2:  # every edge into this node has been added: the node is complete
        states.append(nodes[source - 2])
      targets = list(range(max(0, source - 1), STEPS))
      rows = jnp.asarray([edge_index(i, source) for i in targets])
      stride = 2 if self.reduction and source < 2 else 1
      out = MixedEdges(len(targets), stride, self.impl, name=f"edges_from_{source}")(
          states[source], weights[rows], train)
      for slot, node in enumerate(targets):
        y = out[..., slot, :]
        nodes[node] = y if nodes[node] is None else nodes[node] + y
    return jnp.concatenate(nodes, axis=-1)


class SearchNetwork(nn.Module):
  """DARTS' CNN supernet: stem, `layers` cells (reductions at layers//3, 2*layers//3), head.

  Attributes:
    channels: C (16 in the paper).
    num_classes: 10 for CIFAR-10.
    layers: number of cells (8).
    stem_multiplier: the stem has stem_multiplier * C channels (3).
    impl: "dense" | "grouped" depthwise formulation; None picks by backend.
  """

  channels: int = 16
  num_classes: int = 10
  layers: int = 8
  stem_multiplier: int = 3
  impl: str | None = None

  @nn.compact
  def __call__(self, images, alphas, train: bool = True):
    impl = self.impl or ops.default_depthwise_impl()
    if impl not in ops.DEPTHWISE_IMPLS:
      raise ValueError(f"Unknown depthwise impl {impl!r}; expected one of {ops.DEPTHWISE_IMPLS}.")
    # The mixing weights follow the activations' dtype, whatever precision alphas are kept in.
    weights = {kind: jax.nn.softmax(alphas[kind], axis=-1).astype(images.dtype)
               for kind in ("normal", "reduce")}
    c_stem = self.stem_multiplier * self.channels
    stem = _param(self, "stem_conv", (3, 3, images.shape[-1], c_stem))
    s0 = s1 = ops.BatchNorm(affine=True, name="stem_bn")(ops.conv2d(images, stem), train)

    c, reduction_prev = self.channels, False
    for i in range(self.layers):
      reduction = i in reduction_cells(self.layers)
      c = c * 2 if reduction else c
      cell = SearchCell(c, reduction, reduction_prev, impl, name=f"cell_{i}")
      s0, s1 = s1, cell(s0, s1, weights["reduce" if reduction else "normal"], train)
      reduction_prev = reduction

    pooled = jnp.mean(s1, axis=(1, 2))
    kernel = _param(self, "classifier_kernel", (pooled.shape[-1], self.num_classes))
    bias = _param(self, "classifier_bias", (self.num_classes,), fan_in=pooled.shape[-1])
    return pooled @ kernel + bias


def reduction_cells(layers: int) -> Sequence[int]:
  return (layers // 3, 2 * layers // 3)


def init_alphas(key, scale: float = 1e-3):
  """DARTS' alpha initialisation, 1e-3 * N(0, 1), one (14, 8) matrix per cell type."""
  k_normal, k_reduce = jax.random.split(key)
  shape = (NUM_EDGES, len(PRIMITIVES))
  return {"normal": scale * jax.random.normal(k_normal, shape),
          "reduce": scale * jax.random.normal(k_reduce, shape)}


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
  alphas = init_alphas(jax.random.PRNGKey(0))
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                             jnp.zeros((1, *image_shape), jnp.float32), alphas,
                                             train=True))
  rng = np.random.default_rng(seed)
  fan_in_of_classifier = shapes["params"]["classifier_kernel"].shape[0]

  def value(path, leaf):
    name = getattr(path[-1], "key", str(path[-1]))
    if path[0].key == "batch_stats" or name in ("scale", "bias"):
      fill = 1.0 if name in ("var", "scale") else 0.0
      return jnp.full(leaf.shape, fill, leaf.dtype)
    fan_in = fan_in_of_classifier if name == "classifier_bias" else _fan_in(name, leaf.shape)
    bound = 1.0 / math.sqrt(fan_in)
    return jnp.asarray(rng.uniform(-bound, bound, leaf.shape), leaf.dtype)

  variables = jax.tree_util.tree_map_with_path(value, shapes)
  return variables["params"], variables["batch_stats"]
