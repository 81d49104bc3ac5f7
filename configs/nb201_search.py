"""DARTS on the NAS-Bench-201 search space, CIFAR-10 (docs/reference.md).

    python main.py --config configs/nb201_search.py --workdir runs/nb201
    python main.py --config configs/nb201_search.py --config.hypergradient.method=first_order
    python main.py --config configs/nb201_search.py --config.data.name=cifar100

The cell has 4 nodes and 6 edges of 5 ops; one alpha (6, 5) for all 15 cells (3 stages of 5,
C=16, 32, 64). The derived genotype is printed in the benchmark's string form, e.g.
`|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|...|`, to look up in NAS-Bench-201's
tables. The published result: DARTS, first and second order, collapses to cells of skip
connections (CIFAR-10 test accuracy 54.30 %).

The settings the DARTS paper leaves open are those of the NAS-Bench-201 release's DARTS config:
50 epochs, batch 64, SGD lr 0.025 with Nesterov momentum 0.9 and weight decay 5e-4, cosine to
0.001, gradient clip 5; alphas by Adam 3e-4, betas (0.5, 0.999), decay 1e-3; the CIFAR-10
training set split 25k/25k between weights and alphas. CIFAR-100 comes from
tensorflow-datasets (`--config.data.name=cifar100`).
"""

from configs import cifar_search


def get_config():
  config = cifar_search.get_config()
  config.search_space = "nas_bench_201"
  config.model.channels = 16
  config.model.cells_per_stage = 5
  del config.model.layers  # DARTS' space only
  config.weight_decay = 5e-4
  config.nesterov = True
  # The derived cell's benchmark accuracy is logged each epoch: "" looks it up in the table
  # the package ships (CIFAR-10 at 200 epochs, every dataset at 12); a path, in a table
  # converted from the benchmark's files (python -m darts_jax.nas_bench.convert).
  config.benchmark_table = ""
  return config
