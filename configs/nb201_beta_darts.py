"""beta-DARTS (Ye et al., "beta-DARTS: Beta-Decay Regularization for Differentiable Architecture
Search", CVPR 2022) on NAS-Bench-201.

    python main.py --config configs/nb201_beta_darts.py --workdir runs/nb201_beta_darts

DARTS' softmax with the beta-decay term `lambda(epoch) * mean_edges logsumexp(alpha)` added to
the alpha step's objective (`darts_jax.regularisers.beta_decay`), lambda = 50 * epoch / 100 as
the release writes it (Sunshine-Ye/Beta-DARTS, nasbench201/: the 100 is fixed, not the number
of epochs).

Settings of the release's NAS-Bench-201 search (nasbench201/train_search.py): 100 epochs,
batch 64, SGD lr 0.025 cosine to 0.001, momentum 0.9 (not Nesterov), weight decay 3e-4,
gradient clip 5; alphas by Adam 3e-4, betas (0.5, 0.999), decay 1e-3; first order (its 201
model has no second-order step); CIFAR-10's training set halved; the cell is the argmax per
edge, `none` included.
"""

from configs import nb201_search


def get_config():
  config = nb201_search.get_config()
  config.regulariser.name = "beta_decay"
  config.regulariser.scale = 50.0
  config.regulariser.ramp_epochs = 100
  config.epochs = 100
  config.weight_decay = 3e-4
  config.nesterov = False
  config.hypergradient.method = "first_order"
  return config
