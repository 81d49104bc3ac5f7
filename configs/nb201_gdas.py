"""GDAS (Dong & Yang, "Searching for A Robust Neural Architecture in Four GPU Hours", CVPR 2019)
on NAS-Bench-201.

    python main.py --config configs/nb201_gdas.py --workdir runs/nb201_gdas

Each edge's weights are a hard Gumbel-softmax draw, straight-through
(`darts_jax.relaxations.gumbel_hard`: one-hot in value, the gradient of
softmax((log_softmax(alpha) + g) / tau)), one draw per loss evaluation shared by all 15 cells,
and the supernet computes only each edge's drawn op, adding the other ops' (zero) weights as
the release does so that every alpha gets a gradient (`nas_bench_201.one_op_edge`). tau falls
linearly per epoch from 10 to 0.1 (`--config.tau_max`, `--config.tau_min`). The cell is the
argmax of alpha per edge, `none` included.

Settings of the release (D-X-Y/AutoDL-Projects, configs/nas-benchmark/algos/GDAS.config and
scripts-search/NAS-Bench-201-algos/GDAS.sh): 250 epochs, batch 64, SGD lr 0.025 with Nesterov
momentum 0.9 and weight decay 5e-4, cosine to 0.001, gradient clip 5; alphas by Adam 3e-4,
betas (0.5, 0.999), decay 1e-3; first order (the release has no second-order step); the cells'
BN without running statistics (GDAS.sh's BN argument 0: `track_running_stats=False`);
CIFAR-10's training set halved. Where this differs from the release: the release steps the
weights first and then the alphas (with the new weights), here the alpha step comes first as in
DARTS; the release's grad-clip norm also counts the alphas' (discarded) gradients.
"""

from configs import nb201_search


def get_config():
  config = nb201_search.get_config()
  config.relaxation = "gumbel_hard"
  config.tau_max = 10.0
  config.tau_min = 0.1
  config.epochs = 250
  config.model.track_running_stats = False
  config.hypergradient.method = "first_order"
  return config
