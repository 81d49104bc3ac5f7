"""A complete DARTS CNN search in about two minutes on a laptop CPU, compile included.

    python main.py --config configs/quick_search.py

The real search space (8 ops, normal and reduction cells, exact hypergradient) on a small
real dataset that ships with scikit-learn: 1,797 handwritten digits, 8x8 pixels. A narrow
(C=4), 5-cell supernet; prints the derived genotype and writes it, its pictures and the metrics to
the workdir. Derived from configs/cifar_search.py.
"""

from configs import cifar_search


def get_config():
  config = cifar_search.get_config()
  config.seed = 0
  config.data.name = "digits"
  config.data.train_portion = 0.5
  config.augment = False  # 8x8 digits: cropping would cut strokes off
  config.model.channels = 4
  config.model.layers = 5
  config.epochs = 6
  config.batch_size = 32
  config.learning_rate = 0.05
  config.alpha_learning_rate = 3e-3  # 10x DARTS': alphas move visibly in a few epochs
  config.log_every = 2
  config.xla_cpu_fast_kernels = False  # a short run: compile time matters more than steps
  return config
