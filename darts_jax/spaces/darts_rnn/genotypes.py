"""DARTS recurrent genotypes: the search space's ops, published cells, derivation from alphas.

A recurrent cell has 8 intermediate nodes; node i (1..8) applies one op to one predecessor
state (0 is the cell's input state), and the cell output h_t is the mean of the listed states
(docs/reference.md, "Recurrent (PTB) search space").
"""

from __future__ import annotations

import json
from typing import NamedTuple

import numpy as np

from darts_jax.errors import GenotypeError
from darts_jax.spaces.genotype_files import from_name_or_file


def _softmax(x):
  e = np.exp(x - x.max(axis=-1, keepdims=True))
  return e / e.sum(axis=-1, keepdims=True)


RNN_PRIMITIVES = ("none", "tanh", "relu", "sigmoid", "identity")  # the alpha columns
RNN_STEPS = 8  # intermediate nodes of a recurrent cell
RNN_NUM_EDGES = sum(range(1, RNN_STEPS + 1))  # 36: node i reads every earlier state


class RecurrentGenotype(NamedTuple):
  """A recurrent cell: for node i (1..8), `recurrent[i - 1] = (op, predecessor)` with the
  predecessor in 0..i-1 (0 is the cell's input state); `concat`: states averaged into h_t."""

  recurrent: tuple[tuple[str, int], ...]
  concat: tuple[int, ...]

  def validate(self) -> "RecurrentGenotype":
    """Checks op names, predecessors and the concat list; returns self."""
    for n, pair in enumerate(self.recurrent):
      if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
        raise GenotypeError(f"RecurrentGenotype.recurrent[{n}] must be an (op, predecessor) "
                            f"pair, got {pair!r}.")
      op, source = pair
      if op not in RNN_PRIMITIVES or op == "none":
        raise GenotypeError(f"Unknown recurrent op {op!r} in recurrent[{n}]; known ops: "
                            f"{', '.join(RNN_PRIMITIVES[1:])}.")
      if not (type(source) is int and 0 <= source <= n):
        raise GenotypeError(f"recurrent[{n}] = {pair!r}: node {n + 1} can only read states "
                            f"0..{n}.")
    states = len(self.recurrent) + 1
    if not self.concat or any(type(c) is not int or not 0 <= c < states
                              for c in self.concat):
      raise GenotypeError(f"RecurrentGenotype.concat={list(self.concat)!r} must list states "
                          f"in 0..{states - 1}.")
    return self

  def to_json(self) -> str:
    return json.dumps({"recurrent": [list(p) for p in self.recurrent],
                       "concat": list(self.concat)})

  @classmethod
  def from_json(cls, text: str) -> "RecurrentGenotype":
    try:
      data = json.loads(text)
      return cls(tuple((str(op), src) for op, src in data["recurrent"]),
                 tuple(data["concat"])).validate()
    except GenotypeError:
      raise
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
      raise GenotypeError(f"Recurrent genotype JSON is malformed ({e}); expected "
                          '{"recurrent": [["sigmoid", 0], ...], "concat": [1, ..., 8]}.') from None


_CONCAT = tuple(range(1, RNN_STEPS + 1))
RNN_DARTS_V1 = RecurrentGenotype(
    (("relu", 0), ("relu", 1), ("tanh", 2), ("relu", 3), ("relu", 4), ("identity", 1),
     ("relu", 5), ("relu", 1)), _CONCAT)
RNN_DARTS_V2 = RecurrentGenotype(
    (("sigmoid", 0), ("relu", 1), ("relu", 1), ("identity", 1), ("tanh", 2), ("sigmoid", 5),
     ("tanh", 3), ("relu", 5)), _CONCAT)
RNN_GENOTYPES = {"DARTS_V1": RNN_DARTS_V1, "DARTS_V2": RNN_DARTS_V2, "DARTS": RNN_DARTS_V2}


def derive_recurrent_genotype(alphas) -> RecurrentGenotype:
  """The official rule on softmax(alphas) (36, 5): per node, the predecessor whose strongest
  non-`none` weight is largest (ties to the lower index), and on it the strongest non-`none`
  op (ties to the first)."""
  weights = _softmax(np.asarray(alphas, dtype=np.float64))
  if weights.shape != (RNN_NUM_EDGES, len(RNN_PRIMITIVES)):
    raise ValueError(f"recurrent alphas must have shape ({RNN_NUM_EDGES}, "
                     f"{len(RNN_PRIMITIVES)}), got {weights.shape}.")
  ops = [k for k in range(len(RNN_PRIMITIVES)) if RNN_PRIMITIVES[k] != "none"]
  gene, start = [], 0
  for node in range(RNN_STEPS):
    rows = weights[start:start + node + 1]
    source = max(range(node + 1), key=lambda j: (max(rows[j][k] for k in ops), -j))
    best = max(ops, key=lambda k: (rows[source][k], -k))
    gene.append((RNN_PRIMITIVES[best], source))
    start += node + 1
  return RecurrentGenotype(tuple(gene), _CONCAT)


def recurrent_genotype_from_name_or_file(spec: str) -> RecurrentGenotype:
  """`"DARTS_V2"` (the published recurrent cell) or a path to a search's genotype.json."""
  return from_name_or_file(spec, RNN_GENOTYPES, RecurrentGenotype.from_json,
                            "recurrent genotype")
