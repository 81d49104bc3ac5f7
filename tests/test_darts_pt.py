"""DARTS-PT (darts_jax/train/darts_pt.py): its schedule, the projected mixing weights, the
selection on a hand-built supernet whose answer is known, and the trainer on tiny searches
of both spaces (the cell it writes, a resumed run, the search's workdir left as it was, and
refused search workdirs)."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import cifar_darts_pt, nb201_darts_pt, nb201_search, quick_search
from darts_jax.errors import ConfigError
from darts_jax.spaces import nas_bench_201
from darts_jax.spaces.darts_cnn.genotypes import PRIMITIVES, Genotype, edge_index
from darts_jax.train import cnn_search, darts_pt, tasks
from tests.helpers import override
from tests.test_resume import run_interrupted



def test_schedule_is_the_releases():
  epochs, rounds = darts_pt.schedule("darts", 5)  # sota/cnn/projection.py, proj_intv 5
  assert epochs == 81
  assert rounds == [(5 * t, "op") for t in range(14)] + [(70, "node"), (75, "node"),
                                                         (80, "node")]
  epochs, rounds = darts_pt.schedule("nas_bench_201", 5)  # nasbench201/projection.py
  assert (epochs, [e for e, _ in rounds]) == (25, [0, 5, 10, 15, 20, 24])
  assert {w for _, w in rounds} == {"op"}
  assert darts_pt.schedule("nas_bench_201", 1) == (5, [(e, "op") for e in (0, 1, 2, 3, 4, 4)])
  assert darts_pt.schedule("darts", 1)[0] == 17


def test_projection_sets_decided_rows_one_hot_and_pruned_rows_to_zero():
  mix = {"normal": jnp.full((4, 3), 0.25), "reduce": jnp.full((4, 3), 0.5)}
  decided = {"normal": jnp.array([-1, 2, -1, 0]), "reduce": jnp.array([1, -1, -1, -1])}
  pruned = {"normal": jnp.array([False, False, True, True]), "reduce": jnp.zeros(4, bool)}
  out = darts_pt.project(mix, decided, pruned)
  np.testing.assert_array_equal(out["normal"], [[.25, .25, .25], [0, 0, 1], [0, 0, 0], [0, 0, 0]])
  np.testing.assert_array_equal(out["reduce"], [[0, 1, 0], [.5, .5, .5], [.5, .5, .5],
                                                [.5, .5, .5]])
  # The candidates: op c of the edge zeroed, the row not renormalised; the other kind intact.
  host = {k: np.asarray(v, np.float32) for k, v in out.items()}
  ops = darts_pt.op_candidates(host, "reduce", 2)
  assert ops["reduce"].shape == (3, 4, 3) and ops["normal"].shape == (3, 4, 3)
  for c in range(3):
    expected = host["reduce"].copy()
    expected[2, c] = 0
    np.testing.assert_array_equal(ops["reduce"][c], expected)
    np.testing.assert_array_equal(ops["normal"][c], host["normal"])
  edges = darts_pt.edge_candidates(host, "normal", [0, 1], 3)
  np.testing.assert_array_equal(edges["normal"][0, 0], 0)
  np.testing.assert_array_equal(edges["normal"][0, 1:], host["normal"][1:])
  np.testing.assert_array_equal(edges["normal"][1, 1], 0)
  np.testing.assert_array_equal(edges["normal"][2], host["normal"])  # padding: unchanged


def test_ties_go_where_the_release_sends_them():
  acc, loss = np.array([.5, .5, .7]), np.array([1.0, 1.0, 0.5])
  assert darts_pt.choose_op(acc, loss, "accuracy") == 0  # lowest accuracy, the first
  assert darts_pt.choose_op(acc, loss, "loss") == 0  # highest loss, the first
  assert darts_pt.choose_op(acc, loss, "accuracy", [False, True, True]) == 1
  assert darts_pt.edge_to_drop(np.array([.7, .9, .9]), loss, "accuracy") == 2  # the later
  assert darts_pt.edge_to_drop(acc, np.array([.3, .2, .2]), "loss") == 2


def linear_supernet(seed, ops=7, examples=4000, features=8, classes=4, strength=0.9):
  """A hand-built supernet whose answer is known: every (cell, edge, op) is a fixed linear
  map; the labels are those of a teacher cell (2 inputs per node, one op on each), and the
  supernet mixes every op of every edge at (1 - strength) / ops, plus `strength` on the
  teacher's op of each of the teacher's edges."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(examples, features)).astype(np.float32)
  maps = {k: rng.normal(size=(14, ops, features, classes)).astype(np.float32)
          for k in ("normal", "reduce")}
  teacher_ops = {k: rng.integers(1, ops, size=14) for k in maps}  # never column 0
  teacher_inputs = {k: [sorted(rng.choice(2 + n, 2, replace=False)) for n in range(4)]
                    for k in maps}
  teacher, mix = {}, {}
  for k in maps:
    rows = np.zeros((14, ops), np.float32)
    for n in range(4):
      for j in teacher_inputs[k][n]:
        rows[edge_index(n, j), teacher_ops[k][edge_index(n, j)]] = 1.0
    teacher[k] = rows
    mix[k] = strength * rows + (1 - strength) / ops
  logits = lambda m: sum(jnp.einsum("nf,eo,eofc->nc", x, m[k], maps[k]) for k in maps)
  labels = jnp.argmax(logits(teacher), -1)

  @jax.jit
  def evaluate(mixes):  # every candidate in one vmapped program, as the trainer does
    out = jax.vmap(logits)(mixes)
    accuracy = jnp.mean(jnp.argmax(out, -1) == labels, axis=-1)
    loss = optax.softmax_cross_entropy_with_integer_labels(out, labels[None]).mean(-1)
    return accuracy, loss

  host_eval = lambda mixes: tuple(np.asarray(a) for a in evaluate(mixes))
  return host_eval, mix, teacher_ops, teacher_inputs


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("criterion", ["accuracy", "loss"])
def test_selection_on_a_hand_built_supernet_finds_the_teacher_cell(seed, criterion):
  evaluate, mix, teacher_ops, teacher_inputs = linear_supernet(seed)
  allowed = np.arange(7) != 0
  for kind in ("normal", "reduce"):
    for node in range(4):
      for edge in [edge_index(node, j) for j in teacher_inputs[kind][node]]:
        op, accuracy, _ = darts_pt.select_op(evaluate, mix, kind, edge, criterion, allowed)
        assert op == teacher_ops[kind][edge], (kind, edge, accuracy)
    # Only 2 inputs of each node feed the labels: the node rounds keep those, the greedy
    # loop dropping the input whose removal hurts least each time.
    for node in range(1, 4):
      kept, steps = darts_pt.select_inputs(evaluate, mix, kind, node, criterion, 7)
      assert kept == [edge_index(node, j) for j in teacher_inputs[kind][node]]
      assert len(steps) == node  # 2 + node inputs, one dropped per step
      assert all(s["dropped"] not in kept for s in steps)


