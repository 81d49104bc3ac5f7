"""SNAS (Xie et al., "SNAS: Stochastic Neural Architecture Search", ICLR 2019) on DARTS' CNN
space, CIFAR-10.

    python main.py --config configs/cifar_snas.py --workdir runs/cifar_snas

Each edge's weights are a soft Gumbel-softmax (concrete) draw, softmax((alpha + g) / t), every
op computed (`darts_jax.relaxations.gumbel_soft`), one draw per cell type per step; t falls per
epoch from 1 to 0.03 over the 150 epochs. Single level
(`--config.hypergradient.method=single_level`): one gradient of the training loss on the
whole training set updates weights and alphas; the test split is only watched.

Settings of the release's single-GPU command (SNAS-Series/SNAS-Series, SNAS/README.md and
SNAS/train_search.py; docs/releases/gdas_snas.md): DARTS' 8 ops, 8 cells of 16 channels, 150
epochs, batch 64, SGD lr 0.025 cosine to 0.001, momentum 0.9, weight decay 3e-4, gradient clip
5; the alphas by plain SGD 3e-4 (no momentum, no decay), their gradient clipped to norm 10;
the whole 50,000-image training set.

Where this differs from the release: its search drops paths at 0.3 on every edge, which this
supernet does not do; its resource penalty (the README run's, lambda 1.5e-3) is not
implemented; its alphas start at N(1, 0.01), these at 1e-3 N(0, 1) as DARTS' (the mean
cancels in the softmax); its cell keeps every edge's argmax op, `none` included, where this
one is derived by DARTS' rule (two edges per node, `none` excluded), which the evaluation
network needs; its temperature horizon is fixed at 150 epochs, here the config's `epochs`.
"""

from configs import cifar_search, nb201_snas


def get_config():
  return nb201_snas.snas(cifar_search.get_config())  # the same settings on DARTS' space
