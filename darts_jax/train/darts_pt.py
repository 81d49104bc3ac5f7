"""DARTS-PT (Wang et al., ICLR 2021): a searched supernet's cell, chosen by perturbation.

    python main.py --config configs/cifar_darts_pt.py --config.search_workdir=runs/search_s5 \
        --workdir runs/darts_pt
    python main.py --config configs/nb201_darts_pt.py --config.search_workdir=runs/nb201 \
        --workdir runs/nb201_pt

DARTS-PT replaces the argmax of the alphas, which it shows can pick ops the supernet does not
rely on, by what removing an op costs the supernet: starting from the last checkpoint of a
finished search (`config.search_workdir`, a `cnn_search` run), it decides one edge at a time.
For the edge it zeroes each op's mixing weight in turn (the row is not renormalised) and
measures the supernet's accuracy on the alpha half; the op kept is the one whose removal hurts
most, and from then on the edge mixes that op alone (a one-hot row). Between decisions the
supernet is fine-tuned (`config.projection.interval` epochs of the bilevel step, first order,
SGD restarted at a tenth of the search's learning rate, the alphas' Adam state kept). On
DARTS' space each op round decides one normal and one reduction edge; after the 14 op rounds,
3 node rounds each pick an intermediate node with more than 2 inputs and keep the 2 inputs
whose removal hurts most (the release's greedy loop: drop the input whose removal hurts least,
measure again, until 2 remain). On NAS-Bench-201 there are 6 op rounds, `none` included.

The schedule is the release's (sota/cnn/projection.py, nasbench201/projection.py of
ruocwang/darts-pt, docs/releases/pc_darts_pt.md section 2): with interval I, DARTS' space
tunes 16 I + 1 epochs with decisions at the start of epochs 0, I, ..., 16 I (op rounds first);
NAS-Bench-201 tunes 5 I epochs with decisions at epochs 0, I, ..., 4 I and 5 I - 1.

All candidates of a decision (an edge's ops, or a node's inputs, padded to the op count so
there is one compiled shape) are evaluated by one jitted program `vmap`ped over the candidates'
mixing weights, `config.projection.vmap_candidates` at a time. As in the release the
evaluation runs the supernet in training mode (BN on the batch's statistics); unlike it, the
running statistics are not updated by it, and every candidate sees the same images (the alpha
half's full batches in order, augmented with one key per decision), so candidates differ only
in the op removed.

Writes to the workdir: `genotype.json` (the selected cell), `decisions.json` (each decision:
round, edge or node, the candidates' accuracy and loss, the choice), the cell's pictures,
`metrics.jsonl` (each epoch: the tuning loss, the projected supernet's search-validation
accuracy, the decisions made so far; NAS-Bench-201: the benchmark's accuracy of the cell once
every edge is decided) and `checkpoints/`, from which a stopped run resumes; the search's
workdir is only read.
"""

from __future__ import annotations

import json
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from darts_jax import bilevel, relaxations, spaces
from darts_jax.data import augment
from darts_jax.data import images as data
from darts_jax.errors import ConfigError
from darts_jax.spaces import nas_bench_201
from darts_jax.spaces.darts_cnn.genotypes import STEPS, Genotype, edge_index
from darts_jax.train import checkpoints, cnn_search, loop, parallel, schema

OP, NODE = "op", "node"  # what a round decides

# Fields of the search config that the projection must share: they shape the supernet, its
# weights and optimiser states, or the data it was searched on. Absent fields read as their
# default (the search trainer's).
MUST_MATCH = {
    "search_space": None, "relaxation": None, "tau_max": None, "tau_min": None,
    "aux_skip_beta": None, "model.channels": None, "model.layers": None,
    "model.cells_per_stage": None, "model.track_running_stats": True, "data.name": None,
    "data.num_train": 0, "data.train_portion": None, "data.alpha_split": "train",
    "data.split_file": "", "alpha_optimizer": "adam", "alpha_grad_clip": 0.0,
    "alpha_b1": 0.5,
}


