"""The search spaces the CNN search trainer runs (`config.search_space`), as data.

A `SearchSpace` says how to build its supernet from a config, initialise its weights and
alphas, derive a genotype from the alphas and draw it. The trainer
(`darts_jax.train.cnn_search`) and the bilevel step (`darts_jax.bilevel`) are the same for all:
the supernet takes its alphas as an input, `{name: (edges, ops)}`.

- "darts": DARTS' space (8 ops, 14 edges; normal and reduction cells, alphas "normal" and
  "reduce"), `darts_jax.spaces.darts_cnn.supernet`.
- "darts_without_none": DARTS' space with `none` removed (7 ops), the space DrNAS, FairDARTS
  and SDARTS search on the DARTS space (SDARTS' "s5"; their releases comment `none` out of
  PRIMITIVES); the genotype rule is DARTS' with every op competing.
- "nas_bench_201": NAS-Bench-201's (5 ops, 6 edges, one alpha "cell" for all 15 cells),
  `darts_jax.spaces.nas_bench_201`.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable, NamedTuple

from darts_jax import relaxations
from darts_jax.spaces import nas_bench_201
from darts_jax.spaces.darts_cnn import draw, supernet
from darts_jax.errors import ConfigError
from darts_jax.spaces.darts_cnn.genotypes import PRIMITIVES, STEPS, derive_genotype


class SearchSpace(NamedTuple):
  build: Callable[[Any, int], Any]  # (config, num_classes) -> Flax supernet
  init: Callable[[Any, int, tuple], tuple]  # (model, seed, image shape) -> (weights, BN stats)
  init_alphas: Callable[..., dict]  # (key, model=None) -> {name: (edges, ops)}
  # (alphas, relaxation name) -> genotype (with to_json() and a readable str())
  derive: Callable[[dict, str], Any]
  draw: Callable[[Any, str], list]  # (genotype, workdir) -> the pictures written
  ops: tuple  # the alpha columns
  edges: tuple  # the alpha rows, "i<-j"


def _build_darts(config, num_classes, primitives=PRIMITIVES):
  return supernet.SearchNetwork(channels=config.model.channels, layers=config.model.layers,
                                num_classes=num_classes, remat=config.model.remat,
                                relax=relaxations.build(config, primitives),
                                dtype=config.model.dtype, primitives=primitives,
                                one_op=config.relaxation in relaxations.ONE_OP,
                                partial_channels=config.model.get("partial_channels", 1),
                                edge_normalisation=config.model.get("edge_normalisation",
                                                                    False))


WITHOUT_NONE = tuple(op for op in PRIMITIVES if op != "none")


def _darts_alphas(primitives):
  """The DARTS supernet's `init_alphas(key, model=None)`: PC-DARTS' edge parameters too when
  the model normalises edges."""
  return lambda key, model=None: supernet.init_alphas(
      key, primitives=primitives,
      edge_normalisation=bool(model is not None and model.edge_normalisation))


def _derive_darts(primitives):
  """The DARTS rule on `alphas` (`derive_genotype`), with the relaxation's scores and
  PC-DARTS' edge weights when the alphas hold them."""
  return lambda alphas, relaxation="softmax": derive_genotype(
      alphas["normal"], alphas["reduce"], primitives, _scores(relaxation),
      alphas.get("normal_edges"), alphas.get("reduce_edges"))


def _scores(relaxation):
  """What the DARTS rule ranks: FairDARTS' sigmoids, else softmax(alpha) (DrNAS' release ranks
  softmax(alpha) too, docs/releases/drnas_sdarts.md)."""
  return "sigmoid" if relaxation == "sigmoid" else "softmax"


def _draw_darts(genotype, workdir):
  draw.plot_cell(genotype.normal, genotype.normal_concat,
                 os.path.join(workdir, "normal.png"), "normal cell")
  draw.plot_cell(genotype.reduce, genotype.reduce_concat,
                 os.path.join(workdir, "reduction.png"), "reduction cell")
  return ["normal.png", "reduction.png"]


def _build_nb201(config, num_classes):
  return nas_bench_201.SearchNetwork201(channels=config.model.channels,
                                        cells_per_stage=config.model.cells_per_stage,
                                        num_classes=num_classes,
                                        relax=relaxations.build(config, nas_bench_201.OPS),
                                        dtype=config.model.dtype,
                                        track_running_stats=config.model.get(
                                            "track_running_stats", True),
                                        one_op=config.relaxation in relaxations.ONE_OP,
                                        partial_channels=config.model.get("partial_channels", 1),
                                        edge_normalisation=config.model.get(
                                            "edge_normalisation", False))


def _draw_nb201(genotype, workdir):
  nas_bench_201.draw_cell(genotype, os.path.join(workdir, "cell.png"))
  return ["cell.png"]


SPACES = {
    "darts": SearchSpace(
        build=_build_darts, init=supernet.init_supernet, init_alphas=_darts_alphas(PRIMITIVES),
        derive=_derive_darts(PRIMITIVES),
        draw=_draw_darts, ops=PRIMITIVES,
        edges=tuple(f"{i}<-{j}" for i in range(STEPS) for j in range(2 + i))),
    "darts_without_none": SearchSpace(
        build=functools.partial(_build_darts, primitives=WITHOUT_NONE),
        init=supernet.init_supernet,
        init_alphas=_darts_alphas(WITHOUT_NONE), derive=_derive_darts(WITHOUT_NONE),
        draw=_draw_darts, ops=WITHOUT_NONE,
        edges=tuple(f"{i}<-{j}" for i in range(STEPS) for j in range(2 + i))),
    "nas_bench_201": SearchSpace(
        build=_build_nb201, init=nas_bench_201.init_supernet,
        init_alphas=lambda key, model=None: nas_bench_201.init_alphas(
            key, edge_normalisation=bool(model is not None and model.edge_normalisation)),
        # The argmax per edge: the same for every relaxation's (monotone) scores.
        derive=lambda alphas, relaxation="softmax": nas_bench_201.derive_genotype(alphas),
        draw=_draw_nb201, ops=nas_bench_201.OPS,
        edges=tuple(f"{i}<-{j}" for i, j in nas_bench_201.EDGES)),
}


def get(name: str) -> SearchSpace:
  """The search space `name`; a one-line ConfigError for an unknown one."""
  if name not in SPACES:
    raise ConfigError(f"--config.search_space={name!r} is not one of {', '.join(SPACES)}.")
  return SPACES[name]
