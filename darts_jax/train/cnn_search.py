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
run started again on the same workdir resumes (`darts_jax.train.checkpoints`). With
`config.num_seeds > 1`, the per-seed files go to `seed_<s>/` and `summary.json` holds every
seed's cell and the means (`train_and_evaluate`).
"""

from __future__ import annotations

import functools
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
from jax import lax
import numpy as np
import optax

from darts_jax import bilevel, perturbations, regularisers, relaxations, spaces
from darts_jax.data import augment
from darts_jax.data import images as data
from darts_jax.errors import ConfigError
from darts_jax.spaces import drawing
from darts_jax.train import loop, parallel


def make_loss_fn(model):
  """The supernet's cross-entropy as `bilevel.bilevel_step` takes it.

  `loss(weights, alphas, batch, LossState(batch_stats, ()), key) -> (loss, (LossState(new
  batch_stats, ()), {"accuracy"}))` for `batch = {"images", "labels"}`; in training mode the
  running BN statistics do not change the loss, only the ones returned. The relaxation reads
  `model_state.relax_key` and `.epoch` (the softmax neither); `key` is unused.
  """

  def loss_fn(weights, alphas, batch, model_state, key):
    del key  # the supernet has no dropout
    logits, updates = model.apply({"params": weights, "batch_stats": model_state.shared},
                                  batch["images"], alphas, train=True,
                                  relax_key=model_state.relax_key, epoch=model_state.epoch,
                                  mutable=["batch_stats"])
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"]).mean()
    accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["labels"])
    return loss, (model_state._replace(shared=updates["batch_stats"]), {"accuracy": accuracy})

  return loss_fn


def _given(mix, key=None, epoch=0):
  """The identity relaxation: the supernet mixes with the weights it is given."""
  del key, epoch
  return mix


def make_adversarial_weight_loss(model, *, eps_max: float, epochs: int, steps: int = 7):
  """SDARTS-ADV's weight-step loss: the supernet's loss at the mixing weights
  `perturbations.adversarial` finds around softmax(alpha) for this batch, the attack with BN
  on the running statistics (the release runs it in `model.eval()`), eps ramping per epoch
  (`perturbations.epsilon`). The same signature as `make_loss_fn`'s loss; the random start
  draws from `model_state.relax_key`."""
  given = model.clone(relax=_given)
  train_loss = make_loss_fn(given)

  def loss_fn(weights, alphas, batch, model_state, key):
    frozen = jax.lax.stop_gradient(weights)

    def attacked(mix):
      logits = given.apply({"params": frozen, "batch_stats": model_state.shared},
                           batch["images"], mix, train=False)
      return optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"]).mean()

    clean = {k: jax.nn.softmax(a, axis=-1) for k, a in relaxations.op_alphas(alphas).items()}
    edges = {k: a for k, a in alphas.items() if k not in clean}  # PC-DARTS': unperturbed
    eps = perturbations.epsilon(model_state.epoch, eps_max=eps_max, epochs=epochs)
    mix = perturbations.adversarial(lambda m: attacked({**m, **edges}), clean,
                                    model_state.relax_key, eps, steps)
    return train_loss(weights, {**mix, **edges}, batch, model_state, key)

  return loss_fn


def make_weight_loss_fn(config, model):
  """The weight step's loss when the config perturbs it (`weight_perturbation`: SDARTS-RS's
  random, -ADV's adversarial mixing weights), else None (the alpha step's loss)."""
  perturbation = config.get("weight_perturbation", "none")
  if perturbation == "random":
    return make_loss_fn(model.clone(relax=functools.partial(
        perturbations.random_smoothing, eps_max=config.perturbation_epsilon,
        epochs=config.epochs)))
  if perturbation == "adversarial":
    return make_adversarial_weight_loss(model, eps_max=config.perturbation_epsilon,
                                        epochs=config.epochs)
  return None


def make_search_step(model, opts: bilevel.BilevelOptimizers, **hypergradient_options):
  """`step(state, train, val, key, epoch=0) -> (state, metrics)`, not yet jitted:
  `bilevel_step` with the supernet's loss; the options are the hypergradient's (`method`,
  `unroll_steps`, `exact_mode`, `fd_epsilon`), `alpha_penalty` and `weight_loss_fn`."""
  return functools.partial(bilevel.bilevel_step, make_loss_fn(model), opts,
                           **hypergradient_options)


def make_optimizers(config, steps_per_epoch: int) -> bilevel.BilevelOptimizers:
  """DARTS' optimisers (`bilevel.darts_optimizers`) with the config's settings."""
  return bilevel.darts_optimizers(
      lr=config.learning_rate, lr_min=config.learning_rate_min, epochs=config.epochs,
      steps_per_epoch=steps_per_epoch, momentum=config.momentum, nesterov=config.nesterov,
      weight_decay=config.weight_decay, grad_clip=config.grad_clip,
      alpha_lr=config.alpha_learning_rate, alpha_weight_decay=config.alpha_weight_decay,
      alpha_optimizer=config.get("alpha_optimizer", "adam"),
      alpha_grad_clip=config.get("alpha_grad_clip", 0.0), alpha_b1=config.get("alpha_b1", 0.5))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs the search described by `config`; returns the final genotype and metrics.

  With `config.num_seeds = N > 1`, N searches run in one program: seeds `config.seed`,
  ..., `config.seed + N - 1`, each with the initial weights and alphas, data order and keys
  that a single run with that seed has, stacked along a leading axis of the state that the
  step and the evaluation are `vmap`ped over. Each seed's outputs go to `seed_<s>/`; the
  epoch's metrics hold every seed's (`seed_<s>/...`) and their mean and standard deviation.
  """
  space = spaces.get(config.search_space)  # config checked by tasks.preflight (schema.py)
  dataset = data.load(config.data)
  # DARTS: halves of the training split; NAS-Bench-201 on CIFAR-100 / ImageNet16-120: the
  # training split, and half of the test split for the alphas (data.search_halves).
  # SNAS' single level: the whole training split trains weights and alphas; the test split
  # is the search-validation set, only watched (the release's valid_queue).
  single = config.hypergradient.method == "single_level"
  if single:
    weight_half, alpha_half = data.single_level_split(dataset, config.data)
    print(f"{config.data.name}: {len(weight_half.labels)} images train the weights and the "
          f"alphas (single level), {len(alpha_half.labels)} test images are watched; images "
          f"{weight_half.images.shape[1:]}", flush=True)
  else:
    weight_half, alpha_half = data.search_halves(dataset, config.data)
    print(f"{config.data.name}: {len(weight_half.labels)} images train the weights, "
          f"{len(alpha_half.labels)} the alphas; images {weight_half.images.shape[1:]}",
          flush=True)

  # NAS-Bench-201: the benchmark's accuracy of the derived cell, each epoch (shipped table,
  # or the user's converted one: config.benchmark_table).
  table = None
  if config.search_space == "nas_bench_201":
    from darts_jax import nas_bench
    table = nas_bench.load(config.get("benchmark_table") or None)

  seeds = [config.seed + i for i in range(config.get("num_seeds") or 1)]
  many = len(seeds) > 1  # then every array of the state has a leading seed axis
  model = space.build(config, dataset.num_classes)
  halves = (("weight", len(weight_half.labels)),) + (
      () if single else (("alpha", len(alpha_half.labels)),))
  if config.batch_size > min(size for _, size in halves):
    half, size = min(halves, key=lambda h: h[1])
    raise ConfigError(f"--config.batch_size={config.batch_size} is larger than the {half} half "
                      f"of the training split ({size} images, --config.data.train_portion="
                      f"{config.data.train_portion}): lower the batch size or use more data.")
  steps_per_epoch = len(weight_half.labels) // config.batch_size
  opts = make_optimizers(config, steps_per_epoch)

  def init_state(seed):
    weights, batch_stats = space.init(model, seed, weight_half.images.shape[1:])
    alphas = space.init_alphas(jax.random.PRNGKey(seed), model)
    return bilevel.init_search_state(weights, alphas, opts, bilevel.ModelState(batch_stats))

  states = [init_state(seed) for seed in seeds]
  state = jax.tree.map(lambda *x: jnp.stack(x), *states) if many else states[0]
  del states
  weight_loss_fn = make_weight_loss_fn(config, model)
  search_step = make_search_step(model, opts, alpha_penalty=regularisers.build(
      config.regulariser), weight_loss_fn=weight_loss_fn,
      **bilevel.hypergradient_options(config.hypergradient))

  warmup = config.get("alpha_warmup_epochs", 0)

  def prepare(key, batch):
    images = batch["images"]
    if config.augment:
      images = augment.random_crop_flip(key, images, dataset.crop_padding)
    return {"images": augment.normalise(images, dataset.mean, dataset.std),
            "labels": batch["labels"]}

  def step_fn(state, seed_key, step, train_batch, val_batch):
    key = jax.random.fold_in(seed_key, step)
    k_train, k_val = jax.random.split(key)
    train_batch = prepare(k_train, train_batch)
    val_batch = train_batch if single else prepare(k_val, val_batch)  # single: not read
    epoch = step // steps_per_epoch
    # DrNAS, PC-DARTS: the first alpha_warmup_epochs train the weights alone.
    update_alphas = epoch >= warmup if warmup else True
    return search_step(state, train_batch, val_batch,
                       jax.random.fold_in(key, 2),  # the relaxation's keys
                       epoch=epoch, update_alphas=update_alphas)

  def eval_step(state, batch, mask):
    images = augment.normalise(batch["images"], dataset.mean, dataset.std)
    logits = model.apply({"params": state.weights, "batch_stats": state.model_state.shared},
                         images, state.alphas, train=False)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"])
    correct = jnp.argmax(logits, -1) == batch["labels"]
    return jnp.sum(losses * mask), jnp.sum(correct * mask)

  seed_keys = jnp.stack([jax.random.PRNGKey(s + 2) for s in seeds])
  if many:  # each seed its own state, key and batches; the evaluation batch is shared
    chunk = config.get("vmap_seeds") or len(seeds)
    step_fn = over_seeds(step_fn, (0, 0, None, 0, 0), chunk)
    eval_step = over_seeds(eval_step, (0, None, None), chunk)
  else:
    seed_keys = seed_keys[0]

  # Data parallel over every device: the state replicated, each batch split (parallel.py);
  # with many seeds, along the batch axis of each seed's batch.
  mesh = parallel.data_mesh()
  state = parallel.replicate(state, mesh)
  step_fn = jax.jit(step_fn, donate_argnums=0, out_shardings=parallel.replicated(mesh))
  eval_step = jax.jit(eval_step, out_shardings=parallel.replicated(mesh))
  shard = lambda batch, axis=0: parallel.shard_batch(batch, mesh, axis=axis)
  # softmax(alpha) after each epoch, of the op alphas (PC-DARTS' edge parameters: alphas.npz)
  history = {kind: [] for kind in relaxations.op_alphas(state.alphas)}
  batches = {}
  folders = [os.path.join(workdir, f"seed_{s}") if many else workdir for s in seeds]

  def next_batch(kind):
    if not many:
      return shard(next(batches[kind][0]))
    stacked = [next(b) for b in batches[kind]]
    return shard(jax.tree.map(lambda *x: np.stack(x), *stacked), axis=1)

  def resume(meta, ckpt):
    del ckpt
    history.update({k: [np.asarray(a, np.float32) for a in v]
                    for k, v in meta.get("history", {}).items()})
    val_steps = len(alpha_half.labels) // config.batch_size  # its own epochs, if unequal
    batches["train"] = [data.Batches(weight_half, config.batch_size, seed=s,
                                     epoch=meta["epoch"], index=meta["index"]) for s in seeds]
    batches["val"] = [data.Batches(alpha_half, config.batch_size, seed=s + 1,
                                   epoch=meta["step"] // val_steps,
                                   index=meta["step"] % val_steps) for s in seeds]
    print(f"search: {config.hypergradient.method} hypergradient, {config.epochs} epochs of "
          f"{steps_per_epoch} steps, batch {config.batch_size}"
          + (f", {len(seeds)} seeds ({seeds[0]}..{seeds[-1]}) in one program" if many else ""),
          flush=True)

  def train_step(state, epoch, index, step):
    del epoch, index
    train_batch = next_batch("train")
    state, metrics = step_fn(state, seed_keys, step, train_batch,
                             train_batch if single else next_batch("val"))
    # Many seeds: the progress bar shows their mean; any seed's NaN stops the run.
    return state, loop.StepLog(jnp.mean(metrics["train_loss"]),
                               jnp.mean(metrics["train_accuracy"]),
                               {"weight gradient norm": jnp.max(metrics["weight_grad_norm"]),
                                "alpha hypergradient norm": jnp.max(metrics["alpha_grad_norm"])})

  record = lambda: {"history": {k: [a.tolist() for a in v] for k, v in history.items()}}
  seed_alphas = lambda alphas: [jax.tree.map(lambda a: a[i], alphas) if many else alphas
                                for i in range(len(seeds))]

  def end_of_epoch(state, epoch, step, progress, ckpt):
    del step, ckpt
    val_loss, val_accuracy = evaluate(eval_step, state, alpha_half, config.batch_size,
                                      config.eval_examples, shard)
    genotypes = [space.derive(a, config.relaxation) for a in seed_alphas(state.alphas)]
    for kind in history:
      history[kind].append(np.asarray(jax.nn.softmax(state.alphas[kind], axis=-1)))
    if parallel.is_primary():
      for folder, genotype in zip(folders, genotypes):
        with open(os.path.join(folder, "genotypes", f"epoch_{epoch + 1:03d}.json"), "w") as f:
          f.write(genotype.to_json())
    scalars = {"train_loss": progress.loss, "train_accuracy": progress.accuracy,
               "search_val_loss": float(np.mean(val_loss)),
               "search_val_accuracy": float(np.mean(val_accuracy)),
               "learning_rate": float(bilevel.cosine_per_epoch(
                   config.learning_rate, config.learning_rate_min, config.epochs,
                   steps_per_epoch)(epoch * steps_per_epoch))}
    looked_up, lines = lookups(genotypes)
    if many:
      for i, s in enumerate(seeds):
        scalars[f"seed_{s}/search_val_loss"] = float(val_loss[i])
        scalars[f"seed_{s}/search_val_accuracy"] = float(val_accuracy[i])
      scalars["search_val_accuracy/std"] = float(np.std(val_accuracy))
    scalars.update(looked_up)

    def report(s):
      val = (f"acc {s['search_val_accuracy']:.4f}" if not many else
             f"acc {s['search_val_accuracy']:.4f} +- {s['search_val_accuracy/std']:.4f} "
             f"(mean +- std of {len(seeds)} seeds)")
      cells = "".join(f"\n  {'' if not many else f'seed {seed}: '}genotype {g}{line}"
                      for seed, g, line in zip(seeds, genotypes, lines[:len(seeds)]))
      return (f"epoch {epoch + 1}/{config.epochs}: train loss {s['train_loss']:.4f} acc "
              f"{s['train_accuracy']:.4f} | search-val loss {s['search_val_loss']:.4f} {val} | "
              f"{s['epoch_seconds']:.1f}s{cells}" + "".join(f"\n  {l}" for l in lines[len(seeds):]))
    return loop.EpochEnd(state, scalars, record(), report)

  def lookups(genotypes):
    """The benchmark's accuracy of each seed's cell (NAS-Bench-201): scalars, and a line
    per seed (then one of the means, for many seeds)."""
    if table is None:
      return {}, [""] * len(genotypes)
    reports = [table.report(g, dataset=config.data.name) for g in genotypes]
    if not many:
      return reports[0][0], ["\n  " + reports[0][1]]
    scalars, lines = {}, []
    for s, (looked_up, line) in zip(seeds, reports):
      scalars.update({f"seed_{s}/{k}": v for k, v in looked_up.items()})
      lines.append("\n    " + line)
    summary, line = table.summarise(genotypes, dataset=config.data.name)
    scalars.update(summary)
    return scalars, lines + [line]

  def on_open():
    for folder in folders:
      os.makedirs(os.path.join(folder, "genotypes"), exist_ok=True)

  state, scalars = loop.run(
      config, workdir, state, steps_per_epoch=steps_per_epoch, train_step=train_step,
      end_of_epoch=end_of_epoch, resume=resume, record=record, on_open=on_open)

  genotypes = [space.derive(a, config.relaxation) for a in seed_alphas(state.alphas)]
  pictures = []
  if parallel.is_primary():
    for i, (folder, genotype) in enumerate(zip(folders, genotypes)):
      own = {k: [h[i] if many else h for h in v] for k, v in history.items()}
      alphas = seed_alphas(state.alphas)[i]
      with open(os.path.join(folder, "genotype.json"), "w") as f:
        f.write(genotype.to_json())
      np.savez(os.path.join(folder, "alphas.npz"),
               **{kind: np.asarray(a) for kind, a in alphas.items()},
               **{f"softmax_{kind}_per_epoch": np.stack(h) for kind, h in own.items()})
      pictures = space.draw(genotype, folder) + ["alphas.png"]
      drawing.plot_alpha_history(own, os.path.join(folder, "alphas.png"), space.ops,
                                 space.edges)
  kind = next(iter(history))  # DARTS: the normal cell
  looked_up, lines = lookups(genotypes)
  for i, (seed, genotype) in enumerate(zip(seeds, genotypes)):
    alphas = seed_alphas(state.alphas)[i]
    name = f"seed {seed}: " if many else ""
    print(f"{name}softmax(alphas[{kind!r}]) (rows: edges; columns: {', '.join(space.ops)}):")
    for row in np.asarray(jax.nn.softmax(alphas[kind], axis=-1)):
      print("  " + " ".join(f"{p:.3f}" for p in row))
    print(f"{name}derived genotype: {genotype}\nwrote {folders[i]}/genotype.json, "
          f"{', '.join(pictures)}", flush=True)
    if table is not None:
      print(f"{name}{lines[i].strip()}, among {nas_bench.NUM_CELLS} cells", flush=True)
  if not many:
    return {"genotype": json.loads(genotypes[0].to_json()), **scalars, **looked_up}
  summary = {"seeds": seeds,
             "genotypes": {str(s): json.loads(g.to_json()) for s, g in zip(seeds, genotypes)},
             **{k: v for k, v in {**scalars, **looked_up}.items() if "/" not in k
                or k.endswith(("/mean", "/std"))}}
  if table is not None:
    print(lines[-1], flush=True)
  if parallel.is_primary():
    with open(os.path.join(workdir, "summary.json"), "w") as f:
      json.dump(summary, f, indent=1)
  return {**scalars, **looked_up, "seeds": seeds,
          "genotypes": [json.loads(g.to_json()) for g in genotypes]}


