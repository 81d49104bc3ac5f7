"""DARTS- (Chu et al., "DARTS-: Robustly Stepping out of Performance Collapse Without
Indicators", ICLR 2021) on DARTS' CNN space, CIFAR-10.

    python main.py --config configs/cifar_darts_minus.py --workdir runs/cifar_darts_minus

DARTS' softmax plus an auxiliary skip connection `beta * x` on every mixed op, outside the
softmax and not learned, beta = (epochs - epoch) / epochs set at the start of each epoch
(`darts_jax.relaxations.darts_minus`; Meituan-AutoML/DARTS-, src/utils.py, `--skip_beta 1
--decay linear --auxiliary_skip`); the auxiliary skip never enters the genotype (DARTS' rule).

Settings of the release's search script (docs/releases/fair_beta_minus.md): 8 cells of 16
channels, 50 epochs, batch 64, SGD 0.025 cosine to 0.001, momentum 0.9, weight decay 3e-4,
gradient clip 5; Adam 3e-4 (0.5, 0.999) with decay 1e-3; first order. Where this differs from
the release: on reduction edges the release's auxiliary skip is a FactorizedReduce of its own,
here it is the edge's skip_connect op, whose weights the candidate and the auxiliary share;
the release's script searches its s3 space by default, this is DARTS' space (the README's S0,
with `none`).
"""

from configs import cifar_search


def get_config():
  config = cifar_search.get_config()
  config.relaxation = "darts_minus"
  config.aux_skip_beta = 1.0
  config.hypergradient.method = "first_order"
  return config
