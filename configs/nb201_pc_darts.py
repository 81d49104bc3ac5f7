"""PC-DARTS (Xu et al., ICLR 2020) on NAS-Bench-201, CIFAR-10: partial channels and edge
normalisation in NAS-Bench-201's supernet; the cell looked up in the benchmark's table.

    python main.py --config configs/nb201_pc_darts.py --workdir runs/nb201_pc_darts

Each mixed op sees the first quarter of its input's channels, the rest pass by, and the two
parts are concatenated and channel-shuffled (`--config.model.partial_channels=4`; the cell's
edges all have stride 1, so nothing is pooled); every edge's output is multiplied by its
node's softmax over the edge parameters (`--config.model.edge_normalisation`, the alphas'
"cell_edges"; node 1 has one input, so its weight is 1). The cell is the argmax of alpha per
edge, `none` included, as for every NAS-Bench-201 method here (the edge weights scale a whole
row and so leave each edge's argmax alone).

PC-DARTS' release (yuhuixu1993/PC-DARTS) searches DARTS' space only; this config takes its
CIFAR-10 search settings (configs/cifar_pc_darts.py; docs/releases/pc_darts_pt.md) onto this
space: k = 4, 50 epochs, batch 256, SGD lr 0.1 cosine to 0, momentum 0.9 (not Nesterov),
weight decay 3e-4, gradient clip 5; alphas and edge parameters by Adam 6e-4, betas (0.5,
0.999), decay 1e-3, from epoch 15; first order. Every hypergradient method runs:
`--config.hypergradient.method=exact`.
"""

from configs import nb201_search


def get_config():
  config = nb201_search.get_config()
  config.model.partial_channels = 4
  config.model.edge_normalisation = True
  config.batch_size = 256
  config.learning_rate = 0.1
  config.learning_rate_min = 0.0
  config.weight_decay = 3e-4
  config.nesterov = False
  config.alpha_learning_rate = 6e-4
  config.alpha_warmup_epochs = 15
  config.hypergradient.method = "first_order"
  return config
