"""SNAS (Xie et al., "SNAS: Stochastic Neural Architecture Search", ICLR 2019) on NAS-Bench-201.

    python main.py --config configs/nb201_snas.py --workdir runs/nb201_snas

Each edge's weights are a soft Gumbel-softmax (concrete) draw, softmax((alpha + g) / t), every
op computed (`darts_jax.relaxations.gumbel_soft`), one draw per step shared by all 15 cells;
t falls per epoch from 1 to 0.03 over the 150 epochs (`snas_temperature`;
`--config.tau_max`, `--config.tau_min`; tau_min=1 keeps t = 1). Single level
(`--config.hypergradient.method=single_level`): one gradient of the training loss on the
whole training set updates weights and alphas; the test split is only watched.

From the release's single-GPU command (SNAS-Series/SNAS-Series, SNAS/README.md and
SNAS/train_search.py; docs/releases/gdas_snas.md): 150 epochs, batch 64, the temperature
annealed 1 -> 0.03 (`--temp_annealing`), the alphas by plain SGD 3e-4 (no momentum, no decay)
with their gradient clipped to norm 10, the weights' gradient clipped to 5; the cell the
argmax of alpha per edge, `none` included (the release's `genotype_edge_all`, which is also
the benchmark's rule). The paper's search used Adam on the alphas as DARTS does, which is what
the release's distributed mode does; the single-GPU command is followed here.

The release searches the DARTS space only; the weights follow this project's NAS-Bench-201
protocol (configs/nb201_search.py: SGD 0.025 Nesterov, decay 5e-4, cosine to 0.001). Where
this differs from the release: its search also drops paths at 0.3 on every edge, which the
NAS-Bench-201 supernet does not do; its resource penalty (the README run's, lambda 1.5e-3) is
not implemented; its alphas start at N(1, 0.01), these at 1e-3 N(0, 1) as DARTS' (the mean
cancels in the softmax); its temperature horizon is fixed at 150 epochs, here the config's
`epochs`.
"""

from configs import nb201_search


def snas(config):
  """SNAS' settings (the release's single-GPU command, above) on a search config of either
  space; configs/cifar_snas.py applies them to DARTS' space."""
  config.relaxation = "gumbel_soft"
  config.tau_max = 1.0
  config.tau_min = 0.03
  config.epochs = 150
  config.hypergradient.method = "single_level"
  config.alpha_optimizer = "sgd"
  config.alpha_learning_rate = 3e-4
  config.alpha_weight_decay = 0.0
  config.alpha_grad_clip = 10.0
  return config


def get_config():
  return snas(nb201_search.get_config())
