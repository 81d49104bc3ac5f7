"""DARTS' recurrent cell search on Penn Treebank, the paper's settings (docs/reference.md).

    python main.py --config configs/ptb_search.py --config.data.dir=/data/ptb

The folder holds ptb.{train,valid,test}.txt (or {train,valid,test}.txt). Exact second-order
hypergradient by default; `--config.hypergradient.method=finite_difference | first_order`.
Settings from the official rnn/train_search.py where the paper is silent (seed 3, validation
batch 10, BPTT at most 35 + 20).
"""

import ml_collections

from darts_jax import bilevel
from darts_jax.train import checkpoints


def get_config():
  config = ml_collections.ConfigDict()
  config.task = "rnn_search"
  config.seed = 3
  config.data = ml_collections.ConfigDict()
  config.data.name = "ptb"
  config.data.dir = "data/ptb"
  config.data.num_train = 0  # 0: every training token
  config.data.num_valid = 0
  config.model = ml_collections.ConfigDict()
  config.model.embed_size = 300
  config.model.hidden_size = 300
  config.model.dropout = 0.75  # cell output (locked)
  config.model.dropout_h = 0.25  # node inputs (variational)
  config.model.dropout_x = 0.75  # cell input x (variational)
  config.model.dropout_i = 0.2  # embedding output (locked)
  config.model.dropout_e = 0.0  # whole words of the embedding
  config.epochs = 50
  config.batch_size = 256
  config.eval_batch_size = 10
  config.bptt = 35
  config.max_seq_len_delta = 20
  config.window_bucket = 5  # windows are padded to a multiple of this: few compiled shapes
  config.learning_rate = 20.0
  config.weight_decay = 5e-7
  config.grad_clip = 0.25
  config.tar = 1e-3  # temporal activation regularisation (beta)
  config.alpha_learning_rate = 3e-3
  config.alpha_weight_decay = 1e-3
  # The map from alphas to mixing weights (darts_jax.relaxations): DARTS' softmax.
  config.relaxation = "softmax"
  # method: exact | finite_difference | first_order; unroll_steps (1), exact_mode
  # (forward_over_reverse | reverse_over_reverse), fd_epsilon (0.01): darts_jax.hypergradient.
  config.hypergradient = bilevel.default_config("exact")
  config.log_every = 10
  config.progress_bar = True
  # Checkpoints in <workdir>/checkpoints/last: every N steps, each epoch's end and on SIGTERM;
  # a run started on a workdir that holds some resumes from the newest (README, Resuming).
  # Fields: every_steps, keep (3), resume_changed (False: a changed config is refused).
  config.checkpoint = checkpoints.default_config(every_steps=100)
  return config
