"""DrNAS (Chen et al., "DrNAS: Dirichlet Neural Architecture Search", ICLR 2021) on NAS-Bench-201.

    python main.py --config configs/nb201_drnas.py --workdir runs/nb201_drnas
    python main.py --config configs/nb201_drnas.py --config.regulariser.name=dirichlet_kl \
        --config.regulariser.scale=1e-3

The mixing weights of each edge are one reparameterised draw from Dirichlet(elu(alpha) + 1)
per loss evaluation (`darts_jax.relaxations.dirichlet`); the supernet evaluated without a key
(search-val accuracy) mixes with the Dirichlet's mean; the cell is the argmax of alpha per
edge (`none` included, as the release's genotype()). The release's default regulariser,
`--reg_type l2 --reg_scale 1e-3`, is Adam's weight decay 1e-3 on the alphas
(`alpha_weight_decay`, as DARTS'), so `regulariser.name` is "none" here; its KL option is
`dirichlet_kl`.

Settings of the release's NAS-Bench-201 search (xiangning-chen/DrNAS, 201-space/train_search.py,
the non-progressive script its NAS-Bench-201 results came from): 100 epochs, batch 64, SGD lr
0.025 cosine to 0.001, momentum 0.9 (not Nesterov), weight decay 3e-4, gradient clip 5; alphas
by Adam 3e-4, betas (0.5, 0.999), decay 1e-3; first order (the release's 201 model cannot run
its second-order step); alpha updates from the first epoch (its warm-up is commented out);
C=16, N=5, CIFAR-10's training set halved. The release's partial channels (k) are 1 there:
none. Every hypergradient method runs: --config.hypergradient.method=exact differentiates
through the virtual step with the draw held fixed.
"""

from configs import nb201_search


def get_config():
  config = nb201_search.get_config()
  config.relaxation = "dirichlet"
  config.epochs = 100
  config.weight_decay = 3e-4
  config.nesterov = False
  config.hypergradient.method = "first_order"
  return config
