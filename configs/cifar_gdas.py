"""GDAS (Dong & Yang, "Searching for A Robust Neural Architecture in Four GPU Hours", CVPR 2019)
on DARTS' CNN space, CIFAR-10.

    python main.py --config configs/cifar_gdas.py --workdir runs/cifar_gdas

Each edge's weights are a hard Gumbel-softmax draw, straight-through
(`darts_jax.relaxations.gumbel_hard`), one draw per cell type per loss evaluation, and the
supernet computes only each edge's drawn op, `w_k * op_k(x)` (`supernet.one_op_edge`; the
release's DARTS-space MixedOp adds no other weights, so the ops not drawn get no gradient).
tau falls linearly per epoch from 10 to 0.1.

Settings of the release's DARTS-space search with searched reduction cells
(D-X-Y/AutoDL-Projects, configs/search-opts/GDAS-NASNet-CIFAR.config and
configs/search-archs/GDAS-NASNet-CIFAR.config, search_model_gdas_nasnet.py;
docs/releases/gdas_snas.md): 6 cells of 16 channels (N=2: normal, normal, reduction, normal,
reduction, normal), DARTS' 8 ops, 250 epochs, batch 256, SGD lr 0.025 with Nesterov momentum
0.9 and weight decay 5e-4, cosine to 0.001, gradient clip 5; alphas by Adam 3e-4, betas
(0.5, 0.999), decay 1e-3; first order; CIFAR-10's training set halved.

Where this differs from the release: the alpha step comes first, as in DARTS (the release
steps the weights first); the cell is derived by DARTS' rule (the two strongest edges per node,
the best op on each), where the release keeps the two strongest (op, input) entries per node,
which may both come from one input; the paper's fixed reduction cell (GDAS-FRC) is not built.
"""

from configs import cifar_search


def get_config():
  config = cifar_search.get_config()
  config.relaxation = "gumbel_hard"
  config.tau_max = 10.0
  config.tau_min = 0.1
  config.model.layers = 6
  config.epochs = 250
  config.batch_size = 256
  config.nesterov = True
  config.weight_decay = 5e-4
  config.hypergradient.method = "first_order"
  return config
