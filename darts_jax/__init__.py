"""darts_jax: Differentiable Architecture Search (Liu, Simonyan & Yang, ICLR 2019) in JAX."""

from darts_jax.hypergradient import EXACT_MODES, METHODS, hypergradient

__version__ = "0.1.0"

__all__ = ["EXACT_MODES", "METHODS", "hypergradient", "__version__"]
