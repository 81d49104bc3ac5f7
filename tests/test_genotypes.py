"""Genotypes: published cells, JSON round trip, derivation from hand-built alphas, errors."""

import json

import numpy as np
import pytest

from darts_jax.spaces.darts_cnn import genotypes
from darts_jax.spaces.darts_cnn.genotypes import (DARTS_V1, DARTS_V2, PRIMITIVES, Genotype,
                                                  derive_genotype, edge_index)
from darts_jax.errors import GenotypeError


def test_primitives_and_edges_follow_the_reference():
  assert PRIMITIVES == ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
                        "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")
  assert genotypes.NUM_EDGES == 14
  assert [edge_index(i, j) for i in range(4) for j in range(2 + i)] == list(range(14))


def test_published_genotypes():
  assert DARTS_V2.normal[:4] == (("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
                                 ("sep_conv_3x3", 0), ("sep_conv_3x3", 1))
  assert DARTS_V2.normal[7] == ("dil_conv_3x3", 2)
  assert DARTS_V2.reduce[7] == ("max_pool_3x3", 1)
  assert DARTS_V1.normal[0] == ("sep_conv_3x3", 1)
  assert DARTS_V1.reduce[7] == ("avg_pool_3x3", 0)
  for g in (DARTS_V1, DARTS_V2):
    assert g.validate() is g
    assert g.normal_concat == g.reduce_concat == (2, 3, 4, 5)


@pytest.mark.parametrize("genotype", [DARTS_V1, DARTS_V2])
def test_json_round_trip(genotype):
  text = genotype.to_json()
  data = json.loads(text)
  assert data["normal"][0] == list(genotype.normal[0])
  assert data["normal_concat"] == [2, 3, 4, 5]
  assert Genotype.from_json(text) == genotype


def alphas_for(cell, strengths):
  """Alpha logits where the pair n of `cell` has logit strengths[n]; everything else 0."""
  alpha = np.zeros((14, 8))
  for n, (op, src) in enumerate(cell):
    alpha[edge_index(n // 2, src), PRIMITIVES.index(op)] = strengths[n]
  return alpha


def test_derivation_recovers_a_cell_and_lists_strongest_first():
  # Strengths decrease within each node, so the official order is the listed order.
  strengths = [5, 4] * 4
  g = derive_genotype(alphas_for(DARTS_V2.normal, strengths),
                      alphas_for(DARTS_V1.reduce, strengths))
  assert g.normal == DARTS_V2.normal
  assert g.reduce == DARTS_V1.reduce
  assert g.normal_concat == (2, 3, 4, 5)
  # Swap the strengths of node 0's pair: the stronger input is listed first.
  swapped = derive_genotype(alphas_for(DARTS_V2.normal, [4, 5] + [5, 4] * 3),
                            np.zeros((14, 8)))
  assert swapped.normal[:2] == (("sep_conv_3x3", 1), ("sep_conv_3x3", 0))


def test_derivation_ignores_none_but_keeps_it_in_the_softmax():
  alpha = np.zeros((14, 8))
  # Node 0: input 0 has a huge `none` and a modest conv; input 1 a slightly smaller conv.
  alpha[0, PRIMITIVES.index("none")] = 10.0
  alpha[0, PRIMITIVES.index("sep_conv_5x5")] = 2.0
  alpha[1, PRIMITIVES.index("dil_conv_5x5")] = 1.5
  g = derive_genotype(alpha, alpha)
  # `none` is never chosen; but softmax row 0 is dominated by `none`, so input 0's best
  # non-none weight (softmax) is smaller than input 1's: input 1 comes first.
  assert g.normal[:2] == (("dil_conv_5x5", 1), ("sep_conv_5x5", 0))
  assert all(op != "none" for op, _ in g.normal)


def test_derivation_ties():
  # All zero: every weight equal. Inputs tie -> lower index first; ops tie -> first op
  # after `none` (max_pool_3x3).
  g = derive_genotype(np.zeros((14, 8)), np.zeros((14, 8)))
  assert g.normal == (("max_pool_3x3", 0), ("max_pool_3x3", 1)) * 4
  # Node 3: inputs 2 and 4 tie for the strongest: 2 wins the tie, 4 comes second.
  alpha = np.zeros((14, 8))
  # Equal softmax rows for inputs 2 and 4, each with two tied ops: the first op wins.
  alpha[edge_index(3, 4), PRIMITIVES.index("skip_connect")] = 3.0
  alpha[edge_index(3, 4), PRIMITIVES.index("max_pool_3x3")] = 3.0
  alpha[edge_index(3, 2), PRIMITIVES.index("sep_conv_3x3")] = 3.0
  alpha[edge_index(3, 2), PRIMITIVES.index("dil_conv_3x3")] = 3.0
  g = derive_genotype(alpha, alpha)
  assert g.normal[6:] == (("sep_conv_3x3", 2), ("max_pool_3x3", 4))


def test_derivation_rejects_wrong_shapes():
  with pytest.raises(ValueError, match="shape"):
    derive_genotype(np.zeros((14, 7)), np.zeros((14, 8)))


@pytest.mark.parametrize("text,message", [
    ("{not json", "malformed"),
    ('{"normal": []}', "exactly the keys"),
    ('[1, 2]', "exactly the keys"),
])
def test_malformed_json_raises_clear_errors(text, message):
  with pytest.raises(GenotypeError, match=message):
    Genotype.from_json(text)


def test_unknown_op_and_bad_inputs_raise_clear_errors():
  data = json.loads(DARTS_V2.to_json())
  data["normal"][3] = ["sep_conv_7x7", 1]
  with pytest.raises(GenotypeError, match="Unknown op 'sep_conv_7x7' in Genotype.normal"):
    Genotype.from_json(json.dumps(data))
  data = json.loads(DARTS_V2.to_json())
  data["reduce"][0] = ["max_pool_3x3", 2]  # node 0 only has inputs 0 and 1
  with pytest.raises(GenotypeError, match="node 0 can only take inputs 0..1"):
    Genotype.from_json(json.dumps(data))
  data = json.loads(DARTS_V2.to_json())
  data["normal"][0] = ["sep_conv_3x3"]
  with pytest.raises(GenotypeError, match="wrong shape"):
    Genotype.from_json(json.dumps(data))
  data = json.loads(DARTS_V2.to_json())
  data["normal_concat"] = [2, 9]
  with pytest.raises(GenotypeError, match="normal_concat"):
    Genotype.from_json(json.dumps(data))


def test_genotype_from_name_or_file(tmp_path):
  assert genotypes.genotype_from_name_or_file("DARTS_V1") == DARTS_V1
  path = tmp_path / "genotype.json"
  path.write_text(DARTS_V2.to_json())
  assert genotypes.genotype_from_name_or_file(str(path)) == DARTS_V2
  with pytest.raises(GenotypeError, match="not found"):
    genotypes.genotype_from_name_or_file(str(tmp_path / "missing.json"))
  with pytest.raises(GenotypeError, match="Unknown genotype 'DARTS_V9'"):
    genotypes.genotype_from_name_or_file("DARTS_V9")


def test_darts_rule_without_none_is_the_rule_with_a_none_of_zero_weight():
  """The 7-op space's genotype (DrNAS', FairDARTS', SDARTS' DARTS space) equals the 8-op rule
  on the same alphas with a `none` column of -inf logit (weight 0: the softmaxes agree)."""
  from darts_jax.spaces import WITHOUT_NONE
  rng = np.random.default_rng(11)
  seven = {k: rng.normal(size=(14, 7)) for k in ("normal", "reduce")}
  none = PRIMITIVES.index("none")
  eight = {k: np.insert(a, none, -np.inf, axis=1) for k, a in seven.items()}
  got = derive_genotype(seven["normal"], seven["reduce"], WITHOUT_NONE)
  assert got == derive_genotype(eight["normal"], eight["reduce"])
  with pytest.raises(ValueError, match=r"shape \(14, 7\)"):
    derive_genotype(eight["normal"], eight["reduce"], WITHOUT_NONE)


def test_fair_darts_ranks_edges_by_their_sigmoids():
  """FairDARTS' rule ranks a node's edges by their largest sigmoid(alpha), not softmax: edge A
  (two ops at 3: sigmoid 0.953, softmax ~0.5), B (one op at 2: sigmoid 0.881, softmax ~1) and
  C (every op at 2.5: sigmoid 0.924, softmax 1/7) into node 1 keep A and C by the sigmoids, B
  and A by the softmax."""
  from darts_jax.spaces import WITHOUT_NONE, SPACES
  alpha = np.full((14, 7), -10.0)
  a, b, c = (genotypes.edge_index(1, j) for j in range(3))
  alpha[a, [3, 4]] = 3.0
  alpha[b, 2] = 2.0
  alpha[c, :] = 2.5
  derive = SPACES["darts_without_none"].derive
  node1 = lambda g: g.normal[2:4]
  assert node1(derive({"normal": alpha, "reduce": alpha}, "sigmoid")) == (
      (WITHOUT_NONE[3], 0), (WITHOUT_NONE[0], 2))
  assert node1(derive({"normal": alpha, "reduce": alpha}, "softmax")) == (
      (WITHOUT_NONE[2], 1), (WITHOUT_NONE[3], 0))
