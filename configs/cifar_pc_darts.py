"""PC-DARTS (Xu et al., "PC-DARTS: Partial Channel Connections for Memory-Efficient
Architecture Search", ICLR 2020) on DARTS' CNN space, CIFAR-10.

    python main.py --config configs/cifar_pc_darts.py --workdir runs/cifar_pc_darts

Each mixed op sees the first quarter of its input's channels, the rest pass by (max-pooled on
the stride-2 edges), and the two parts are concatenated and channel-shuffled
(`--config.model.partial_channels=4`, `supernet.partial_channel_edge`); every edge's output is
multiplied by its node's softmax over the edge parameters (`--config.model.edge_normalisation`,
the alphas' "normal_edges" and "reduce_edges"), and the cell is derived from softmax(alpha)
scaled by those edge weights. The first 15 epochs train the weights alone.

Settings of the release (yuhuixu1993/PC-DARTS, train_search.py, model_search.py,
architect.py; docs/releases/pc_darts_pt.md): DARTS' 8 ops, 8 cells of 16 channels, k = 4
(hard-coded there), 50 epochs, batch 256, SGD lr 0.1 cosine to 0, momentum 0.9, weight decay
3e-4, gradient clip 5; alphas and edge parameters by one Adam 6e-4, betas (0.5, 0.999),
decay 1e-3, from epoch 15; first order (the release's default; the maintainer reports every
result first order); CIFAR-10's training set halved. The release steps its LR scheduler at the
start of each epoch, one epoch ahead of the cosine here. Every hypergradient method runs:
`--config.hypergradient.method=exact`.
"""

from configs import cifar_search


def get_config():
  config = cifar_search.get_config()
  config.model.partial_channels = 4
  config.model.edge_normalisation = True
  config.batch_size = 256
  config.learning_rate = 0.1
  config.learning_rate_min = 0.0
  config.alpha_learning_rate = 6e-4
  config.alpha_warmup_epochs = 15
  config.hypergradient.method = "first_order"
  return config