def test_an_op_that_is_not_allowed_is_never_kept():
  evaluate, mix, teacher_ops, teacher_inputs = linear_supernet(0)
  edge = edge_index(2, teacher_inputs["normal"][2][0])
  best = teacher_ops["normal"][edge]  # whose removal hurts most
  op, accuracy, _ = darts_pt.select_op(evaluate, mix, "normal", edge, "accuracy")
  assert op == best and accuracy[best] < np.delete(accuracy, best).min()
  op, _, _ = darts_pt.select_op(evaluate, mix, "normal", edge, "accuracy", np.arange(7) != best)
  assert op != best  # as DARTS' `none` is kept out of DARTS' cells


def test_the_genotype_is_each_nodes_unpruned_inputs_with_their_ops():
  decided = {k: np.arange(14) % 7 + 1 for k in ("normal", "reduce")}
  pruned = {k: np.zeros(14, bool) for k in decided}
  for k in pruned:
    for node, keep in ((1, (0, 2)), (2, (1, 3)), (3, (0, 4))):
      for j in range(2 + node):
        pruned[k][edge_index(node, j)] = j not in keep
  genotype = darts_pt.genotype_of("darts", PRIMITIVES, decided, pruned)
  ops = lambda node, j: PRIMITIVES[edge_index(node, j) % 7 + 1]
  assert genotype.normal == ((ops(0, 0), 0), (ops(0, 1), 1), (ops(1, 0), 0), (ops(1, 2), 2),
                             (ops(2, 1), 1), (ops(2, 3), 3), (ops(3, 0), 0), (ops(3, 4), 4))
  assert genotype.normal_concat == (2, 3, 4, 5) and genotype.reduce == genotype.normal
  cell = darts_pt.genotype_of("nas_bench_201", nas_bench_201.OPS,
                              {"cell": np.array([0, 1, 2, 3, 4, 0])}, {"cell": None})
  assert cell.ops == ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3",
                      "none")


