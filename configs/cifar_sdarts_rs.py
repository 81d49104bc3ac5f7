"""SDARTS-RS (Chen & Hsieh, "Stabilizing Differentiable Architecture Search via
Perturbation-based Regularization", ICML 2020) on DARTS' CNN space, CIFAR-10.

    python main.py --config configs/cifar_sdarts_rs.py --workdir runs/cifar_sdarts_rs

DARTS' alpha step, unperturbed; the weight step mixes with `clip(softmax(alpha) + delta)`,
delta ~ U[-eps, eps] per entry, clip the release's clamp-and-renormalise
(`darts_jax.perturbations.random_smoothing`), eps ramping per epoch from 0.03 to
`perturbation_epsilon` (0.3).

Settings of the release's DARTS-space search (xiangning-chen/SmoothDARTS,
sota/cnn/train_search.py with `--search_space s5`, docs/releases/drnas_sdarts.md): DARTS' space
without `none` (7 ops, `search_space="darts_without_none"`), 8 cells of 16 channels, 50
epochs, batch 64, SGD lr 0.025 cosine to 0.001, momentum 0.9, weight decay 3e-4, gradient
clip 5; alphas by Adam 3e-4, betas (0.5, 0.999), decay 1e-3; first order (the maintainer:
unrolled=False in all experiments); DARTS' genotype rule. The release steps its LR scheduler
at the start of each epoch, one epoch ahead of the cosine here.
"""

from configs import cifar_search


def get_config():
  config = cifar_search.get_config()
  config.search_space = "darts_without_none"
  config.weight_perturbation = "random"
  config.perturbation_epsilon = 0.3
  config.hypergradient.method = "first_order"
  return config
