"""darts_jax: Differentiable Architecture Search (Liu, Simonyan & Yang, ICLR 2019) in JAX."""

from darts_jax.genotypes import (DARTS_V1, DARTS_V2, GENOTYPES, PRIMITIVES, Genotype,
                                 GenotypeError, derive_genotype)
from darts_jax.hypergradient import EXACT_MODES, METHODS, hypergradient
from darts_jax.network import (NetworkCIFAR, NetworkImageNet, count_mult_adds, count_params,
                               init_network)
from darts_jax.supernet import SearchNetwork, init_alphas, init_supernet

__version__ = "0.1.0"

__all__ = [
    "DARTS_V1", "DARTS_V2", "EXACT_MODES", "GENOTYPES", "Genotype", "GenotypeError", "METHODS",
    "NetworkCIFAR", "NetworkImageNet", "PRIMITIVES", "SearchNetwork", "count_mult_adds",
    "count_params", "derive_genotype", "hypergradient", "init_alphas", "init_network",
    "init_supernet", "__version__",
]