class ProjectionState(NamedTuple):
  """What the tuning step reads and returns.

  Attributes:
    search: the supernet's `bilevel.SearchState`, restored from the search.
    decided: `{kind: (edges,) int32}`: the op kept on each edge, -1 while undecided.
    pruned: `{kind: (edges,) bool}`: the edges the node rounds removed (DARTS' space).
  """

  search: bilevel.SearchState
  decided: dict
  pruned: dict


def schedule(search_space: str, interval: int) -> tuple[int, list]:
  """The release's projection schedule: `(tuning epochs, [(epoch, OP | NODE), ...])`, the
  rounds in order, each made at the start of its epoch (two may share one when interval=1 on
  NAS-Bench-201).

  DARTS' space (sota/cnn/projection.py): 14 op rounds at epochs 0, I, ..., 13 I, then 3 node
  rounds at 14 I, 15 I, 16 I, in 16 I + 1 epochs. NAS-Bench-201 (nasbench201/projection.py):
  6 op rounds at 0, I, ..., 4 I and at the last of its 5 I epochs.
  """
  if search_space == "nas_bench_201":
    edges = len(nas_bench_201.EDGES)
    epochs = interval * (edges - 1)
    return epochs, [(interval * t, OP) for t in range(edges - 1)] + [(epochs - 1, OP)]
  edges = sum(2 + i for i in range(STEPS))
  rounds = [(interval * t, OP) for t in range(edges)]
  rounds += [(interval * (edges + t), NODE) for t in range(STEPS - 1)]
  return interval * (edges + STEPS - 2) + 1, rounds


def project(mix: dict, decided: dict, pruned: dict) -> dict:
  """The projected supernet's mixing weights: `mix` (`{kind: (edges, ops)}`), each decided
  row one-hot on its op, each pruned row zero (the release's `get_projected_weights`)."""
  out = {}
  for kind, m in mix.items():
    one_hot = jax.nn.one_hot(decided[kind], m.shape[-1], dtype=m.dtype)  # -1: a zero row
    m = jnp.where((decided[kind] >= 0)[:, None], one_hot, m)
    out[kind] = jnp.where(pruned[kind][:, None], jnp.zeros_like(m), m)
  return out


def op_candidates(mix: dict, kind: str, edge: int) -> dict:
  """`{kind: (ops, edges, ops)}`: candidate c is `mix` with op c of `kind`'s `edge` zeroed."""
  out = {k: np.repeat(np.asarray(m)[None], m.shape[-1], axis=0) for k, m in mix.items()}
  out[kind][:, edge, :] *= 1.0 - np.eye(out[kind].shape[-1], dtype=out[kind].dtype)
  return out


def edge_candidates(mix: dict, kind: str, edges, size: int) -> dict:
  """`{kind: (size, edges, ops)}`: candidate c < len(edges) is `mix` with the whole edge
  `edges[c]` of `kind` zeroed; the rest are `mix` itself (padding to one compiled shape)."""
  out = {k: np.repeat(np.asarray(m)[None], size, axis=0) for k, m in mix.items()}
  for c, e in enumerate(edges):
    out[kind][c, e, :] = 0.0
  return out


def choose_op(accuracy, loss, criterion: str, allowed=None) -> int:
  """The op to keep: the one whose removal gives the lowest accuracy (criterion "accuracy")
  or the highest loss ("loss"), ties to the first (the release's `best_opid` starts at 0 and
  moves on strict improvement). `allowed`: a boolean mask of the ops that may be kept."""
  allowed = np.ones(len(accuracy), bool) if allowed is None else np.asarray(allowed)
  if criterion == "accuracy":
    return int(np.argmin(np.where(allowed, accuracy, np.inf)))
  return int(np.argmax(np.where(allowed, loss, -np.inf)))


def edge_to_drop(accuracy, loss, criterion: str) -> int:
  """Of a node's remaining inputs, the one whose removal hurts least: the highest accuracy
  (or lowest loss) without it, ties to the later input (the release's `not compare`)."""
  scores = -np.asarray(accuracy) if criterion == "accuracy" else np.asarray(loss)
  return int(len(scores) - 1 - np.argmin(scores[::-1]))


