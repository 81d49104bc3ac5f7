"""A DARTS search in seconds on a laptop CPU: choose each layer's activation of a small MLP.

    python main.py --config configs/toy_search.py

The teacher MLP's activations are known, so you can see whether the bilevel search (exact
second-order hypergradient by default) recovers them. Try
`--config.hypergradient.method=first_order` or `=finite_difference` to compare.
"""

import ml_collections

from darts_jax import bilevel
from darts_jax.train import checkpoints


def get_config():
  config = ml_collections.ConfigDict()
  config.task = "toy_search"
  config.seed = 0
  config.teacher_ops = ("sin", "relu")
  config.dim = 8
  config.num_examples = 512  # per half: weights train on one half, alphas on the other
  config.batch_size = 64
  config.epochs = 20
  config.steps_per_epoch = 25
  # DARTS' optimisers (docs/reference.md, "Search optimisation"), a larger weight lr for this
  # tiny problem.
  config.learning_rate = 0.1
  config.momentum = 0.9
  config.weight_decay = 3e-4
  config.grad_clip = 5.0
  config.alpha_learning_rate = 3e-2
  config.alpha_weight_decay = 1e-3
  # method: exact | finite_difference | first_order; unroll_steps (1), exact_mode
  # (forward_over_reverse | reverse_over_reverse), fd_epsilon (0.01): darts_jax.hypergradient.
  config.hypergradient = bilevel.default_config("exact")
  config.log_every = 5
  config.progress_bar = False  # an epoch takes a fraction of a second
  config.checkpoint = checkpoints.default_config(every_steps=100)
  return config
