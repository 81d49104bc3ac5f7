"""Train a genotype from scratch: DARTS' CIFAR-10 and ImageNet evaluation, read top to bottom.

    python main.py --config configs/cifar_eval.py --config.genotype=DARTS_V2
    python main.py --config configs/cifar_eval.py --config.genotype=runs/search/genotype.json

Each step is one jitted function: augmentation on the device (CIFAR: random crop, flip,
normalise, cutout; ImageNet arrives augmented from the host pipeline and is only normalised
here), the network in training mode with drop path at this epoch's rate, cross-entropy (label
smoothed on ImageNet) plus 0.4 x the auxiliary head's, and SGD (momentum, L2 weight decay,
gradients clipped to norm 5) at this epoch's learning rate. After every epoch the test split
is evaluated; the last and the best model are kept.

Writes to the workdir: `metrics.jsonl` and TensorBoard scalars, `checkpoints/last/` (the
whole run: started again on the same workdir, it resumes) and `checkpoints/best/` (Orbax),
`genotype.json` (what was trained) and `summary.json`.
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from darts_jax.bilevel import cosine_per_epoch
from darts_jax.data import augment
from darts_jax.data import images as data
from darts_jax.errors import ConfigError
from darts_jax.spaces.darts_cnn.genotypes import genotype_from_name_or_file
from darts_jax.spaces.darts_cnn.network import (NetworkCIFAR, NetworkImageNet, count_mult_adds,
                                                count_params, init_network)
from darts_jax.train import loop, parallel

SCHEDULES = ("cosine", "exponential")


class TrainState(NamedTuple):
  params: Any
  batch_stats: Any
  opt_state: Any


def learning_rate_schedule(config, steps_per_epoch: int):
  """The per-epoch learning rate as a function of the step count.

  "cosine" (CIFAR-10): lr_min + (lr - lr_min)(1 + cos(pi e / epochs)) / 2 for epoch e, lr_min
  0 (the official CosineAnnealingLR stepped once per epoch); "exponential" (ImageNet):
  lr * decay^e (the official StepLR(1, gamma=0.97)).
  """
  if config.lr_schedule == "cosine":
    return cosine_per_epoch(config.learning_rate, config.learning_rate_min,
                            config.epochs, steps_per_epoch)
  return lambda count: config.learning_rate * config.lr_decay ** (count // steps_per_epoch)


def make_optimizer(config, steps_per_epoch: int) -> optax.GradientTransformation:
  """Clip to global norm, then L2 decay added to the gradient, then SGD with momentum: the
  order of the official `clip_grad_norm_` + `SGD(weight_decay=...)`."""
  return optax.chain(optax.clip_by_global_norm(config.grad_clip),
                     optax.add_decayed_weights(config.weight_decay),
                     optax.sgd(learning_rate_schedule(config, steps_per_epoch),
                               momentum=config.momentum))


def build_model(config, genotype, num_classes: int):
  kind = NetworkImageNet if config.data.name == "imagenet2012" else NetworkCIFAR
  return kind(genotype, channels=config.model.channels, num_classes=num_classes,
              layers=config.model.layers, auxiliary=config.model.auxiliary_weight > 0,
              scan_cells=config.model.scan_cells, remat=config.model.remat,
              dtype=config.model.dtype)


def cross_entropy(logits, labels, label_smoothing: float = 0.0):
  """Mean cross-entropy against one-hot targets smoothed to (1 - eps) + eps / classes."""
  targets = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
  if label_smoothing:
    targets = optax.smooth_labels(targets, label_smoothing)
  return optax.softmax_cross_entropy(logits, targets).mean()


def make_train_step(model, optimizer, config, mean, std):
  """`step(state, key, batch, drop_path_rate) -> (state, metrics)`, not yet jitted."""
  crop_flip = config.augment.crop_flip
  cutout = config.augment.cutout
  aux_weight = config.model.auxiliary_weight

  def step(state: TrainState, key, batch, drop_path_rate):
    k_crop, k_cutout, k_drop = jax.random.split(key, 3)
    images = batch["images"]
    if crop_flip:
      images = augment.random_crop_flip(k_crop, images)
    images = augment.normalise(images, mean, std)
    if cutout:
      images = augment.cutout(k_cutout, images, cutout)

    def loss_fn(params):
      (logits, aux_logits), updates = model.apply(
          {"params": params, "batch_stats": state.batch_stats}, images, train=True,
          drop_path_rate=drop_path_rate, rngs={"drop_path": k_drop}, mutable=["batch_stats"])
      loss = cross_entropy(logits, batch["labels"], config.label_smoothing)
      total = loss
      if aux_logits is not None:
        total = loss + aux_weight * cross_entropy(aux_logits, batch["labels"],
                                                  config.label_smoothing)
      return total, (loss, logits, updates["batch_stats"])

    (_, (loss, logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["labels"])
    return TrainState(params, batch_stats, opt_state), {"loss": loss, "accuracy": accuracy,
                                                        "grad_norm": optax.tree.norm(grads)}

  return step


def make_eval_step(model, mean, std):
  """`eval_step(params, batch_stats, batch, mask) -> (loss sum, top-1 sum, top-5 sum)`."""

  def eval_step(params, batch_stats, batch, mask):
    images = augment.normalise(batch["images"], mean, std)
    logits, _ = model.apply({"params": params, "batch_stats": batch_stats}, images,
                            train=False)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"])
    top5 = jax.lax.top_k(logits, min(5, logits.shape[-1]))[1]
    correct1 = top5[:, 0] == batch["labels"]
    correct5 = jnp.any(top5 == batch["labels"][:, None], axis=-1)
    return jnp.sum(losses * mask), jnp.sum(correct1 * mask), jnp.sum(correct5 * mask)

  return eval_step


class ImageData(NamedTuple):
  """An evaluation run's data.

  Attributes:
    train_batches: `train_batches(epoch=, index=)`, the training batches from that position
      on (an iterator; ImageNet's has a `close()` for its threads).
    steps_per_epoch: training steps per epoch (the last partial batch is dropped).
    test_batches: `test_batches()` yields `(batch, mask)` pairs over the test split.
    image_shape, num_classes, mean, std: what the network and the normalisation need.
    num_test: the number of test images.
    host_local: whether the batches hold this host's rows only.
  """

  train_batches: Callable
  steps_per_epoch: int
  test_batches: Callable
  image_shape: tuple
  num_classes: int
  mean: Any
  std: Any
  num_test: int
  host_local: bool


def load_data(config) -> ImageData:
  """CIFAR-10 (tfds, binary files or .npz) or ImageNet (`config.data.name`) for training."""
  if config.data.name == "imagenet2012":
    from darts_jax.data import imagenet  # Pillow pipeline; CIFAR runs never import it

    source = imagenet.load_imagenet(config.data)
    train = functools.partial(imagenet.TrainBatches, source.train, config.batch_size,
                              seed=config.seed, num_workers=config.data.num_workers)
    test_batches = lambda: imagenet.eval_batches(source.validation, config.batch_size,
                                                 num_workers=config.data.num_workers)
    return ImageData(train, len(source.train) // config.batch_size, test_batches,
                     (224, 224, 3), source.num_classes, imagenet.MEAN, imagenet.STD,
                     len(source.validation), True)
  dataset = data.load(config.data)
  train_split, test_split = dataset.train, dataset.test
  if config.data.get("num_train"):
    train_split = data.Split(*(a[:config.data.num_train] for a in train_split))
  if config.data.get("num_test"):
    test_split = data.Split(*(a[:config.data.num_test] for a in test_split))
  # The last partial batch of each epoch is dropped (CIFAR-10: 80 of 50,000 images, a new
  # random 80 each epoch), so every step has one compiled shape.
  train = functools.partial(data.Batches, train_split, config.batch_size, seed=config.seed)
  test_batches = lambda: data.padded_batches(test_split, config.batch_size)
  return ImageData(train, len(train_split.labels) // config.batch_size, test_batches,
                   train_split.images.shape[1:], dataset.num_classes, dataset.mean,
                   dataset.std, len(test_split.labels), False)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains `config.genotype` from scratch; returns the final summary."""
  genotype = genotype_from_name_or_file(config.genotype)
  images = load_data(config)
  steps_per_epoch = images.steps_per_epoch
  if not steps_per_epoch:
    raise data.DataError(f"--config.batch_size={config.batch_size} is larger than the "
                         "training split: lower it.")
  side = (images.image_shape[0] + 3) // 4  # the CIFAR network's map after two reductions
  if config.model.auxiliary_weight and not images.host_local and side < 8:
    # Its 5x5 pool (stride 3) and 2x2 convolution need at least 8x8 there.
    raise ConfigError(f"--config.model.auxiliary_weight={config.model.auxiliary_weight}: the "
                      "auxiliary head needs images of at least 29x29, and these are "
                      f"{images.image_shape[0]}x{images.image_shape[1]}: set "
                      "--config.model.auxiliary_weight=0.")

  model = build_model(config, genotype, images.num_classes)
  variables = init_network(model, config.seed, images.image_shape)
  optimizer = make_optimizer(config, steps_per_epoch)
  state = TrainState(variables["params"], variables["batch_stats"],
                     optimizer.init(variables["params"]))
  params_count = count_params(state.params)
  aux_count = count_params(state.params, include_auxiliary=True) - params_count
  mult_adds = count_mult_adds(model, images.image_shape)
  print(f"{type(model).__name__}: {config.genotype}, {model.layers} cells, C={model.channels}; "
        f"{params_count:,} parameters (+{aux_count:,} in the auxiliary head), "
        f"{mult_adds / 1e6:.0f}M mult-adds per image\n"
        f"training {config.epochs} epochs of {steps_per_epoch} steps, batch {config.batch_size}; "
        + (f"testing on {images.num_test} images" if images.num_test else
           "the data has no test split: no test evaluation"), flush=True)

  # Data parallel over every device of every host: the state replicated, batches split.
  mesh = parallel.data_mesh()
  state = parallel.replicate(state, mesh)
  step_fn = jax.jit(make_train_step(model, optimizer, config, images.mean, images.std),
                    donate_argnums=0, out_shardings=parallel.replicated(mesh))
  eval_step = jax.jit(make_eval_step(model, images.mean, images.std),
                      out_shardings=parallel.replicated(mesh))
  shard = lambda batch: parallel.shard_batch(batch, mesh, local=images.host_local)
  schedule = learning_rate_schedule(config, steps_per_epoch)
  step_key = jax.random.PRNGKey(config.seed + 1)
  # `test`: the last epoch's results (also when the workdir holds a finished run).
  run = {"best": -1.0, "test": {}}

  def write_genotype():
    with open(os.path.join(workdir, "genotype.json"), "w") as f:
      f.write(genotype.to_json())

  def resume(meta, ckpt):
    del ckpt
    run.update(best=meta.get("best", -1.0), test=meta.get("test", {}))
    run["batches"] = images.train_batches(epoch=meta["epoch"], index=meta["index"])

  # The official schedule: drop_path_prob * epoch / epochs, from 0 in the first epoch.
  drop_path_rate = lambda epoch: np.float32(config.model.drop_path_prob * epoch / config.epochs)

  def train_step(state, epoch, index, step):
    del index
    state, metrics = step_fn(state, jax.random.fold_in(step_key, step),
                             shard(next(run["batches"])), drop_path_rate(epoch))
    return state, loop.StepLog(metrics["loss"], metrics["accuracy"],
                               {"gradient norm": metrics["grad_norm"]})

  def end_of_epoch(state, epoch, step, progress, ckpt):
    train_seconds = time.perf_counter() - progress.started
    # Without a test split (an .npz of train_* arrays) there is nothing to evaluate.
    test = (evaluate(eval_step, state, map(shard, images.test_batches()), images.num_test)
            if images.num_test else NO_TEST)
    is_best = bool(test["accuracy"] > run["best"])
    run.update(best=max(run["best"], test["accuracy"]), test=test)
    if is_best:
      ckpt.save_best(step // steps_per_epoch, {"params": state.params,
                                               "batch_stats": state.batch_stats})
    scalars = {"train_loss": progress.loss, "train_accuracy": progress.accuracy,
               **{f"test_{k}": v for k, v in test.items() if images.num_test},
               "learning_rate": float(schedule(epoch * steps_per_epoch)),
               "drop_path_rate": float(drop_path_rate(epoch)),
               "train_images_per_second": (steps_per_epoch - progress.start) * config.batch_size
                                          / train_seconds}
    tested = (f" | test loss {test['loss']:.4f} acc {test['accuracy']:.4f} top-5 "
              f"{test['top5_accuracy']:.4f}{' (best)' * is_best}") if images.num_test else ""
    report = lambda s: (
        f"epoch {epoch + 1}/{config.epochs}: train loss {s['train_loss']:.4f} acc "
        f"{s['train_accuracy']:.4f}{tested} | lr "
        f"{s['learning_rate']:.5f} drop path {s['drop_path_rate']:.3f} | "
        f"{s['train_images_per_second']:.1f} img/s")
    return loop.EpochEnd(state, scalars, {"best": run["best"], "test": test}, report)

  try:
    state, _ = loop.run(config, workdir, state, steps_per_epoch=steps_per_epoch,
                        train_step=train_step, end_of_epoch=end_of_epoch, resume=resume,
                        record=lambda: {"best": run["best"]}, on_open=write_genotype,
                        best=True)
  finally:  # the host pipeline's threads
    getattr(run.get("batches"), "close", lambda: None)()

  best, test = run["best"], run["test"]
  summary = {"genotype": config.genotype, "parameters": params_count,
             "parameters_with_auxiliary": count_params(state.params, True),
             "mult_adds": mult_adds, "epochs": config.epochs,
             "final_test_accuracy": test["accuracy"], "best_test_accuracy": best,
             "final_test_top5_accuracy": test["top5_accuracy"]}
  if not images.num_test:  # JSON null, not NaN
    summary.update(final_test_accuracy=None, best_test_accuracy=None,
                   final_test_top5_accuracy=None)
  if parallel.is_primary():
    with open(os.path.join(workdir, "summary.json"), "w") as f:
      json.dump(summary, f, indent=2)
  tested = (f"test accuracy {test['accuracy']:.4f} final, {best:.4f} best (error "
            f"{100 * (1 - best):.2f}%)") if images.num_test else "no test split"
  print(f"done: {params_count / 1e6:.2f}M parameters, {mult_adds / 1e6:.0f}M mult-adds; "
        f"{tested}\nwrote {workdir}/checkpoints/{{last,best}}, summary.json, metrics.jsonl",
        flush=True)
  return summary


NO_TEST = {"loss": math.nan, "accuracy": -1.0, "top5_accuracy": math.nan}


def evaluate(eval_step, state: TrainState, batches, num_examples: int) -> dict:
  """Mean loss, top-1 and top-5 accuracy over `(batch, mask)` pairs."""
  sums = np.zeros(3)
  for batch, mask in batches:
    sums += [float(v) for v in eval_step(state.params, state.batch_stats, batch, mask)]
  loss, top1, top5 = sums / num_examples
  return {"loss": loss, "accuracy": top1, "top5_accuracy": top5}