def select_op(evaluate, mix: dict, kind: str, edge: int, criterion: str, allowed=None):
  """DARTS-PT's op decision on `kind`'s `edge`: `(op, accuracy, loss)`.

  Args:
    evaluate: `evaluate(mixes) -> (accuracy, loss)`, each (C,), of the supernet at each of C
      stacked mixing weights `{kind: (C, edges, ops)}` (one vmapped program).
    mix: the projected supernet's mixing weights, `{kind: (edges, ops)}` numpy arrays.
    kind, edge: the alpha array and row decided.
    criterion, allowed: as `choose_op` takes them.
  Returns:
    The op kept (`choose_op`), and the accuracy and loss without each op.
  """
  accuracy, loss = evaluate(op_candidates(mix, kind, edge))
  return choose_op(accuracy, loss, criterion, allowed), accuracy, loss


def select_inputs(evaluate, mix: dict, kind: str, node: int, criterion: str, size: int):
  """DARTS-PT's node decision: the 2 inputs of DARTS' intermediate `node` that it keeps.

  The release's greedy loop (sota/cnn/projection.py `project_edge`): while more than 2
  inputs remain, remove each remaining input's edge in turn (from `mix`: the inputs dropped
  before stay in), and drop the one whose removal hurts least (`edge_to_drop`).

  Args:
    evaluate: as `select_op` takes it, for `size` stacked candidates.
    mix, kind: as `select_op` takes them.
    node: the intermediate node (0..3; node 0 has 2 inputs and keeps them).
    criterion: "accuracy" or "loss".
    size: the number of candidates `evaluate` takes (at least the node's inputs).
  Returns:
    `(kept, steps)`: the kept inputs' alpha rows, and each step of the loop as `{"inputs",
    "accuracy", "loss", "dropped"}` (rows; the accuracy and loss without each input).
  """
  inputs, steps = node_edges(node), []
  while len(inputs) > 2:
    accuracy, loss = evaluate(edge_candidates(mix, kind, inputs, size))
    accuracy, loss = accuracy[:len(inputs)], loss[:len(inputs)]
    drop = edge_to_drop(accuracy, loss, criterion)
    steps.append({"inputs": list(inputs), "accuracy": accuracy.tolist(),
                  "loss": loss.tolist(), "dropped": inputs[drop]})
    inputs = inputs[:drop] + inputs[drop + 1:]
  return inputs, steps


def node_edges(node: int) -> list[int]:
  """The alpha rows of the inputs of intermediate node `node` (0..3) of DARTS' cell."""
  return [edge_index(node, j) for j in range(2 + node)]


def genotype_of(search_space: str, ops, decided: dict, pruned: dict):
  """The selected cell: NAS-Bench-201's decided op per edge, or DARTS' genotype of each
  node's 2 unpruned inputs with their decided ops (by input, as the release's `_parse` of the
  projected weights orders ties)."""
  if search_space == "nas_bench_201":
    return nas_bench_201.Genotype201(tuple(ops[int(k)] for k in decided["cell"]))
  cells = {}
  for kind in ("normal", "reduce"):
    cells[kind] = tuple((ops[int(decided[kind][e])], j) for node in range(STEPS)
                        for j, e in enumerate(node_edges(node)) if not pruned[kind][e])
  concat = tuple(range(2, 2 + STEPS))
  return Genotype(cells["normal"], concat, cells["reduce"], concat).validate()


def make_candidates_step(model, prepare, chunk: int):
  """The evaluation of a decision's candidates on one batch, not yet jitted.

  Args:
    model: the supernet, taking its mixing weights as its alphas (`relax` the identity).
    prepare: `prepare(key, batch) -> batch`, the augmentation and normalisation.
    chunk: the candidates computed at once (`vmap`); the rest follow in the same program
      (`lax.map`, `cnn_search.over_seeds`).
  Returns:
    `step(weights, batch_stats, mixes, key, batch) -> (loss, correct)`: each candidate's
    summed cross-entropy and number of correct predictions, (C,), for C stacked mixing
    weights `mixes` ({kind: (C, edges, ops)}), BN on the batch's statistics (training mode,
    as the release evaluates), the running statistics left as they were.
  """

  def one(weights, batch_stats, mix, images, labels):
    logits, _ = model.apply({"params": weights, "batch_stats": batch_stats}, images, mix,
                            train=True, mutable=["batch_stats"])
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return jnp.sum(loss), jnp.sum(jnp.argmax(logits, -1) == labels)

  mapped = cnn_search.over_seeds(one, (None, None, 0, None, None), chunk)

  def step(weights, batch_stats, mixes, key, batch):
    batch = prepare(key, batch)
    return mapped(weights, batch_stats, mixes, batch["images"], batch["labels"])

  return step


