"""DARTS CNN genotypes: the search space's op registry, published cells, derivation from alphas.

A genotype lists, for each of a cell's 4 intermediate nodes, its two kept inputs as
`(op_name, input_index)` pairs (inputs 0 and 1 are the cell inputs, 2.. the earlier nodes),
and which states are concatenated into the cell output.
"""

from __future__ import annotations

import json
from typing import NamedTuple

import numpy as np

from darts_jax.errors import GenotypeError
from darts_jax.spaces.genotype_files import from_name_or_file

# The order fixes the alpha columns (docs/reference.md, "CNN search space").
PRIMITIVES = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)
STEPS = 4  # intermediate nodes per cell
NUM_EDGES = sum(2 + i for i in range(STEPS))  # 14


def edge_index(node: int, source: int) -> int:
  """Row of `alphas` for the edge into `node` (0..3) from state `source` (< 2 + node)."""
  return sum(2 + i for i in range(node)) + source


class Genotype(NamedTuple):
  normal: tuple[tuple[str, int], ...]
  normal_concat: tuple[int, ...]
  reduce: tuple[tuple[str, int], ...]
  reduce_concat: tuple[int, ...]

  def validate(self) -> "Genotype":
    """Checks op names, input indices and concat lists; returns self."""
    for kind in ("normal", "reduce"):
      pairs, concat = getattr(self, kind), getattr(self, kind + "_concat")
      if len(pairs) % 2:
        raise GenotypeError(f"Genotype.{kind} needs two (op, input) pairs per node, got "
                            f"{len(pairs)} pairs.")
      for n, pair in enumerate(pairs):
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
          raise GenotypeError(f"Genotype.{kind}[{n}] must be an (op, input) pair, got {pair!r}.")
        op, source = pair
        if op not in PRIMITIVES:
          raise GenotypeError(f"Unknown op {op!r} in Genotype.{kind}[{n}]; known ops: "
                              f"{', '.join(PRIMITIVES)}.")
        if not (type(source) is int and 0 <= source < 2 + n // 2):
          raise GenotypeError(f"Genotype.{kind}[{n}] = {pair!r}: node {n // 2} can only take "
                              f"inputs 0..{1 + n // 2}.")
      states = 2 + len(pairs) // 2
      if not concat or any(type(c) is not int or not 0 <= c < states for c in concat):
        raise GenotypeError(f"Genotype.{kind}_concat={list(concat)!r} must list states in "
                            f"0..{states - 1}.")
    return self

  def to_json(self) -> str:
    """`{"normal": [["sep_conv_3x3", 0], ...], "normal_concat": [2, 3, 4, 5], ...}`."""
    return json.dumps({k: [list(p) if isinstance(p, tuple) else p for p in v]
                       for k, v in self._asdict().items()})

  @classmethod
  def from_json(cls, text: str) -> "Genotype":
    """Parses `to_json`'s form; raises GenotypeError naming what is wrong."""
    try:
      data = json.loads(text)
    except json.JSONDecodeError as e:
      raise GenotypeError(f"Genotype JSON is malformed ({e}): a truncated or hand-edited file? "
                          "Use the genotype.json a search wrote.") from None
    if not isinstance(data, dict) or set(data) != set(cls._fields):
      raise GenotypeError(f"Genotype JSON must be an object with exactly the keys "
                          f"{', '.join(cls._fields)}.")
    try:
      return cls(
          normal=tuple((str(op), src) for op, src in data["normal"]),
          normal_concat=tuple(data["normal_concat"]),
          reduce=tuple((str(op), src) for op, src in data["reduce"]),
          reduce_concat=tuple(data["reduce_concat"]),
      ).validate()
    except (TypeError, ValueError) as e:
      if isinstance(e, GenotypeError):
        raise
      raise GenotypeError(f"Genotype JSON has the wrong shape: {e}; expected e.g. "
                          '{"normal": [["sep_conv_3x3", 0], ...], "normal_concat": [2, 3, 4, 5], '
                          "...}.") from None


DARTS_V1 = Genotype(
    normal=(("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 0), ("sep_conv_3x3", 1),
            ("skip_connect", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 2)),
    normal_concat=(2, 3, 4, 5),
    reduce=(("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 0),
            ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("avg_pool_3x3", 0)),
    reduce_concat=(2, 3, 4, 5),
)
DARTS_V2 = Genotype(
    normal=(("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)),
    normal_concat=(2, 3, 4, 5),
    reduce=(("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
            ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)),
    reduce_concat=(2, 3, 4, 5),
)
GENOTYPES = {"DARTS_V1": DARTS_V1, "DARTS_V2": DARTS_V2, "DARTS": DARTS_V2}


def _softmax(x):
  e = np.exp(x - x.max(axis=-1, keepdims=True))
  return e / e.sum(axis=-1, keepdims=True)


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


SCORES = {"softmax": _softmax, "sigmoid": _sigmoid}


def _node_softmax(betas):
  """PC-DARTS' edge weights: softmax of the (14,) edge parameters over each node's inputs."""
  betas = np.asarray(betas, dtype=np.float64)
  if betas.shape != (NUM_EDGES,):
    raise ValueError(f"edge parameters must have shape ({NUM_EDGES},), got {betas.shape}.")
  return np.concatenate([_softmax(betas[edge_index(node, 0):edge_index(node, 0) + 2 + node])
                         for node in range(STEPS)])


def _derive_cell(alpha, primitives=PRIMITIVES, scores="softmax",
                 edges=None) -> tuple[tuple[str, int], ...]:
  weights = SCORES[scores](np.asarray(alpha, dtype=np.float64))
  if weights.shape != (NUM_EDGES, len(primitives)):
    raise ValueError(f"alphas must have shape ({NUM_EDGES}, {len(primitives)}), got "
                     f"{weights.shape}.")
  if edges is not None:  # PC-DARTS: each row scaled by its edge's weight
    weights = weights * _node_softmax(edges)[:, None]
  none = primitives.index("none") if "none" in primitives else -1
  gene = []
  for node in range(STEPS):
    rows = weights[edge_index(node, 0):edge_index(node, 0) + 2 + node]
    strength = [max(w for k, w in enumerate(row) if k != none) for row in rows]
    # Python's sort is stable, so equal strengths keep the lower input index first.
    kept = sorted(range(2 + node), key=lambda j: -strength[j])[:2]
    for j in kept:
      best = max((k for k in range(len(primitives)) if k != none),
                 key=lambda k: (rows[j][k], -k))  # ties to the first op
      gene.append((primitives[best], j))
  return tuple(gene)


def derive_genotype(alphas_normal, alphas_reduce, primitives=PRIMITIVES,
                    scores="softmax", edges_normal=None, edges_reduce=None) -> Genotype:
  """The official derivation rule on softmax(alphas) (docs/reference.md, "CNN genotype
  derivation").

  Per node, keep the 2 incoming edges whose strongest non-`none` weight is largest (ties to
  the lower input index), listed strongest first as the official code does; on each kept edge
  take the strongest non-`none` op (ties to the first). `none` stays in the softmax.
  `primitives`: the alpha columns (DARTS' 8; without `none`, every op competes). `scores`:
  the weights the rule ranks, "softmax" (DARTS) or "sigmoid" (FairDARTS' independent
  sigmoid(alpha), xiaomi-automl/FairDARTS, fairdarts/utils.py `parse`: within an edge the
  same op, across edges a different ranking). `edges_normal`, `edges_reduce`: PC-DARTS' (14,)
  edge parameters; each row's weights are then multiplied by the edge's softmax over its
  node's inputs before the rule (yuhuixu1993/PC-DARTS, model_search.py `genotype`).
  """
  concat = tuple(range(2, 2 + STEPS))
  return Genotype(_derive_cell(alphas_normal, primitives, scores, edges_normal), concat,
                  _derive_cell(alphas_reduce, primitives, scores, edges_reduce), concat)


def genotype_from_name_or_file(spec: str) -> Genotype:
  """`"DARTS_V2"` (a published genotype) or a path to a `genotype.json` a search wrote."""
  return from_name_or_file(spec, GENOTYPES, Genotype.from_json, "genotype")