# --- The trainer, on searches of a few steps of the 8x8 digits ---------------------------

TINY = {"data.num_train": 96, "batch_size": 8, "progress_bar": False,
        "hypergradient.method": "first_order"}


@pytest.fixture(scope="module")
def searches(tmp_path_factory):
  """A finished one-epoch search on each space: (workdir, config) by space."""
  root = tmp_path_factory.mktemp("searches")
  darts = override(quick_search.get_config(), **TINY, **{
      "epochs": 1, "model.channels": 2, "model.layers": 3})
  nb201 = override(nb201_search.get_config(), **TINY, **{
      "epochs": 2, "data.name": "digits", "augment": False, "model.channels": 4,
      "model.cells_per_stage": 1, "xla_cpu_fast_kernels": False})
  out = {}
  for name, config in (("darts", darts), ("nas_bench_201", nb201)):
    cnn_search.train_and_evaluate(config, str(root / name))
    out[name] = str(root / name)
  return out


def pt_config(space, search_workdir, **extra):
  if space == "darts":
    config = override(cifar_darts_pt.get_config(), **{
        "search_space": "darts", "data.name": "digits", "augment": False,
        "model.channels": 2, "model.layers": 3, "xla_cpu_fast_kernels": False})
  else:
    config = override(nb201_darts_pt.get_config(), **{
        "data.name": "digits", "augment": False, "model.channels": 4,
        "model.cells_per_stage": 1, "xla_cpu_fast_kernels": False})
  return override(config, **TINY, **{"search_workdir": search_workdir,
                                     "projection.interval": 1,
                                     "projection.eval_batches": 2}, **extra)


def listing(folder):
  return sorted((os.path.relpath(os.path.join(r, n), folder), os.path.getmtime(os.path.join(r, n)))
                for r, _, names in os.walk(folder) for n in names)


def test_darts_space_projection_writes_the_cell_its_decisions_chose(searches, tmp_path):
  before = listing(searches["darts"])
  result = darts_pt.train_and_evaluate(pt_config("darts", searches["darts"]), str(tmp_path))
  assert listing(searches["darts"]) == before  # the search's workdir is only read
  genotype = Genotype(**{k: tuple(tuple(p) if isinstance(p, list) else p for p in v)
                         for k, v in json.loads((tmp_path / "genotype.json").read_text()).items()})
  genotype.validate()
  decisions = json.loads((tmp_path / "decisions.json").read_text())
  assert decisions == result["decisions"]
  assert [d["kind"] for d in decisions] == ["normal", "reduce"] * 17
  op_rounds, node_rounds = decisions[:28], decisions[28:]
  for kind in ("normal", "reduce"):
    ops = {d["edge"]: d["op"] for d in op_rounds if d["kind"] == kind}
    assert len(ops) == 14 and "none" not in ops.values()  # every edge once; never `none`
    kept = {d["node"]: d["kept"] for d in node_rounds if d["kind"] == kind}
    assert sorted(kept) == [1, 2, 3]  # each node with more than 2 inputs, once
    kept[0] = ["0<-0", "0<-1"]
    cell = getattr(genotype, kind)
    for node in range(4):
      assert [f"{node}<-{j}" for _, j in cell[2 * node:2 * node + 2]] == kept[node]
      assert [op for op, _ in cell[2 * node:2 * node + 2]] == [ops[e] for e in kept[node]]
  for d in op_rounds:  # the op kept is the one whose removal costs the most accuracy
    allowed = [a for a, op in zip(d["accuracy"], d["ops"]) if op != "none"]
    assert d["accuracy"][d["ops"].index(d["op"])] == min(allowed)
  lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [l["epoch"] for l in lines] == list(range(1, 18))
  assert [l["rounds_done"] for l in lines] == list(range(1, 18))
  assert (tmp_path / "normal.png").exists() and (tmp_path / "reduction.png").exists()


