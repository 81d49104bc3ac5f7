"""The DARTS evaluation networks: a genotype's cell stacked deep and trained from scratch.

    model = NetworkCIFAR(DARTS_V2)                  # 20 cells, C=36, auxiliary head
    variables = init_network(model, seed=0)
    (logits, aux_logits), updates = model.apply(
        variables, images, train=True, drop_path_rate=0.2 * epoch / epochs,
        rngs={"drop_path": key}, mutable=["batch_stats"])

The ops are a registry, `OPS[name](features, stride, impl)`, so a genotype is data: an unknown
op name is a `GenotypeError` naming the known ones. Architecture as docs/reference.md
("CIFAR-10 evaluation network", "ImageNet evaluation network"); where it is silent, as the
official release (quark0/darts cnn/model.py): eval-net BN layers
are affine, pools have no BN (the search net's pool BN belongs to its mixed op), the
auxiliary head runs only in training, and the reported parameter count leaves it out.

Compile time, speed and memory (benchmarks/README.md). Consecutive cells of the same shape
(cells 2-5, 8-12 and 15-19 of the CIFAR network) are one `nn.scan` over stacked weights, so XLA
compiles one copy of each distinct cell rather than 20 (15 s instead of 32 s on 2 CPU cores). Each
cell is rematerialised in the backward pass (`remat=True`): half the activation memory, and
on CPU no slower. On CPU, depthwise convolutions are shifted-window sums (`ops.depthwise`).

Mixed precision: `NetworkCIFAR(genotype, dtype="bfloat16")` computes in bfloat16 with float32
parameters and BN statistics and returns float32 logits (as `darts_jax.spaces.darts_cnn.supernet`).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from darts_jax.spaces import ops
from darts_jax.spaces.ops import ReLUConvBN
from darts_jax.spaces.darts_cnn.genotypes import Genotype, PRIMITIVES
from darts_jax.errors import GenotypeError


default_impl = ops.default_depthwise_impl  # the supernet's and the network's are one choice


def _kernel(module: nn.Module, name: str, shape, fan_in: int):
  # PyTorch's default init, U(+-1/sqrt(fan_in)): what the official release trains from.
  return module.param(name, ops.torch_uniform(fan_in), shape)


class SepConv(nn.Module):
  """DARTS' sep_conv_k (two ReLU-depthwise-1x1-BN stages) or dil_conv_k (one, dilation 2)."""

  features: int
  kernel_size: int
  stride: int
  dilation: int
  stages: int
  impl: str

  @nn.compact
  def __call__(self, x, train: bool):
    k, c = self.kernel_size, x.shape[-1]
    for stage in range(1, self.stages + 1):
      dw = _kernel(self, f"dw{stage}", (k, k, c), k * k)
      pw = _kernel(self, f"pw{stage}", (c, self.features if stage == self.stages else c), c)
      stride = self.stride if stage == 1 else 1
      x = ops.separable(jax.nn.relu(x), dw, pw, stride, self.dilation, self.impl)
      x = ops.BatchNorm(affine=True, name=f"bn{stage}")(x, train)
    return x


