"""DARTS' CNN search on CIFAR-10 with the paper's settings (docs/reference.md).

    python main.py --config configs/cifar_search.py --workdir runs/cifar_search

The exact second-order hypergradient is the default; DARTS' own approximation and first order:
`--config.hypergradient.method=finite_difference` or `=first_order`. Without network access,
point at the CIFAR-10 binary files: `--config.data.dir=/path/to/cifar-10-batches-bin`.
Several seeds in one program: `--config.num_seeds=4` (seeds 2, 3, 4, 5, vmapped).
"""

import ml_collections

from darts_jax import bilevel
from darts_jax.train import checkpoints


def get_config():
  config = ml_collections.ConfigDict()
  config.task = "cnn_search"
  config.seed = 2  # the official search script's default
  # N > 1: N searches, seeds seed .. seed + N - 1, in one vmapped program; each seed's
  # outputs in <workdir>/seed_<s>/, their mean and std in metrics.jsonl and summary.json.
  config.num_seeds = 1
  # How many seeds the step computes at once (vmap); the rest follow in the same program
  # (lax.map). 0: all at once, fastest on GPU/TPU; on a CPU 1 is faster, as vmapped
  # convolutions become grouped ones there (benchmarks/README.md, "Many seeds").
  config.vmap_seeds = 0
  config.search_space = "darts"  # darts | darts_without_none | nas_bench_201 (darts_jax.spaces)
  # The map from alphas to mixing weights (darts_jax.relaxations): DARTS' softmax.
  config.relaxation = "softmax"
  # A term of the alphas added to the alpha step's objective (darts_jax.regularisers): none
  # in DARTS; beta_decay (beta-DARTS), zero_one (FairDARTS), dirichlet_kl (DrNAS' KL option).
  config.regulariser = ml_collections.ConfigDict({"name": "none", "scale": 0.0})
  config.data = ml_collections.ConfigDict()
  config.data.name = "cifar10"
  config.data.dir = ""  # a folder of CIFAR-10 binary files; empty: tensorflow-datasets
  config.data.tfds_data_dir = ""  # empty: tfds' default (~/tensorflow_datasets)
  config.data.train_portion = 0.5  # first half trains the weights, second half the alphas
  config.data.num_train = 0  # 0: all 50,000 training images
  config.augment = True  # random crop (padding 4) + horizontal flip on both halves
  config.model = ml_collections.ConfigDict()
  config.model.channels = 16
  config.model.layers = 8
  config.model.remat = "edge"  # see darts_jax.spaces.darts_cnn.supernet.SearchNetwork.remat
  # Compute dtype: float32 | bfloat16. bfloat16 is mixed precision for GPU/TPU: convolutions
  # in bfloat16; parameters, optimiser states, BN statistics and the loss stay float32.
  config.model.dtype = "float32"
  config.epochs = 50
  config.batch_size = 64
  config.learning_rate = 0.025
  config.learning_rate_min = 0.001
  config.momentum = 0.9
  config.nesterov = False
  config.weight_decay = 3e-4
  config.grad_clip = 5.0
  config.alpha_learning_rate = 3e-4
  config.alpha_weight_decay = 1e-3
  config.alpha_optimizer = "adam"  # adam (betas 0.5, 0.999) | sgd (plain: SNAS' release)
  config.alpha_grad_clip = 0.0  # the alphas' gradient-norm clip; 0: none (SNAS: 10)
  # method: exact | finite_difference | first_order; unroll_steps (1), exact_mode
  # (forward_over_reverse | reverse_over_reverse), fd_epsilon (0.01): darts_jax.hypergradient.
  config.hypergradient = bilevel.default_config("exact")
  config.eval_examples = 0  # search-validation images evaluated per epoch; 0: the whole half
  config.log_every = 10  # steps between progress-bar updates (each one syncs with the device)
  config.progress_bar = True
  # Checkpoints in <workdir>/checkpoints/last: every N steps, each epoch's end and on SIGTERM;
  # a run started on a workdir that holds some resumes from the newest (README, Resuming).
  # Fields: every_steps, keep (3), resume_changed (False: a changed config is refused).
  config.checkpoint = checkpoints.default_config(every_steps=100)
  # CPU only: XLA's older loop emitters, ~13% faster steps, ~2.5x slower compile
  # (darts_jax/train/xla_flags.py). Worth it for a search of thousands of steps.
  config.xla_cpu_fast_kernels = True
  return config
