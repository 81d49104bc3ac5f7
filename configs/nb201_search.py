"""DARTS on the NAS-Bench-201 search space, CIFAR-10 (docs/reference.md).

    python main.py --config configs/nb201_search.py --workdir runs/nb201
    python main.py --config configs/nb201_search.py --config.hypergradient.method=first_order
    python main.py --config configs/nb201_search.py --config.data.name=cifar100
    python main.py --config configs/nb201_search.py --config.data.name=ImageNet16-120 \
        --config.data.dir=/data/ImageNet16
    python main.py --config configs/nb201_search.py --config.model.track_running_stats=False
    python main.py --config configs/nb201_search.py --config.num_seeds=4 --config.vmap_seeds=1

The cell has 4 nodes and 6 edges of 5 ops; one alpha (6, 5) for all 15 cells (3 stages of 5,
C=16, 32, 64). The derived genotype is printed in the benchmark's string form, e.g.
`|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|...|`, to look up in NAS-Bench-201's
tables. The published result: DARTS, first and second order, collapses to cells of skip
connections (CIFAR-10 test accuracy 54.30 %).

The settings the DARTS paper leaves open are those of the NAS-Bench-201 release's DARTS config:
50 epochs, batch 64, SGD lr 0.025 with Nesterov momentum 0.9 and weight decay 5e-4, cosine to
0.001, gradient clip 5; alphas by Adam 3e-4, betas (0.5, 0.999), decay 1e-3; the CIFAR-10
training set split 25k/25k between weights and alphas.

The data as the benchmark searches it (`data.alpha_split="nas_bench_201"`,
xautodl/datasets/get_dataset_with_transform.py, `get_nas_search_loaders`): on CIFAR-10 the
weights train on half of the training set and the alphas on the other half; on CIFAR-100
(tensorflow-datasets, or the `cifar-100-python` folder in `data.dir`) and ImageNet16-120 (the
downsampled-ImageNet 16x16 batches in `data.dir`; 151,700 training images of 120 classes) the
weights train on the whole training set and the alphas on the "xvalid" half of the test set
(5,000 and 3,000 images), augmented like the training images. The benchmark's own halves are in
its split files (`cifar-split.txt`, `cifar100-test-split.txt`, `imagenet-16-120-test-split.txt`
from configs/nas-benchmark/ of AutoDL-Projects): pass one as `--config.data.split_file`;
without one, CIFAR-10 takes the first and last 25k as DARTS does, and the test halves are a
fixed random half. `data.alpha_split="train"` keeps DARTS' split on every dataset.

`model.track_running_stats=False` is the NATS-Bench searches' BN (exps/NATS-algos/
search-cell.py defaults to `--track_running_stats 0`): the cells normalise with the batch's
statistics in evaluation too. Those searches also run 100 epochs without gradient clipping
(configs/nas-benchmark/algos/weight-sharing.config):
`--config.epochs=100 --config.grad_clip=1e9`.

`num_seeds=4` runs seeds 2..5 in one program and reports each seed's cell and the mean and
std of their benchmark accuracies (README, "Many seeds in one program"); on a CPU add
`vmap_seeds=1` (one seed at a time inside the program; all at once is slower there).
"""

from configs import cifar_search


def get_config():
  config = cifar_search.get_config()
  config.search_space = "nas_bench_201"
  config.model.channels = 16
  config.model.cells_per_stage = 5
  del config.model.layers  # DARTS' space only
  config.model.track_running_stats = True  # False: the cells' BN on batch statistics (NATS)
  config.data.alpha_split = "nas_bench_201"  # the benchmark's data for each dataset
  config.data.split_file = ""  # the benchmark's split file, if you have it
  config.weight_decay = 5e-4
  config.nesterov = True
  # The derived cell's benchmark accuracy is logged each epoch: "" looks it up in the table
  # the package ships (CIFAR-10 at 200 epochs, every dataset at 12); a path, in a table
  # converted from the benchmark's files (python -m darts_jax.nas_bench.convert).
  config.benchmark_table = ""
  return config