class FactorizedReduce(nn.Module):
  """Stride-2 skip: ReLU, two 1x1 stride-2 convs (x and x shifted a pixel), concat, BN."""

  features: int

  @nn.compact
  def __call__(self, x, train: bool):
    c = x.shape[-1]
    conv1 = _kernel(self, "conv1", (c, self.features // 2), c)
    conv2 = _kernel(self, "conv2", (c, self.features // 2), c)
    return ops.BatchNorm(affine=True, name="bn")(ops.factorized_reduce_convs(x, conv1, conv2),
                                                 train)


class Pool(nn.Module):
  kind: str
  stride: int

  def __call__(self, x, train: bool):
    del train
    pool = ops.max_pool_3x3 if self.kind == "max" else ops.avg_pool_3x3
    return pool(x, self.stride)


class Identity(nn.Module):
  def __call__(self, x, train: bool):
    del train
    return x


class Zero(nn.Module):
  stride: int

  def __call__(self, x, train: bool):
    del train
    return jnp.zeros_like(x[:, ::self.stride, ::self.stride])


# name -> (features, stride, impl, module name) -> module. The registry is the search space:
# every PRIMITIVES entry has one, and a genotype names ops by these keys.
OPS: dict[str, Callable[..., nn.Module]] = {
    "none": lambda c, stride, impl, name: Zero(stride, name=name),
    "max_pool_3x3": lambda c, stride, impl, name: Pool("max", stride, name=name),
    "avg_pool_3x3": lambda c, stride, impl, name: Pool("avg", stride, name=name),
    "skip_connect": lambda c, stride, impl, name: (
        Identity(name=name) if stride == 1 else FactorizedReduce(c, name=name)),
    "sep_conv_3x3": lambda c, stride, impl, name: SepConv(c, 3, stride, 1, 2, impl, name=name),
    "sep_conv_5x5": lambda c, stride, impl, name: SepConv(c, 5, stride, 1, 2, impl, name=name),
    "dil_conv_3x3": lambda c, stride, impl, name: SepConv(c, 3, stride, 2, 1, impl, name=name),
    "dil_conv_5x5": lambda c, stride, impl, name: SepConv(c, 5, stride, 2, 1, impl, name=name),
}
assert tuple(OPS) == PRIMITIVES


def drop_path_scale(key, rate, shape, dtype=jnp.float32):
  """Per-sample factors of drop path: 0 with probability `rate`, else 1 / (1 - rate), so
  the expectation is unchanged (the official `drop_path`: one Bernoulli per sample)."""
  # Drawn in at least float32: a bfloat16 keep probability (0.8 -> 0.80078125) would drop
  # other samples than the float32 network does from the same key.
  keep = 1.0 - jnp.asarray(rate, jnp.promote_types(dtype, jnp.float32))
  return jnp.where(jax.random.bernoulli(key, keep, shape), 1.0 / keep, 0.0).astype(dtype)


def drop_path(x, rate, key):
  """Zeroes whole samples of x with probability `rate`, scaling the rest by 1 / (1 - rate)."""
  return x * drop_path_scale(key, rate, (x.shape[0],) + (1,) * (x.ndim - 1), x.dtype)


class Cell(nn.Module):
  """One cell of a genotype: preprocess two inputs, 4 nodes of two ops each, concat."""

  pairs: tuple
  concat: tuple
  features: int
  reduction: bool
  reduction_prev: bool
  impl: str

  @nn.compact
  def __call__(self, s0, s1, train: bool, drop_path_rate=None):
    c = self.features
    s0 = (FactorizedReduce(c, name="preprocess0") if self.reduction_prev
          else ReLUConvBN(c, name="preprocess0"))(s0, train)
    s1 = ReLUConvBN(c, name="preprocess1")(s1, train)
    ops_ = [OPS[name](c, 2 if self.reduction and source < 2 else 1, self.impl,
                      f"edge{e}_{name}") for e, (name, source) in enumerate(self.pairs)]
    # Drop path on every op but the identity (docs/reference.md, "CIFAR-10 evaluation
    # network"; a stride-2 skip is a conv), with
    # one random draw for the whole cell: per-op draws cost more than the masking itself.
    dropped = [e for e, op in enumerate(ops_) if not isinstance(op, Identity)]
    masks = None
    if train and drop_path_rate is not None and dropped:
      masks = drop_path_scale(self.make_rng("drop_path"), drop_path_rate,
                              (len(ops_), s1.shape[0], 1, 1, 1), s1.dtype)
    states = [s0, s1]
    for node in range(len(self.pairs) // 2):
      total = 0
      for e in (2 * node, 2 * node + 1):
        h = ops_[e](states[self.pairs[e][1]], train)
        if masks is not None and e in dropped:
          h = h * masks[e]
        total = total + h
      states.append(total)
    return jnp.concatenate([states[i] for i in self.concat], axis=-1)


def _cell_class(remat: bool):
  # Rematerialised, a cell keeps only its inputs for the backward pass and recomputes the
  # rest: the activation memory of one cell instead of all of them, for one more forward.
  return nn.remat(Cell, static_argnums=(3,)) if remat else Cell


class _ScannedCell(nn.Module):
  """`Cell` as a scan body: carry (s0, s1) -> (s1, cell output)."""

  cell: dict
  train: bool
  remat: bool

  @nn.compact
  def __call__(self, carry, drop_path_rate):
    s0, s1 = carry
    out = _cell_class(self.remat)(**self.cell, name="cell")(s0, s1, self.train, drop_path_rate)
    return (s1, out), None


class AuxiliaryHead(nn.Module):
  """ReLU, avg pool 5 (stride 3 on CIFAR, 2 on ImageNet), 1x1 conv 128, BN, ReLU, 2x2 conv
  768, [BN: CIFAR only], ReLU, linear."""

  num_classes: int
  pool_stride: int
  bn_after_768: bool

  @nn.compact
  def __call__(self, x, train: bool):
    x = jax.nn.relu(x)
    window = ((1, 5, 5, 1), (1, self.pool_stride, self.pool_stride, 1), "VALID")
    x = lax.reduce_window(x, 0.0, lax.add, *window) / 25
    c = x.shape[-1]
    x = ops.pointwise(x, _kernel(self, "conv1", (c, 128), c))
    x = jax.nn.relu(ops.BatchNorm(affine=True, name="bn1")(x, train))
    x = ops.conv2d(x, _kernel(self, "conv2", (2, 2, 128, 768), 4 * 128))
    if self.bn_after_768:
      x = ops.BatchNorm(affine=True, name="bn2")(x, train)
    x = jax.nn.relu(x).reshape(x.shape[0], -1)
    return _Linear(self.num_classes, name="classifier")(x)


class _Linear(nn.Module):
  features: int

  @nn.compact
  def __call__(self, x):
    # Float32 logits from any compute dtype, for the loss; the layer itself is tiny.
    x = ops.at_least_float32(x)
    c = x.shape[-1]
    return x @ _kernel(self, "kernel", (c, self.features), c) + _kernel(
        self, "bias", (self.features,), c)


def cell_plan(genotype: Genotype, channels: int, layers: int, c_stem: tuple[int, int],
              reduction_prev: bool):
  """Each cell's configuration and input widths, in order: a list of (kwargs, c_in0, c_in1)."""
  plan, (c_pp, c_p), c = [], c_stem, channels
  for i in range(layers):
    reduction = i in (layers // 3, 2 * layers // 3)
    c = 2 * c if reduction else c
    pairs, concat = ((genotype.reduce, genotype.reduce_concat) if reduction
                     else (genotype.normal, genotype.normal_concat))
    plan.append((dict(pairs=tuple(map(tuple, pairs)), concat=tuple(concat), features=c,
                      reduction=reduction, reduction_prev=reduction_prev), c_pp, c_p))
    c_pp, c_p, reduction_prev = c_p, len(concat) * c, reduction
  return plan


class _Network(nn.Module):
  """Shared body of NetworkCIFAR and NetworkImageNet."""

  genotype: Genotype
  channels: int
  num_classes: int
  layers: int
  auxiliary: bool
  impl: str | None
  scan_cells: bool
  remat: bool
  # The compute dtype, "float32" | "bfloat16" (ops.COMPUTE_DTYPES); None: the images' dtype.
  dtype: Any = None

  def stems(self, images, train):
    raise NotImplementedError

  def aux_head(self) -> AuxiliaryHead:
    raise NotImplementedError

  @nn.compact
  def __call__(self, images, train: bool = False, drop_path_rate=None):
    """Returns (logits, auxiliary logits or None); drop_path_rate may be a traced scalar."""
    _check_genotype(self.genotype)
    impl = self.impl or default_impl()
    if self.dtype is not None:
      images = images.astype(ops.compute_dtype(self.dtype))
    s0, s1, reduction_prev = self.stems(images, train)
    plan = cell_plan(self.genotype, self.channels, self.layers,
                     (s0.shape[-1], s1.shape[-1]), reduction_prev)
    aux_after = 2 * self.layers // 3
    aux_logits = None
    i = 0
    while i < self.layers:
      # A run of same-shaped cells (same config, inputs as wide as the outputs) is one scan;
      # it stops at the auxiliary head's cell, whose output the head reads.
      j = i + 1
      while (self.scan_cells and j < self.layers and j - 1 != aux_after
             and plan[j][0] == plan[i][0] and plan[j][1:] == plan[i][1:]):
        j += 1
      cell = {**plan[i][0], "impl": impl}
      if j - i == 1:
        s0, s1 = s1, _cell_class(self.remat)(**cell, name=f"cell_{i}")(s0, s1, train,
                                                                        drop_path_rate)
      else:
        run = nn.scan(_ScannedCell, variable_axes={"params": 0, "batch_stats": 0},
                      split_rngs={"params": True, "drop_path": True}, in_axes=nn.broadcast,
                      length=j - i)
        (s0, s1), _ = run(cell, train, self.remat, name=f"cells_{i}_{j - 1}")(
            (s0, s1), drop_path_rate)
      if self.auxiliary and train and i <= aux_after < j:
        aux_logits = self.aux_head()(s1, train)
      i = j
    pooled = jnp.mean(s1, axis=(1, 2))  # = the official AdaptiveAvgPool / AvgPool2d(7)
    return _Linear(self.num_classes, name="classifier")(pooled), aux_logits


class NetworkCIFAR(_Network):
  """DARTS' CIFAR-10 evaluation network: stem conv 3x3 -> 3C, BN; `layers` cells with
  reductions at layers//3 and 2*layers//3; auxiliary head after cell 2*layers//3."""

  channels: int = 36
  num_classes: int = 10
  layers: int = 20
  auxiliary: bool = True
  impl: str | None = None
  scan_cells: bool = True
  remat: bool = True
  stem_multiplier: int = 3

  def stems(self, images, train):
    c, c_in = self.stem_multiplier * self.channels, images.shape[-1]
    x = ops.conv2d(images, _kernel(self, "stem_conv", (3, 3, c_in, c), 9 * c_in))
    x = ops.BatchNorm(affine=True, name="stem_bn")(x, train)
    return x, x, False

  def aux_head(self):
    return AuxiliaryHead(self.num_classes, 3, True, name="auxiliary")


class NetworkImageNet(_Network):
  """DARTS' ImageNet (mobile setting) network: three stride-2 stem convs in two stems, then
  `layers` cells; the first cell sees stem0 through a FactorizedReduce."""

  channels: int = 48
  num_classes: int = 1000
  layers: int = 14
  auxiliary: bool = True
  impl: str | None = None
  scan_cells: bool = True
  remat: bool = True

  def stems(self, images, train):
    c, c_in = self.channels, images.shape[-1]
    bn = lambda name, x: ops.BatchNorm(affine=True, name=name)(x, train)
    x = ops.conv2d(images, _kernel(self, "stem0_conv1", (3, 3, c_in, c // 2), 9 * c_in), 2)
    x = jax.nn.relu(bn("stem0_bn1", x))
    s0 = bn("stem0_bn2", ops.conv2d(x, _kernel(self, "stem0_conv2", (3, 3, c // 2, c),
                                                 9 * (c // 2)), 2))
    s1 = bn("stem1_bn", ops.conv2d(jax.nn.relu(s0), _kernel(self, "stem1_conv", (3, 3, c, c),
                                                            9 * c), 2))
    return s0, s1, True

  def aux_head(self):
    return AuxiliaryHead(self.num_classes, 2, False, name="auxiliary")


def _check_genotype(genotype: Genotype):
  if not isinstance(genotype, Genotype):
    raise GenotypeError(f"Expected a Genotype, got {type(genotype).__name__}.")
  genotype.validate()


def init_network(model: _Network, seed: int, image_shape=(32, 32, 3)) -> dict[str, Any]:
  """`{"params", "batch_stats"}` of `model`, auxiliary head included, from `seed`."""
  images = jnp.zeros((1, *image_shape), jnp.float32)
  keys = {"params": jax.random.PRNGKey(seed), "drop_path": jax.random.PRNGKey(0)}
  return jax.jit(lambda: model.init(keys, images, train=True))()


def count_params(params, include_auxiliary: bool = False) -> int:
  """Number of weights; like the official count, without the auxiliary head by default."""
  return sum(math.prod(x.shape) for path, x in jax.tree_util.tree_leaves_with_path(params)
             if include_auxiliary or getattr(path[0], "key", None) != "auxiliary")


def count_mult_adds(model: _Network, image_shape) -> int:
  """Multiply-adds of one image's forward pass (evaluation mode, no auxiliary head), counted
  as the papers do: convolutions and matrix products only, depthwise convolutions at their
  true cost (the model is traced with native grouped convolutions whatever the backend)."""
  model = model.clone(impl="grouped")
  variables = jax.eval_shape(lambda: init_network(model, 0, tuple(image_shape)))
  jaxpr = jax.make_jaxpr(lambda v, x: model.apply(v, x, train=False))(
      variables, jax.ShapeDtypeStruct((1, *image_shape), jnp.float32))
  return _jaxpr_mult_adds(jaxpr.jaxpr)


def _jaxpr_mult_adds(jaxpr) -> int:
  total = 0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "conv_general_dilated":
      out, rhs = eqn.outvars[0].aval, eqn.invars[1].aval
      spec = eqn.params["dimension_numbers"].rhs_spec  # (out, in, *spatial) positions
      per_output = math.prod(rhs.shape[d] for d in spec[1:])
      total += math.prod(out.shape) * per_output
    elif name == "dot_general":
      (contract, _), _ = eqn.params["dimension_numbers"]
      lhs = eqn.invars[0].aval
      total += math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs.shape[d] for d in contract)
    repeat = eqn.params.get("length", 1) if name == "scan" else 1
    for param in eqn.params.values():
      for sub in param if isinstance(param, (tuple, list)) else (param,):
        inner = getattr(sub, "jaxpr", sub)
        if hasattr(inner, "eqns"):
          total += repeat * _jaxpr_mult_adds(inner)
  return total
