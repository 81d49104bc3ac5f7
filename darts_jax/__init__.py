"""darts_jax: Differentiable Architecture Search (Liu, Simonyan & Yang, ICLR 2019) in JAX.

The package, by layer:

- the library core, jax + optax only: `hypergradient` (the exact second-order hypergradient),
  `bilevel` (one alternating search step for any model), `relaxations` (alphas -> mixing
  weights), `averaging` (averaged SGD as an optax transformation);
- `spaces/`: the search spaces and their networks (`darts_cnn`, `nas_bench_201`, `darts_rnn`),
  each with its supernet, genotype and pictures, and the registry the CNN trainer reads;
- `nas_bench/`: NAS-Bench-201's accuracy tables, shipped, with the query API and a converter
  for the benchmark's own files;
- `data/`: image sets, ImageNet's host pipeline, text corpora, on-device augmentation;
- `train/`: the trainers behind `main.py`, the run loop they share, checkpoints, metrics,
  data parallelism.

`import darts_jax` loads only the core; the names of `spaces` re-exported here (the networks,
genotypes) load Flax the first time one is used.
"""

import importlib

from darts_jax.bilevel import (BilevelOptimizers, ModelState, SearchState, bilevel_step,
                               init_search_state)
from darts_jax.hypergradient import EXACT_MODES, METHODS, hypergradient

__version__ = "0.1.0"

# name -> module, imported on first use (PEP 562), so the core stays free of Flax.
_LAZY = {
    **{name: "darts_jax.spaces.darts_cnn.genotypes" for name in (
        "DARTS_V1", "DARTS_V2", "GENOTYPES", "PRIMITIVES", "Genotype", "derive_genotype")},
    **{name: "darts_jax.spaces.darts_cnn.network" for name in (
        "NetworkCIFAR", "NetworkImageNet", "count_mult_adds", "count_params", "init_network")},
    **{name: "darts_jax.spaces.darts_cnn.supernet" for name in (
        "SearchNetwork", "init_alphas", "init_supernet")},
    "GenotypeError": "darts_jax.errors",
}


def __getattr__(name):
  if name in _LAZY:
    return getattr(importlib.import_module(_LAZY[name]), name)
  raise AttributeError(f"module 'darts_jax' has no attribute {name!r}")


def __dir__():
  return sorted({*globals(), *_LAZY})


__all__ = [
    "BilevelOptimizers", "DARTS_V1", "DARTS_V2", "EXACT_MODES", "GENOTYPES", "Genotype",
    "GenotypeError", "METHODS", "ModelState", "NetworkCIFAR", "NetworkImageNet", "PRIMITIVES",
    "SearchNetwork", "SearchState", "bilevel_step", "count_mult_adds", "count_params",
    "derive_genotype", "hypergradient", "init_alphas", "init_network", "init_search_state",
    "init_supernet", "__version__",
]
