"""FairDARTS (Chu et al., "Fair DARTS: Eliminating Unfair Advantages in Differentiable
Architecture Search", ECCV 2020) on DARTS' CNN space without `none`, CIFAR-10.

    python main.py --config configs/cifar_fair_darts.py --workdir runs/cifar_fair_darts

Each op weighted by its own sigmoid(alpha) (`darts_jax.relaxations.sigmoid`), with the
zero-one loss `-10 * mean((sigmoid(alpha) - 0.5)^2)` added to the alpha step's objective from
the first epoch (`darts_jax.regularisers.zero_one`).

Settings of the release (xiaomi-automl/FairDARTS, fairdarts/train_search.py, architect.py,
separate_loss.py; docs/releases/fair_beta_minus.md): DARTS' ops without `none` (7), 8 cells of
16 channels, 50 epochs, batch 128, SGD lr 0.005 cosine to 0.001, momentum 0.9, weight decay
3e-4, gradient clip 5; alphas by Adam 3e-3, betas (0.9, 0.999), decay 1e-3; first order (the
release has no unrolled step); zero-one weight 10. The cell: the two incoming edges whose
largest sigmoid is largest, the best op on each, ranked by the sigmoids as the release's
`parse` does.

Where this differs from the release: the release then drops every chosen edge whose sigmoid is
below 0.85 (a node may keep 0, 1 or 2 inputs) and evaluates that sparse cell in a network of
its own (`DCOCell`); this project's evaluation network takes two inputs per node, so the cell
keeps both edges.
"""

from configs import cifar_search


def get_config():
  config = cifar_search.get_config()
  config.search_space = "darts_without_none"
  config.relaxation = "sigmoid"
  config.regulariser.name = "zero_one"
  config.regulariser.scale = 10.0
  config.batch_size = 128
  config.learning_rate = 0.005
  config.alpha_learning_rate = 3e-3
  config.alpha_b1 = 0.9
  config.hypergradient.method = "first_order"
  return config
