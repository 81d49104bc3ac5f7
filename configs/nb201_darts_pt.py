"""DARTS-PT (Wang et al., ICLR 2021) on NAS-Bench-201, CIFAR-10: each edge's op chosen by
what removing it costs the searched supernet (darts_jax/train/darts_pt.py); the selected cell
is looked up in the benchmark's shipped table.

    python main.py --config configs/nb201_search.py --config.hypergradient.method=first_order \
        --config.epochs=100 --workdir runs/nb201
    python main.py --config configs/nb201_darts_pt.py --config.search_workdir=runs/nb201 \
        --workdir runs/nb201_pt

The release (ruocwang/darts-pt, nasbench201/projection.py, exp_scripts/darts-proj-201.sh;
docs/releases/pc_darts_pt.md, section 2) projects a 100-epoch first-order DARTS supernet: 6
edges in random order, one every 5 tuning epochs (decisions at epochs 0, 5, 10, 15, 20 and
24 of 25), `none` a candidate like every op, the accuracy criterion on the whole alpha half.
Tuning: SGD restarted at a constant lr 0.0025 (no schedule: learning_rate_min equal to it),
momentum 0.9, decay 3e-4 and no Nesterov (the release's search script; this project's
nb201_search.py follows NAS-Bench-201's DARTS config, Nesterov and 5e-4, for the search);
the alphas' first-order Adam step goes on. The supernet fields must be the search's.
"""

from configs import nb201_search


def get_config():
  config = nb201_search.get_config()
  config.task = "darts_pt"
  for field in ("num_seeds", "vmap_seeds", "epochs", "regulariser"):
    if field in config:
      del config[field]
  config.search_workdir = ""  # the --workdir of the search projected (required)
  config.learning_rate = 0.0025  # the release: the search's learning rate / 10, constant
  config.learning_rate_min = 0.0025
  config.nesterov = False
  config.weight_decay = 3e-4
  config.hypergradient.method = "first_order"
  config.projection = {
      "interval": 5,
      "edge_order": "random",  # random | fixed
      "criterion": "accuracy",  # accuracy | loss
      "update_alphas": True,
      "eval_batches": 0,  # 0: the whole alpha half
      "vmap_candidates": 0,  # 0: all 5 at once
  }
  return config
