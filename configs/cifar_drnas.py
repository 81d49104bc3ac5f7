"""DrNAS (Chen et al., "DrNAS: Dirichlet Neural Architecture Search", ICLR 2021) on DARTS' CNN
space without `none`, CIFAR-10.

    python main.py --config configs/cifar_drnas.py --workdir runs/cifar_drnas

Each edge's weights are a reparameterised draw from Dirichlet(elu(alpha) + 1)
(`darts_jax.relaxations.dirichlet`), one per cell type per loss evaluation; the regulariser
is the release's default, L2 on alpha as the alpha optimiser's coupled weight decay (1e-3,
`reg_scale`; the KL option: `--config.regulariser.name=dirichlet_kl`, with decay 0). The
first 10 epochs train the weights alone (`alpha_warmup_epochs`).

Settings of the release's DARTS-space search (xiangning-chen/DrNAS, DARTS-space/train_search.py;
docs/releases/drnas_sdarts.md): DARTS' ops without `none` (7), 50 epochs, batch 64, SGD lr 0.1
cosine to 0, momentum 0.9, weight decay 3e-4, gradient clip 5; alphas by Adam 6e-4, betas
(0.5, 0.999), decay 1e-3; first order (the release's second-order path cannot rebuild its
partial-channel network); alpha updates from epoch 10; DARTS' genotype rule on softmax(alpha),
as the release's code ranks (its README says the Dirichlet mean; within an edge the same op).

Where this differs from the release: the release searches progressively, two stages of 25
epochs on its 20-cell, 36-channel network with partial channels (1/6, then 1/4) and the ops
pruned from 7 to 4 per edge between the stages, the warm-up repeated in each stage; partial
channels are issue P4f's, so here one stage of 50 epochs runs every op on all channels of
DARTS' 8-cell, 16-channel supernet, with one warm-up.
"""

from configs import cifar_search


def get_config():
  config = cifar_search.get_config()
  config.search_space = "darts_without_none"
  config.relaxation = "dirichlet"
  config.learning_rate = 0.1
  config.learning_rate_min = 0.0
  config.alpha_learning_rate = 6e-4
  config.alpha_weight_decay = 1e-3
  config.alpha_warmup_epochs = 10
  config.hypergradient.method = "first_order"
  return config
