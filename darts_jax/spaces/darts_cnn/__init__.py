"""DARTS' CNN search space: its ops and genotypes, the supernet, the evaluation networks built
from a genotype, and pictures of cells."""
