"""Train a DARTS genotype on ImageNet in the mobile setting (docs/reference.md).

    python main.py --config configs/imagenet_eval.py --config.genotype=DARTS_V2

14 cells, C=48, auxiliary head (weight 0.4), label smoothing 0.1, SGD 0.1 decayed x0.97 per
epoch, 250 epochs at batch 128. ImageNet is not downloadable automatically: prepare
tensorflow-datasets' `imagenet2012` from the manually downloaded archives, or pass
`--config.data.dir=/path/to/imagenet` holding train/<class>/*.JPEG and val/<class>/*.JPEG.
Derived from configs/cifar_eval.py.
"""

from configs import cifar_eval


def get_config():
  config = cifar_eval.get_config()
  config.data.name = "imagenet2012"
  config.data.num_workers = 8  # host threads decoding and augmenting JPEGs
  del config.data.num_train, config.data.num_test
  config.augment.crop_flip = False  # random-resized crop, flip and colour jitter on the host
  config.augment.cutout = 0
  config.model.channels = 48
  config.model.layers = 14
  config.model.drop_path_prob = 0.0  # the official train_imagenet.py default
  config.epochs = 250
  config.batch_size = 128
  config.lr_schedule = "exponential"
  config.learning_rate = 0.1
  config.lr_decay = 0.97
  config.weight_decay = 3e-5
  config.label_smoothing = 0.1
  config.log_every = 50
  return config
