"""beta-DARTS (Ye et al., "beta-DARTS: Beta-Decay Regularization for Differentiable Architecture
Search", CVPR 2022) on DARTS' CNN space, CIFAR-10.

    python main.py --config configs/cifar_beta_darts.py --workdir runs/cifar_beta_darts

DARTS' softmax with the beta-decay term `lambda(epoch) * mean_edges logsumexp(alpha)` added to
the alpha step's objective, the mean over the normal and the reduction cell's 28 edges
(`darts_jax.regularisers.beta_decay`), lambda = 50 * epoch / 100 as the release writes it.

The release's DARTS-space script does not run (Sunshine-Ye/Beta-DARTS, sota/cnn/train_search.py
takes the logsumexp of a list of the two cells' alphas; its issue #1): the mean over both
cells here is what the 28 edges give once concatenated, the one reading that runs, and the
lambda schedule is the release's NAS-Bench-201 one, the only one it fixes (over 50 epochs it
reaches 24.5). The rest is that script's defaults (docs/releases/fair_beta_minus.md): 50
epochs, batch 64, SGD 0.025 cosine to 0.001, weight decay 3e-4, Adam 3e-4 (0.5, 0.999) with
decay 1e-3; first order, as the release's 201 search.
"""

from configs import cifar_search


def get_config():
  config = cifar_search.get_config()
  config.regulariser.name = "beta_decay"
  config.regulariser.scale = 50.0
  config.regulariser.ramp_epochs = 100
  config.hypergradient.method = "first_order"
  return config
