"""NAS-Bench-201's accuracy tables, in the package: look up a searched cell, no download.

    from darts_jax import nas_bench
    nas_bench.load().accuracy(cell, dataset="cifar10", split="test", epochs=200)

`table` is the query API and the file format; `convert` writes a table from the benchmark's
own files (NATS-Bench topology `.pickle.pbz2`, NAS-Bench-201 `.pth`) for every dataset,
split and budget.
"""

from darts_jax.nas_bench.table import (DATASETS, NUM_CELLS, Column, Table, cell_code,
                                       cell_of_code, load)

__all__ = ["Column", "DATASETS", "NUM_CELLS", "Table", "cell_code", "cell_of_code", "load"]
