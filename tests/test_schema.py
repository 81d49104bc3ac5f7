"""The config schema (darts_jax/train/schema.py): every shipped config passes, and every field
of every task refuses each value outside its range in one line naming the flag and value.

In process: the command line's path to these errors is covered by test_bad_input's entries.
"""

import importlib
import math
import pathlib

import ml_collections
import pytest

from darts_jax.errors import ConfigError
from darts_jax.train import schema, tasks

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = sorted(p.stem for p in (ROOT / "configs").glob("*.py") if not p.stem.startswith("_"))
# One config per task (two where a task's fields differ by search space or dataset).
REPRESENTATIVES = ["cifar_search", "nb201_search", "cifar_eval", "imagenet_eval", "ptb_search",
                   "ptb_eval", "toy_search", "cifar_darts_pt"]


def load(name):
  """The config as a ConfigDict that accepts values of any type (as a config file may set)."""
  config = importlib.import_module(f"configs.{name}").get_config()
  return ml_collections.ConfigDict(config.to_dict(), type_safe=False)


def set_field(config, dotted, value):
  *parents, leaf = dotted.split(".")
  for parent in parents:
    config = config[parent]
  config[leaf] = value


@pytest.mark.parametrize("name", CONFIGS)
def test_every_shipped_config_passes(name):
  config = importlib.import_module(f"configs.{name}").get_config()
  schema.check(config)
  assert config.task in schema.SCHEMAS and set(schema.SCHEMAS) == set(tasks.TASKS)


def test_every_task_has_a_representative():
  assert {load(n).task for n in REPRESENTATIVES} == set(schema.SCHEMAS)


def bad_cases():
  for name in REPRESENTATIVES:
    task = load(name).task
    for field, rule in schema.SCHEMAS[task].items():
      if field in schema.flatten(load(name)):
        yield name, field, rule


@pytest.mark.parametrize("name,field,rule", list(bad_cases()),
                         ids=lambda x: x if isinstance(x, str) else "")
def test_every_field_refuses_values_out_of_its_range(name, field, rule):
  good = schema.flatten(load(name))[field]
  assert rule.problem(good) is None, (field, good)
  for bad in rule.examples_of_bad():
    config = load(name)
    set_field(config, field, bad)
    with pytest.raises(ConfigError) as error:
      schema.check(config)
    message = str(error.value)
    stored = schema.flatten(config)[field]  # ConfigDict keeps a float field's 0 as 0.0
    assert "\n" not in message
    assert message == f"--config.{field}={stored!r} must be {rule.describe()}.", message


@pytest.mark.parametrize("rule,good,bad", [
    (schema.Int(1), [1, 7, 10**9], [0, -8, 1.0, True]),
    (schema.Int(0, 9), [0, 9], [-1, 10]),
    (schema.Real(0, low_open=True), [1e-9, 3, 20.0], [0, 0.0, -1e-9, math.nan, math.inf, False]),
    (schema.Real(0, 1, high_open=True), [0, 0.0, 0.999], [1, 1.0, -0.1]),
    (schema.Real(0, 1, low_open=True, high_open=True), [0.5], [0.0, 1.0]),
    (schema.Choice(("a", "b")), ["a", "b"], ["c", 1, None]),
    (schema.Bool(), [True, False], [0, 1, "True"]),
    (schema.Sequence(schema.Choice(("relu", "sin"))), [("relu",), ["sin", "relu"]],
     [(), ("tanh",), "relu"]),
])
def test_rules_accept_their_range_only(rule, good, bad):
  for value in good:
    assert rule.problem(value) is None, value
  for value in bad:
    assert rule.problem(value) == rule.describe(), value


def test_a_missing_field_and_an_unknown_one_are_named():
  config = load("cifar_search")
  del config["grad_clip"]
  with pytest.raises(ConfigError, match="The config lacks grad_clip, which task cnn_search "
                                        "reads"):
    schema.check(config)
  config = load("cifar_search")
  config.model.chanels = 16  # a typo in a hand-written config
  with pytest.raises(ConfigError, match=r"has model\.chanels, which task cnn_search does not "
                                        "read: remove it or correct its name"):
    schema.check(config)
  config = load("nb201_search")
  del config.model["cells_per_stage"]
  with pytest.raises(ConfigError, match="search_space=nas_bench_201 needs "
                                        r"--config\.model\.cells_per_stage"):
    schema.check(config)


@pytest.mark.parametrize("name,changes,words", [
    ("cifar_search", {"learning_rate_min": 0.1}, "learning_rate_min=0.1 is above"),
    ("ptb_search", {"hypergradient.method": "finite_difference",
                    "hypergradient.unroll_steps": 2}, "unroll_steps=1 only"),
    ("ptb_eval", {"model.embed_size": 300}, "must be equal"),
    ("nb201_search", {"tau_max": 2.0}, "option of --config.relaxation=gumbel_hard or "
                                       "gumbel_soft"),
    ("nb201_gdas", {"tau_min": 20.0}, "the temperature would rise"),
    ("nb201_snas", {"hypergradient.method": "exact"}, None),  # bilevel SNAS is allowed
    ("ptb_search", {"hypergradient.method": "single_level"}, "mode of the CNN search only"),
    ("nb201_sdarts_rs", {"hypergradient.method": "single_level"},
     "one step for weights and alphas"),
    ("nb201_search", {"aux_skip_beta": 0.5}, "option of --config.relaxation=darts_minus"),
    ("cifar_search", {"relaxation": "gumbel_hard"}, None),  # GDAS on the DARTS space
    ("ptb_search", {"relaxation": "gumbel_hard"}, "the recurrent cell does not"),
    ("cifar_drnas", {"alpha_warmup_epochs": 50}, "leaves no epoch of the 50"),
    ("cifar_drnas", {"alpha_warmup_epochs": 49}, None),
    ("cifar_fair_darts", {"alpha_optimizer": "sgd"}, "alpha_b1 is Adam's"),
    ("cifar_search", {"model.partial_channels": 4}, None),
    ("cifar_search", {"model.partial_channels": 3}, "must divide --config.model.channels=16"),
    ("nb201_search", {"model.partial_channels": 2}, None),
    ("nb201_search", {"model.partial_channels": 32}, "must divide --config.model.channels=16"),
    ("nb201_search", {"model.edge_normalisation": True}, None),
    ("cifar_darts_pt", {"relaxation": "gumbel_hard"}, "measure what it contributes"),
    ("cifar_darts_pt", {"hypergradient.method": "single_level"}, "CNN search only"),
])
def test_conditions_between_fields(name, changes, words):
  config = load(name)
  schema.check(config)
  for field, value in changes.items():
    set_field(config, field, value)
  if words is None:
    schema.check(config)
    return
  with pytest.raises(ConfigError, match=words):
    schema.check(config)
