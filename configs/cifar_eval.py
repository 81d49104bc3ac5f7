"""Train a DARTS genotype from scratch on CIFAR-10, the paper's settings (docs/reference.md).

    python main.py --config configs/cifar_eval.py --config.genotype=DARTS_V2

The genotype is a published name (DARTS_V1, DARTS_V2) or the genotype.json a search wrote:
`--config.genotype=runs/cifar_search/genotype.json`. 20 cells, C=36, auxiliary head (weight
0.4), drop path 0.2 ramped over the epochs, cutout 16, 600 epochs at batch 96. Without network
access: `--config.data.dir=/path/to/cifar-10-batches-bin`.
"""

import ml_collections

from darts_jax.train import checkpoints


def get_config():
  config = ml_collections.ConfigDict()
  config.task = "cnn_eval"
  config.seed = 0  # the official train.py's default
  config.genotype = "DARTS_V2"
  config.data = ml_collections.ConfigDict()
  config.data.name = "cifar10"
  config.data.dir = ""  # a folder of CIFAR-10 binary files; empty: tensorflow-datasets
  config.data.tfds_data_dir = ""
  config.data.num_train = 0  # 0: all 50,000 training images
  config.data.num_test = 0  # 0: all 10,000 test images
  config.augment = ml_collections.ConfigDict()
  config.augment.crop_flip = True  # random crop (padding 4) + horizontal flip
  config.augment.cutout = 16  # side of the cutout square, after normalisation; 0: off
  config.model = ml_collections.ConfigDict()
  config.model.channels = 36
  config.model.layers = 20
  config.model.auxiliary_weight = 0.4  # 0: no auxiliary head
  config.model.drop_path_prob = 0.2  # reached at the last epoch, linearly from 0
  config.model.scan_cells = True  # same-shaped consecutive cells in one lax.scan
  config.model.remat = True  # recompute each cell in the backward pass: half the memory
  # Compute dtype: float32 | bfloat16. bfloat16 is mixed precision for GPU/TPU: convolutions
  # in bfloat16; parameters, optimiser states, BN statistics and the loss stay float32.
  config.model.dtype = "float32"
  config.epochs = 600
  config.batch_size = 96
  config.lr_schedule = "cosine"  # cosine (to learning_rate_min) | exponential (lr_decay)
  config.learning_rate = 0.025
  config.learning_rate_min = 0.0
  config.lr_decay = 0.97  # used by the exponential schedule only
  config.momentum = 0.9
  config.weight_decay = 3e-4
  config.grad_clip = 5.0
  config.label_smoothing = 0.0
  config.log_every = 20  # steps between progress-bar updates (each one syncs with the device)
  config.progress_bar = True
  # Checkpoints in <workdir>/checkpoints/last: every N steps, each epoch's end and on SIGTERM;
  # a run started on a workdir that holds some resumes from the newest (README, Resuming).
  # Fields: every_steps, keep (3), resume_changed (False: a changed config is refused).
  config.checkpoint = checkpoints.default_config(every_steps=200)
  config.xla_cpu_fast_kernels = False
  return config