def test_nas_bench_201_projection_resumes_bit_for_bit(searches, tmp_path, monkeypatch):
  config = pt_config("nas_bench_201", searches["nas_bench_201"],
                     **{"checkpoint.every_steps": 4})
  # 6 steps an epoch, 5 epochs, two rounds at the start of the last: SIGTERM after step 15,
  # in the third epoch, after its round.
  reference, resumed = run_interrupted(darts_pt.train_and_evaluate, config, tmp_path,
                                       monkeypatch, 15, "sigterm")
  assert resumed["genotype"] == reference["genotype"]
  assert resumed["decisions"] == reference["decisions"]
  assert len(reference["decisions"]) == 6
  assert sorted(d["edge"] for d in reference["decisions"]) == sorted(
      f"{i}<-{j}" for i, j in nas_bench_201.EDGES)
  cell = nas_bench_201.Genotype201.from_json((tmp_path / "run" / "genotype.json").read_text())
  assert list(cell.ops) == [dict((d["edge"], d["op"]) for d in reference["decisions"])[
      f"{i}<-{j}"] for i, j in nas_bench_201.EDGES]
  assert any(k.startswith("nas_bench_201/") for k in reference)  # the cell looked up


def test_refused_search_workdirs_get_one_line(searches, tmp_path):
  cases = [
      (pt_config("darts", str(tmp_path / "absent")), "is not a folder"),
      (pt_config("darts", searches["darts"], **{"model.channels": 4}),
       "--config.model.channels=4, and the search in"),
      (pt_config("darts", searches["darts"], **{"search_space": "darts_without_none"}),
       "pass --config.search_space='darts'"),
      (pt_config("darts", searches["nas_bench_201"]), "pass --config.search_space="),
  ]
  for config, expected in cases:
    with pytest.raises(ConfigError) as error:
      darts_pt.train_and_evaluate(config, str(tmp_path / "pt"))
    assert expected in str(error.value) and "\n" not in str(error.value), str(error.value)
  # An unfinished search: its checkpoints stop before its last epoch.
  config = pt_config("nas_bench_201", searches["nas_bench_201"])
  unfinished = tmp_path / "unfinished"
  unfinished.mkdir()
  saved = json.loads((open(os.path.join(searches["nas_bench_201"], "config.json"))).read())
  saved["epochs"] = 5
  (unfinished / "config.json").write_text(json.dumps(saved))
  os.symlink(os.path.join(searches["nas_bench_201"], "checkpoints"), unfinished / "checkpoints")
  with pytest.raises(ConfigError, match="stopped after epoch 2 of 5: finish it"):
    darts_pt.train_and_evaluate(override(config, search_workdir=str(unfinished)),
                                str(tmp_path / "pt"))
  # Through the command's path: one line, exit 1, no workdir left behind.
  with pytest.raises(SystemExit) as exit_:
    tasks.run(pt_config("darts", str(tmp_path / "absent")), str(tmp_path / "new"))
  assert "is not a folder" in str(exit_.value) and not (tmp_path / "new").exists()
