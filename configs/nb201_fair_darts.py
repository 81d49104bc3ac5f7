"""FairDARTS (Chu et al., "Fair DARTS: Eliminating Unfair Advantages in Differentiable
Architecture Search", ECCV 2020) on NAS-Bench-201.

    python main.py --config configs/nb201_fair_darts.py --workdir runs/nb201_fair_darts

Each op weighted by its own sigmoid(alpha) (`darts_jax.relaxations.sigmoid`), with the
zero-one loss `-10 * mean((sigmoid(alpha) - 0.5)^2)` added to the alpha step's objective from
the first epoch (`darts_jax.regularisers.zero_one`; xiaomi-automl/FairDARTS,
fairdarts/separate_loss.py, `--aux_loss_weight 10`).

The release searches the DARTS space only (first order, Adam 3e-3 with betas (0.9, 0.999) on
the alphas, SGD 0.005, batch 128, 50 epochs, and a cell by threshold 0.85 on the sigmoids);
it has no NAS-Bench-201 code, so the rest is this project's NAS-Bench-201 protocol
(configs/nb201_search.py: 50 epochs, batch 64, SGD 0.025 Nesterov, Adam 3e-4 (0.5, 0.999)),
first order as the release, and the cell the benchmark's argmax of alpha per edge (the
sigmoid is monotone: the same op as the argmax of sigmoid(alpha)).
"""

from configs import nb201_search


def get_config():
  config = nb201_search.get_config()
  config.relaxation = "sigmoid"
  config.regulariser.name = "zero_one"
  config.regulariser.scale = 10.0
  config.hypergradient.method = "first_order"
  return config
