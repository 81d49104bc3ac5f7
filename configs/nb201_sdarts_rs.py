"""SDARTS-RS (Chen & Hsieh, "Stabilizing Differentiable Architecture Search via
Perturbation-based Regularization", ICML 2020) on NAS-Bench-201.

    python main.py --config configs/nb201_sdarts_rs.py --workdir runs/nb201_sdarts_rs

DARTS' alpha step, unperturbed; the weight step mixes with `clip(softmax(alpha) + delta)`,
delta ~ U[-eps, eps] per entry, clip the release's clamp-and-renormalise
(`darts_jax.perturbations.random_smoothing`), eps ramping per epoch from 0.03 to
`perturbation_epsilon` (0.3).

Settings of the release's NAS-Bench-201 search (xiangning-chen/SmoothDARTS, nasbench201/):
100 epochs, batch 64, SGD lr 0.025 cosine to 0.001, momentum 0.9 (not Nesterov), weight decay
3e-4, gradient clip 5; alphas by Adam 3e-4, betas (0.5, 0.999), decay 1e-3; first order (the
maintainer: unrolled=False in all experiments); the cell is the argmax of alpha per edge,
`none` included. The release steps its LR scheduler at the start of each epoch, one epoch ahead
of the cosine here.
"""

from configs import nb201_search


def get_config():
  config = nb201_search.get_config()
  config.weight_perturbation = "random"
  config.perturbation_epsilon = 0.3
  config.epochs = 100
  config.weight_decay = 3e-4
  config.nesterov = False
  config.hypergradient.method = "first_order"
  return config