def over_seeds(fn, in_axes, chunk: int):
  """`fn` over the leading seed axis of the arguments whose `in_axes` entry is 0.

  `chunk` seeds at a time are `vmap`ped; the chunks run one after the other in the same
  program (`lax.map`), so `chunk` trades speed for memory: all seeds at once (`chunk` >= N)
  is one `vmap`, `chunk=1` a loop of the one-seed step. Why it matters: vmapping a
  convolution over per-seed kernels makes it a grouped convolution, which XLA's CPU backend
  runs several times slower than separate ones (benchmarks/README.md, "Many seeds").
  """
  vmapped = jax.vmap(fn, in_axes=in_axes)

  def mapped(*args):
    n = next(jax.tree.leaves(a)[0].shape[0] for a, ax in zip(args, in_axes) if ax == 0)
    if chunk >= n:
      return vmapped(*args)
    seeded = tuple(a for a, ax in zip(args, in_axes) if ax == 0)

    def one(xs):
      xs = iter(xs)
      return fn(*[next(xs) if ax == 0 else a for a, ax in zip(args, in_axes)])

    return lax.map(one, seeded, batch_size=None if chunk == 1 else chunk)

  return mapped


def evaluate(eval_step, state, split: data.Split, batch_size: int, limit=None,
             shard=lambda x: x):
  """Mean loss and accuracy of the supernet (evaluation mode) over `split`: floats, or (N,)
  arrays when `eval_step` is vmapped over N seeds."""
  n = len(split.labels) if not limit else min(limit, len(split.labels))
  total_loss = total_correct = 0.0
  for batch, mask in data.padded_batches(split, batch_size, limit):
    loss, correct = eval_step(state, *shard((batch, mask)))
    total_loss = total_loss + np.asarray(loss, np.float64)
    total_correct = total_correct + np.asarray(correct, np.float64)
  unpack = lambda x: float(x) if np.ndim(x) == 0 else x
  return unpack(total_loss / n), unpack(total_correct / n)
