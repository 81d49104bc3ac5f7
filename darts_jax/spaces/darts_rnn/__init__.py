"""DARTS' recurrent search space: the genotypes and the recurrent network (search cell and
derived cell)."""
