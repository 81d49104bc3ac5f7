"""DARTS' CNN architecture search (CIFAR-10 in the paper), read top to bottom.

    python main.py --config configs/cifar_search.py --workdir runs/search
    python main.py --config configs/nb201_search.py --workdir runs/nb201

The search space is `config.search_space` (`darts_jax.spaces`): DARTS' own ("darts")
or NAS-Bench-201's ("nas_bench_201"); the step and this loop are the same for both.

Each step is one jitted function: augment both batches on the device, the alpha step on the
alpha half's batch through `darts_jax.hypergradient` (exact by default), then the weight step
on the weight half's batch with the new alphas (`darts_jax.bilevel`). Each epoch reports the
training loss/accuracy, the search-validation loss/accuracy (the supernet in evaluation mode
on the alpha half, as the official code reports it), the derived genotype and softmax(alpha).

Writes to the workdir: `metrics.jsonl` and TensorBoard scalars, `genotypes/epoch_NNN.json`,
the final `genotype.json`, `alphas.npz` (final alphas and their softmax per epoch), and
pictures of the cells (DARTS: `normal.png`, `reduction.png`; NAS-Bench-201: `cell.png`) and
of softmax(alpha) over the epochs, `alphas.png`; `checkpoints/last/` and `config.json`, from which a
run started again on the same workdir resumes (`darts_jax.train.checkpoints`).
"""

from __future__ import annotations

import functools
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from darts_jax import bilevel, spaces
from darts_jax.data import augment
from darts_jax.data import images as data
from darts_jax.errors import ConfigError
from darts_jax.spaces import drawing
from darts_jax.train import loop, parallel


def make_loss_fn(model):
  """The supernet's cross-entropy as `bilevel.bilevel_step` takes it.

  `loss(weights, alphas, batch, LossState(batch_stats, ()), key) -> (loss, (LossState(new
  batch_stats, ()), {"accuracy"}))` for `batch = {"images", "labels"}`; in training mode the
  running BN statistics do not change the loss, only the ones returned. `key` feeds the
  relaxation (unused by the softmax).
  """

  def loss_fn(weights, alphas, batch, model_state, key):
    logits, updates = model.apply({"params": weights, "batch_stats": model_state.shared},
                                  batch["images"], alphas, train=True, relax_key=key,
                                  mutable=["batch_stats"])
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"]).mean()
    accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["labels"])
    return loss, (model_state._replace(shared=updates["batch_stats"]), {"accuracy": accuracy})

  return loss_fn


def make_search_step(model, opts: bilevel.BilevelOptimizers, **hypergradient_options):
  """`step(state, train, val, key) -> (state, metrics)`, not yet jitted: `bilevel_step` with
  the supernet's loss; the options are the hypergradient's (`method`, `unroll_steps`,
  `exact_mode`, `fd_epsilon`)."""
  return functools.partial(bilevel.bilevel_step, make_loss_fn(model), opts,
                           **hypergradient_options)