def check_search(config, saved: dict):
  """Refuses (one line) a search workdir whose run is not the supernet `config` projects.

  Args:
    config: the DARTS-PT config.
    saved: the search's `config.json`.

  Raises:
    ConfigError: the search is not a one-seed `cnn_search`, its supernet is PC-DARTS' or
      GDAS', or a `MUST_MATCH` field differs.
  """
  where = f"--config.search_workdir={config.search_workdir}"
  if saved.get("task") != "cnn_search":
    raise ConfigError(f"{where} holds a {saved.get('task')!r} run, not a cnn_search: pass the "
                      "workdir of a supernet search.")
  if (saved.get("num_seeds") or 1) > 1:
    raise ConfigError(f"{where} holds {saved['num_seeds']} seeds searched in one program, and "
                      "DARTS-PT projects one supernet: search with --config.num_seeds=1.")
  mine, theirs = schema.flatten(config), schema.flatten(saved)
  # PC-DARTS' bypass would carry a zeroed edge's input on; GDAS computes one op per edge.
  if theirs.get("model.partial_channels", 1) != 1 or theirs.get("model.edge_normalisation"):
    raise ConfigError(f"{where} holds a PC-DARTS supernet (partial channels or edge "
                      "normalisation), which DARTS-PT does not project yet: project a search "
                      "without them.")
  if theirs.get("relaxation") == "gumbel_hard":
    raise ConfigError(f"{where} holds a GDAS supernet (relaxation gumbel_hard, one op per "
                      "edge), where removing an op's weight measures nothing: project a "
                      "search with another relaxation.")
  for field, default in MUST_MATCH.items():
    a, b = mine.get(field, default), theirs.get(field, default)
    if a != b:
      raise ConfigError(f"--config.{field}={a!r}, and the search in {config.search_workdir} "
                        f"ran with {b!r}: pass --config.{field}={b!r} (the supernet and its "
                        "data must be the search's).")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Projects the supernet of `config.search_workdir`'s search; returns the genotype, the
  decisions and the last epoch's metrics (NAS-Bench-201: and the cell's accuracies)."""
  space = spaces.get(config.search_space)  # config checked by tasks.preflight (schema.py)
  pc = config.projection
  # The search, checked before any data is read; its supernet is restored below, read-only.
  search_dir = config.search_workdir
  if not os.path.isdir(search_dir):
    raise ConfigError(f"--config.search_workdir={search_dir} is not a folder: pass the "
                      "--workdir of a finished search.")
  saved = _read_config(search_dir)
  check_search(config, saved)
  dataset = data.load(config.data)
  weight_half, alpha_half = data.search_halves(dataset, config.data)
  if config.batch_size > min(len(weight_half.labels), len(alpha_half.labels)):
    raise ConfigError(f"--config.batch_size={config.batch_size} is larger than a half of the "
                      "training split: lower the batch size or use more data.")
  steps_per_epoch = len(weight_half.labels) // config.batch_size
  tune_epochs, rounds = schedule(config.search_space, pc.interval)
  kinds = ("cell",) if config.search_space == "nas_bench_201" else ("normal", "reduce")

  # The search's config decides the template's optimiser states (the weights' SGD state is
  # then restarted, as the release builds a new SGD).
  search_config = ml_collections.ConfigDict(saved)
  search_epochs = int(saved["epochs"])
  last_epoch = search_epochs - 1  # the relaxation's epoch (its schedule's end)
  model_config = ml_collections.ConfigDict(config.to_dict())
  model_config.epochs = search_epochs  # relaxations.build reads the search's length
  model = space.build(model_config, dataset.num_classes)
  given = model.clone(relax=cnn_search._given)  # pylint: disable=protected-access
  relax = relaxations.build(model_config, space.ops)
  weights, batch_stats = space.init(model, config.seed, weight_half.images.shape[1:])
  alphas = space.init_alphas(jax.random.PRNGKey(config.seed), model)
  template = bilevel.init_search_state(weights, alphas,
                                       cnn_search.make_optimizers(search_config, 1),
                                       bilevel.ModelState(batch_stats))
  restored, meta = checkpoints.read_run(search_dir, template)
  if meta["epoch"] < search_epochs:
    raise ConfigError(f"--config.search_workdir={search_dir} holds a search stopped after "
                      f"epoch {meta['epoch']} of {search_epochs}: finish it (run its command "
                      "again), then project it.")
  print(f"DARTS-PT: the supernet of {search_dir} (epoch {meta['epoch']}, step "
        f"{meta['step']}); {len(rounds)} rounds in {tune_epochs} tuning epochs of "
        f"{steps_per_epoch} steps, batch {config.batch_size}", flush=True)

  # Tuning: the search's bilevel step at a tenth of its learning rate (the configs), the
  # relaxation at the search's last epoch, through the projected mixing weights.
  opts = bilevel.darts_optimizers(
      lr=config.learning_rate, lr_min=config.learning_rate_min, epochs=tune_epochs,
      steps_per_epoch=steps_per_epoch, momentum=config.momentum, nesterov=config.nesterov,
      weight_decay=config.weight_decay, grad_clip=config.grad_clip,
      alpha_lr=config.alpha_learning_rate, alpha_weight_decay=config.alpha_weight_decay,
      alpha_optimizer=config.get("alpha_optimizer", "adam"),
      alpha_grad_clip=config.get("alpha_grad_clip", 0.0), alpha_b1=config.get("alpha_b1", 0.5))
  search = restored._replace(weight_opt_state=opts.weight.init(restored.weights))
  num_edges = {k: a.shape[0] for k, a in relaxations.op_alphas(search.alphas).items()}
  state = ProjectionState(search, {k: -jnp.ones((n,), jnp.int32) for k, n in num_edges.items()},
                          {k: jnp.zeros((n,), bool) for k, n in num_edges.items()})
  base_loss = cnn_search.make_loss_fn(given)
  hyper = bilevel.hypergradient_options(config.hypergradient)

  def projected(alphas, decided, pruned, key=None):
    return project(relaxations.relax_all(relax, alphas, key, last_epoch), decided, pruned)

  def prepare(key, batch):
    images = batch["images"]
    if config.augment:
      images = augment.random_crop_flip(key, images, dataset.crop_padding)
    return {"images": augment.normalise(images, dataset.mean, dataset.std),
            "labels": batch["labels"]}

  def step_fn(state, step, train_batch, val_batch):
    key = jax.random.fold_in(jax.random.PRNGKey(config.seed + 3), step)
    k_train, k_val, k_step = jax.random.split(key, 3)

    def loss_fn(weights, alphas, batch, model_state, key):
      mix = projected(alphas, state.decided, state.pruned, model_state.relax_key)
      return base_loss(weights, mix, batch, model_state, key)

    search, metrics = bilevel.bilevel_step(
        loss_fn, opts, state.search, prepare(k_train, train_batch), prepare(k_val, val_batch),
        k_step, epoch=last_epoch, update_alphas=bool(pc.update_alphas), **hyper)
    return state._replace(search=search), metrics

  evaluate_candidates = make_candidates_step(given, prepare,
                                             pc.vmap_candidates or len(space.ops))

  def candidates_step(state, mixes, key, batch):
    return evaluate_candidates(state.search.weights, state.search.model_state.shared, mixes,
                               key, batch)

  def eval_step(state, batch, mask):
    mix = projected(state.search.alphas, state.decided, state.pruned)
    images = augment.normalise(batch["images"], dataset.mean, dataset.std)
    logits = given.apply({"params": state.search.weights,
                          "batch_stats": state.search.model_state.shared}, images, mix,
                         train=False)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"])
    correct = jnp.argmax(logits, -1) == batch["labels"]
    return jnp.sum(losses * mask), jnp.sum(correct * mask)

  mesh = parallel.data_mesh()
  state = parallel.replicate(state, mesh)
  step_fn = jax.jit(step_fn, donate_argnums=0, out_shardings=parallel.replicated(mesh))
  candidates_step = jax.jit(candidates_step, out_shardings=parallel.replicated(mesh))
  eval_step = jax.jit(eval_step, out_shardings=parallel.replicated(mesh))
  mix_of = jax.jit(lambda s: projected(s.search.alphas, s.decided, s.pruned))
  shard = lambda batch: parallel.shard_batch(batch, mesh)

  eval_batches = len(alpha_half.labels) // config.batch_size
  if pc.eval_batches:
    eval_batches = min(eval_batches, pc.eval_batches)

  def measure(state, mixes, round_index):
    """Every candidate's accuracy and mean loss on the evaluation batches: (C,) arrays."""
    key = jax.random.fold_in(jax.random.PRNGKey(config.seed + 4), round_index)
    mixes = parallel.replicate(mixes, mesh)
    loss = correct = 0.0
    for b in range(eval_batches):
      rows = slice(b * config.batch_size, (b + 1) * config.batch_size)
      batch = {"images": alpha_half.images[rows], "labels": alpha_half.labels[rows]}
      l, c = candidates_step(state, mixes, jax.random.fold_in(key, b), shard(batch))
      loss, correct = loss + l, correct + c
    n = eval_batches * config.batch_size
    return (np.asarray(correct, np.float64) / n, np.asarray(loss, np.float64) / n)

  log = {"rounds_done": 0, "decisions": []}
  allowed = np.array([op != "none" or config.search_space == "nas_bench_201"
                      for op in space.ops])  # DARTS' cells never keep `none` (its rule)

  def decide(state, r, what):
    """Round `r`: one decision per kind, each measured on the supernet after the one before."""
    decided = {k: np.array(v) for k, v in state.decided.items()}
    pruned = {k: np.array(v) for k, v in state.pruned.items()}
    for i, kind in enumerate(kinds):
      rng = np.random.default_rng([config.seed, r, i])
      mix = {k: np.asarray(v) for k, v in mix_of(state).items()}
      entry = {"round": r, "kind": kind}
      evaluate = lambda mixes: measure(state, mixes, r * len(kinds) + i)
      if what == OP:
        undecided = np.flatnonzero(decided[kind] < 0)
        edge = int(undecided[0] if pc.edge_order == "fixed" else rng.choice(undecided))
        op, accuracy, loss = select_op(evaluate, mix, kind, edge, pc.criterion, allowed)
        decided[kind][edge] = op
        entry.update(edge=space.edges[edge], op=space.ops[op], ops=list(space.ops),
                     accuracy=accuracy.tolist(), loss=loss.tolist())
        print(f"  round {r + 1}: {kind} edge {space.edges[edge]} keeps {space.ops[op]} "
              f"(accuracy without each op: {' '.join(f'{a:.4f}' for a in accuracy)})",
              flush=True)
      else:
        left = [n for n in range(1, STEPS) if not pruned[kind][node_edges(n)].any()]
        node = int(left[0] if pc.edge_order == "fixed" else rng.choice(left))
        kept, steps = select_inputs(evaluate, mix, kind, node, pc.criterion, len(space.ops))
        for e in node_edges(node):
          pruned[kind][e] = e not in kept
        entry.update(node=node, kept=[space.edges[e] for e in kept],
                     steps=[{**s, "inputs": [space.edges[e] for e in s["inputs"]],
                             "dropped": space.edges[s["dropped"]]} for s in steps])
        print(f"  round {r + 1}: {kind} node {node} keeps its inputs "
              f"{', '.join(space.edges[e] for e in kept)}", flush=True)
      state = parallel.replicate(state._replace(
          decided={k: jnp.asarray(v) for k, v in decided.items()},
          pruned={k: jnp.asarray(v) for k, v in pruned.items()}), mesh)
      log["decisions"].append(entry)
    log["rounds_done"] = r + 1
    return state

  def begin_epoch(state, epoch, start):
    if start:  # a resumed epoch: its rounds are in the restored state
      return state
    for r, (at, what) in enumerate(rounds):
      if at == epoch and r >= log["rounds_done"]:
        state = decide(state, r, what)
    return state

  batches = {}

  def resume(meta, ckpt):
    del ckpt
    log.update({k: meta[k] for k in ("rounds_done", "decisions") if k in meta})
    val_steps = len(alpha_half.labels) // config.batch_size
    batches["train"] = data.Batches(weight_half, config.batch_size, seed=config.seed,
                                    epoch=meta["epoch"], index=meta["index"])
    batches["val"] = data.Batches(alpha_half, config.batch_size, seed=config.seed + 1,
                                  epoch=meta["step"] // val_steps,
                                  index=meta["step"] % val_steps)

  def train_step(state, epoch, index, step):
    del epoch, index
    state, metrics = step_fn(state, step, shard(next(batches["train"])),
                             shard(next(batches["val"])))
    return state, loop.StepLog(metrics["train_loss"], metrics["train_accuracy"],
                               {"weight gradient norm": metrics["weight_grad_norm"],
                                "alpha hypergradient norm": metrics["alpha_grad_norm"]})

  record = lambda: json.loads(json.dumps(log))
  table = None
  if config.search_space == "nas_bench_201":
    from darts_jax import nas_bench
    table = nas_bench.load(config.get("benchmark_table") or None)

  def end_of_epoch(state, epoch, step, progress, ckpt):
    del step, ckpt
    val_loss, val_accuracy = cnn_search.evaluate(eval_step, state, alpha_half,
                                                 config.batch_size, config.eval_examples,
                                                 shard)
    decided = int(sum(np.sum(np.asarray(v) >= 0) for v in state.decided.values()))
    scalars = {"train_loss": progress.loss, "train_accuracy": progress.accuracy,
               "search_val_loss": val_loss, "search_val_accuracy": val_accuracy,
               "edges_decided": decided, "rounds_done": log["rounds_done"]}
    line = ""
    if table is not None and decided == num_edges["cell"]:
      looked_up, line = table.report(genotype_of(config.search_space, space.ops,
                                                 state.decided, state.pruned),
                                     dataset=config.data.name)
      scalars.update(looked_up)
      line = f"\n  {line}"
    report = lambda s: (f"epoch {epoch + 1}/{tune_epochs}: tuning loss {s['train_loss']:.4f} "
                        f"acc {s['train_accuracy']:.4f} | projected supernet search-val acc "
                        f"{s['search_val_accuracy']:.4f} | {decided} edges decided, "
                        f"{log['rounds_done']}/{len(rounds)} rounds | "
                        f"{s['epoch_seconds']:.1f}s{line}")
    return loop.EpochEnd(state, scalars, record(), report)

  state, scalars = loop.run(config, workdir, state, steps_per_epoch=steps_per_epoch,
                            train_step=train_step, end_of_epoch=end_of_epoch, resume=resume,
                            record=record, begin_epoch=begin_epoch, epochs=tune_epochs)

  genotype = genotype_of(config.search_space, space.ops, jax.device_get(state.decided),
                         jax.device_get(state.pruned))
  looked_up, line = ({}, "") if table is None else table.report(genotype,
                                                                 dataset=config.data.name)
  if parallel.is_primary():
    with open(os.path.join(workdir, "genotype.json"), "w") as f:
      f.write(genotype.to_json())
    with open(os.path.join(workdir, "decisions.json"), "w") as f:
      json.dump(log["decisions"], f, indent=1)
    pictures = space.draw(genotype, workdir)
    print(f"DARTS-PT genotype: {genotype}\nwrote {workdir}/genotype.json, decisions.json, "
          f"{', '.join(pictures)}", flush=True)
    if line:
      print(line, flush=True)
  return {"genotype": json.loads(genotype.to_json()), "decisions": log["decisions"],
          **scalars, **looked_up}


def _read_config(search_dir: str) -> dict:
  path = os.path.join(search_dir, "config.json")
  try:
    with open(path) as f:
      saved = json.load(f)
  except (OSError, ValueError) as e:
    raise ConfigError(f"{path} is unreadable ({' '.join(str(e).split())}): pass the "
                      "--workdir of a finished search as --config.search_workdir.") from None
  if not isinstance(saved, dict):
    raise ConfigError(f"{path} is not a config: pass the --workdir of a finished search as "
                      "--config.search_workdir.")
  return saved
