"""SDARTS-ADV (Chen & Hsieh, "Stabilizing Differentiable Architecture Search via
Perturbation-based Regularization", ICML 2020) on NAS-Bench-201.

    python main.py --config configs/nb201_sdarts_adv.py --workdir runs/nb201_sdarts_adv

DARTS' alpha step, unperturbed; the weight step mixes with the worst mixing weights within
eps (L-inf) of softmax(alpha) for its batch: 7 signed-gradient ascent steps of 2 eps / 7 from
a random start, each mapped back by the release's clamp-and-renormalise, BN on running
statistics during the attack, the clean weights kept when the attack does not raise the loss
(`darts_jax.perturbations.adversarial`, `cnn_search.make_adversarial_weight_loss`); eps ramps
per epoch from 0.03 to `perturbation_epsilon` (0.3).

The rest is SDARTS-RS's config (configs/nb201_sdarts_rs.py), the release's NAS-Bench-201
settings (xiangning-chen/SmoothDARTS, nasbench201/):
100 epochs, batch 64, SGD lr 0.025 cosine to 0.001, momentum 0.9 (not Nesterov), weight decay
3e-4, gradient clip 5; alphas by Adam 3e-4, betas (0.5, 0.999), decay 1e-3; first order (the
maintainer: unrolled=False in all experiments); the cell is the argmax of alpha per edge,
`none` included. The release steps its LR scheduler at the start of each epoch, one epoch ahead
of the cosine here.
"""

from configs import nb201_sdarts_rs


def get_config():
  config = nb201_sdarts_rs.get_config()
  config.weight_perturbation = "adversarial"
  return config
