"""DARTS- (Chu et al., "DARTS-: Robustly Stepping out of Performance Collapse Without
Indicators", ICLR 2021) on NAS-Bench-201.

    python main.py --config configs/nb201_darts_minus.py --workdir runs/nb201_darts_minus

DARTS' softmax plus an auxiliary skip connection `beta * x` on every mixed op, outside the
softmax and not learned, beta decaying linearly from 1 as the release sets it at the start of
each epoch: beta = (epochs - epoch) / epochs (`darts_jax.relaxations.darts_minus`;
Meituan-AutoML/DARTS-, src/utils.py, `--skip_beta 1 --decay linear`). The auxiliary skip never
enters the genotype (argmax of alpha per edge, `none` included).

The release ships no NAS-Bench-201 code (its script searches DARTS' s3 space: 50 epochs, batch
64, first order, SGD 0.025 to 0.001, Adam 3e-4 (0.5, 0.999) with decay 1e-3); here the rest is
this project's NAS-Bench-201 protocol (configs/nb201_search.py), first order as the release.
"""

from configs import nb201_search


def get_config():
  config = nb201_search.get_config()
  config.relaxation = "darts_minus"
  config.aux_skip_beta = 1.0
  config.hypergradient.method = "first_order"
  return config
