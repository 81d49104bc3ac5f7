"""DARTS-PT (Wang et al., ICLR 2021) on DARTS' space, CIFAR-10: the cell of a searched
supernet chosen by what removing each op costs it (darts_jax/train/darts_pt.py).

    python main.py --config configs/cifar_search.py --config.search_space=darts_without_none \
        --config.hypergradient.method=first_order --workdir runs/search_s5
    python main.py --config configs/cifar_darts_pt.py --config.search_workdir=runs/search_s5 \
        --workdir runs/darts_pt

The projection starts from the last checkpoint of a finished `cnn_search` run, whose supernet
fields (search space, relaxation, model, data) this config must share: a mismatch is refused
in one line naming the flag to pass. The release (ruocwang/darts-pt, sota/cnn/projection.py
and exp_scripts/darts-proj-sota.sh; docs/releases/pc_darts_pt.md, section 2) projects a
50-epoch first-order DARTS supernet of its space S5, DARTS' space without `none`
("darts_without_none" here, the default below); `--config.search_space=darts` projects one of
DARTS' own 8 ops, where `none` is never kept (DARTS' rule). Defaults, the release's:

  * 5 tuning epochs between decisions (`proj_intv` 5 in the script; its argparse default and
    the issue's figure is 10: `--config.projection.interval=10`), so 81 epochs: 14 rounds of
    one normal and one reduction edge in random order, then 3 rounds of a node's inputs;
  * the accuracy criterion on the whole alpha half (the release's `--fast`: eval_batches=1);
  * tuning: SGD restarted at lr 0.0025 (a tenth of the search's), cosine to 0.001 over the
    tuning epochs, momentum 0.9, decay 3e-4, clip 5, batch 64; the alphas' first-order Adam
    step goes on (3e-4, betas (0.5, 0.999), decay 1e-3, its state the search's).
"""

from configs import cifar_search


def get_config():
  config = cifar_search.get_config()
  config.task = "darts_pt"
  for field in ("num_seeds", "vmap_seeds", "epochs", "regulariser"):
    del config[field]  # one supernet; the length follows from projection.interval
  config.search_workdir = ""  # the --workdir of the search projected (required)
  config.search_space = "darts_without_none"  # the release's S5
  config.learning_rate = 0.0025  # the release: the search's learning rate / 10
  config.learning_rate_min = 0.001
  config.hypergradient.method = "first_order"  # the release's architect_ig.py
  config.projection = {
      "interval": 5,  # tuning epochs between two decisions (proj_intv)
      "edge_order": "random",  # random | fixed (edges and nodes in index order)
      "criterion": "accuracy",  # accuracy | loss (proj_crit)
      "update_alphas": True,  # False: the alphas stay the search's while tuning
      "eval_batches": 0,  # alpha-half batches per candidate; 0: all (release's --fast: 1)
      "vmap_candidates": 0,  # candidates evaluated at once (vmap); 0: all
  }
  return config