def make_optimizers(config, steps_per_epoch: int) -> bilevel.BilevelOptimizers:
  """DARTS' optimisers (`bilevel.darts_optimizers`) with the config's settings."""
  return bilevel.darts_optimizers(
      lr=config.learning_rate, lr_min=config.learning_rate_min, epochs=config.epochs,
      steps_per_epoch=steps_per_epoch, momentum=config.momentum, nesterov=config.nesterov,
      weight_decay=config.weight_decay, grad_clip=config.grad_clip,
      alpha_lr=config.alpha_learning_rate, alpha_weight_decay=config.alpha_weight_decay)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs the search described by `config`; returns the final genotype and metrics."""
  space = spaces.get(config.search_space)  # config checked by tasks.preflight (schema.py)
  dataset = data.load(config.data)
  train = dataset.train
  if config.data.get("num_train"):
    train = data.Split(train.images[:config.data.num_train], train.labels[:config.data.num_train])
  weight_half, alpha_half = data.search_split(train, config.data.train_portion)
  print(f"{config.data.name}: {len(weight_half.labels)} images train the weights, "
        f"{len(alpha_half.labels)} the alphas; images {train.images.shape[1:]}", flush=True)

  # NAS-Bench-201: the benchmark's accuracy of the derived cell, each epoch (shipped table,
  # or the user's converted one: config.benchmark_table).
  table = None
  if config.search_space == "nas_bench_201":
    from darts_jax import nas_bench
    table = nas_bench.load(config.get("benchmark_table") or None)

  model = space.build(config, dataset.num_classes)
  weights, batch_stats = space.init(model, config.seed, train.images.shape[1:])
  alphas = space.init_alphas(jax.random.PRNGKey(config.seed))
  if config.batch_size > min(len(weight_half.labels), len(alpha_half.labels)):
    half, size = min((("weight", len(weight_half.labels)), ("alpha", len(alpha_half.labels))),
                     key=lambda h: h[1])
    raise ConfigError(f"--config.batch_size={config.batch_size} is larger than the {half} half "
                      f"of the training split ({size} images, --config.data.train_portion="
                      f"{config.data.train_portion}): lower the batch size or use more data.")
  steps_per_epoch = len(weight_half.labels) // config.batch_size
  opts = make_optimizers(config, steps_per_epoch)
  state = bilevel.init_search_state(weights, alphas, opts, bilevel.ModelState(batch_stats))
  search_step = make_search_step(model, opts,
                                 **bilevel.hypergradient_options(config.hypergradient))

  def prepare(key, batch):
    images = batch["images"]
    if config.augment:
      images = augment.random_crop_flip(key, images)
    return {"images": augment.normalise(images, dataset.mean, dataset.std),
            "labels": batch["labels"]}

  def step_fn(state, key, train_batch, val_batch):
    k_train, k_val = jax.random.split(key)
    return search_step(state, prepare(k_train, train_batch), prepare(k_val, val_batch),
                       jax.random.fold_in(key, 2))  # the relaxation's keys

  def eval_step(state, batch, mask):
    images = augment.normalise(batch["images"], dataset.mean, dataset.std)
    logits = model.apply({"params": state.weights, "batch_stats": state.model_state.shared},
                         images, state.alphas, train=False)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"])
    correct = jnp.argmax(logits, -1) == batch["labels"]
    return jnp.sum(losses * mask), jnp.sum(correct * mask)

  # Data parallel over every device: the state replicated, each batch split (parallel.py).
  mesh = parallel.data_mesh()
  state = parallel.replicate(state, mesh)
  step_fn = jax.jit(step_fn, donate_argnums=0, out_shardings=parallel.replicated(mesh))
  eval_step = jax.jit(eval_step, out_shardings=parallel.replicated(mesh))
  shard = lambda batch: parallel.shard_batch(batch, mesh)
  step_key = jax.random.PRNGKey(config.seed + 2)
  history = {kind: [] for kind in alphas}  # softmax(alpha) after each epoch
  batches = {}

  def resume(meta, ckpt):
    del ckpt
    history.update({k: [np.asarray(a, np.float32) for a in v]
                    for k, v in meta.get("history", {}).items()})
    batches["train"] = data.Batches(weight_half, config.batch_size, seed=config.seed,
                                    epoch=meta["epoch"], index=meta["index"])
    val_steps = len(alpha_half.labels) // config.batch_size  # its own epochs, if unequal
    batches["val"] = data.Batches(alpha_half, config.batch_size, seed=config.seed + 1,
                                  epoch=meta["step"] // val_steps, index=meta["step"] % val_steps)
    print(f"search: {config.hypergradient.method} hypergradient, {config.epochs} epochs of "
          f"{steps_per_epoch} steps, batch {config.batch_size}", flush=True)

  def train_step(state, epoch, index, step):
    del epoch, index
    state, metrics = step_fn(state, jax.random.fold_in(step_key, step),
                             shard(next(batches["train"])), shard(next(batches["val"])))
    return state, loop.StepLog(metrics["train_loss"], metrics["train_accuracy"],
                               {"weight gradient norm": metrics["weight_grad_norm"],
                                "alpha hypergradient norm": metrics["alpha_grad_norm"]})

  record = lambda: {"history": {k: [a.tolist() for a in v] for k, v in history.items()}}

  def end_of_epoch(state, epoch, step, progress, ckpt):
    del step, ckpt
    val_loss, val_accuracy = evaluate(eval_step, state, alpha_half, config.batch_size,
                                      config.eval_examples, shard)
    genotype = space.derive(state.alphas)
    for kind in history:
      history[kind].append(np.asarray(jax.nn.softmax(state.alphas[kind], axis=-1)))
    if parallel.is_primary():
      with open(os.path.join(workdir, "genotypes", f"epoch_{epoch + 1:03d}.json"), "w") as f:
        f.write(genotype.to_json())
    scalars = {"train_loss": progress.loss, "train_accuracy": progress.accuracy,
               "search_val_loss": val_loss, "search_val_accuracy": val_accuracy,
               "learning_rate": float(bilevel.cosine_per_epoch(
                   config.learning_rate, config.learning_rate_min, config.epochs,
                   steps_per_epoch)(epoch * steps_per_epoch))}
    benchmark = ""
    if table is not None:
      looked_up, line = table.report(genotype)
      scalars.update(looked_up)
      benchmark = "\n  " + line
    report = lambda s: (
        f"epoch {epoch + 1}/{config.epochs}: train loss {s['train_loss']:.4f} acc "
        f"{s['train_accuracy']:.4f} | search-val loss {val_loss:.4f} acc {val_accuracy:.4f} | "
        f"{s['epoch_seconds']:.1f}s\n  genotype {genotype}{benchmark}")
    return loop.EpochEnd(state, scalars, record(), report)

  state, scalars = loop.run(
      config, workdir, state, steps_per_epoch=steps_per_epoch, train_step=train_step,
      end_of_epoch=end_of_epoch, resume=resume, record=record,
      on_open=lambda: os.makedirs(os.path.join(workdir, "genotypes"), exist_ok=True))

  genotype = space.derive(state.alphas)
  pictures = []
  if parallel.is_primary():
    with open(os.path.join(workdir, "genotype.json"), "w") as f:
      f.write(genotype.to_json())
    np.savez(os.path.join(workdir, "alphas.npz"),
             **{kind: np.asarray(a) for kind, a in state.alphas.items()},
             **{f"softmax_{kind}_per_epoch": np.stack(h) for kind, h in history.items()})
    pictures = space.draw(genotype, workdir) + ["alphas.png"]
    drawing.plot_alpha_history(history, os.path.join(workdir, "alphas.png"), space.ops,
                               space.edges)
  kind = next(iter(history))  # DARTS: the normal cell
  print(f"softmax(alphas[{kind!r}]) (rows: edges; columns: {', '.join(space.ops)}):")
  for row in history[kind][-1]:
    print("  " + " ".join(f"{p:.3f}" for p in row))
  print(f"derived genotype: {genotype}\nwrote {workdir}/genotype.json, "
        f"{', '.join(pictures)}", flush=True)
  result = {"genotype": json.loads(genotype.to_json()), **scalars}
  if table is not None:
    looked_up, line = table.report(genotype)
    print(f"{line}, among {nas_bench.NUM_CELLS} cells", flush=True)
    result.update(looked_up)
  return result


def evaluate(eval_step, state, split: data.Split, batch_size: int, limit=None,
             shard=lambda x: x):
  """Mean loss and accuracy of the supernet (evaluation mode) over `split`."""
  n = len(split.labels) if not limit else min(limit, len(split.labels))
  total_loss = total_correct = 0.0
  for batch, mask in data.padded_batches(split, batch_size, limit):
    loss, correct = eval_step(state, *shard((batch, mask)))
    total_loss += float(loss)
    total_correct += float(correct)
  return total_loss / n, total_correct / n
