"""The config schema: every field each task reads, with its type and allowed range.

`check(config)` runs once, in `tasks.preflight`, before a workdir is created or data loaded:
a field out of range, of the wrong type, missing, or one the task does not read is a one-line
`ConfigError` naming the flag, the value and what is allowed. The trainers then read their
config without checking it again.

A rule is a small value (`Int`, `Real`, `Choice`, `Bool`, `Text`, `Sequence`) with
`problem(value) -> str | None`, the allowed range when `value` breaks it; `examples_of_bad()`
gives values that break it, for the tests. A task's schema is a dict `{dotted field: rule}`
built from the blocks below; cross-field conditions are functions in `RELATIONS`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

from darts_jax.errors import ConfigError

# jax.random.PRNGKey(seed) wraps seeds of 2^32 and above to 0 without a word, and the
# evaluation trainers also use seed + 1.
MAX_SEED = 2**31 - 1


def _is_int(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class Int:
  """An integer in [low, high] (either end may be None: unbounded)."""
  low: int | None = None
  high: int | None = None
  optional: bool = False

  def describe(self) -> str:
    if self.low is not None and self.high is not None:
      return f"an integer from {self.low} to {self.high}"
    if self.low is not None:
      return f"an integer >= {self.low}"
    return "an integer"

  def problem(self, value):
    ok = (_is_int(value) and (self.low is None or value >= self.low)
          and (self.high is None or value <= self.high))
    return None if ok else self.describe()

  def examples_of_bad(self):
    bad = [1.5, True, "7"]
    if self.low is not None:
      bad += [self.low - 1, self.low - 8]
    if self.high is not None:
      bad.append(self.high + 1)
    return bad


@dataclasses.dataclass(frozen=True)
class Real:
  """A finite number in the interval from `low` to `high`, each end open or closed."""
  low: float | None = None
  high: float | None = None
  low_open: bool = False
  high_open: bool = False
  optional: bool = False

  def describe(self) -> str:
    if self.low is not None and self.high is not None:
      return (f"a number in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}"
              f"{')' if self.high_open else ']'}")
    if self.low is not None:
      return f"a number {'>' if self.low_open else '>='} {self.low:g}"
    return "a finite number"

  def problem(self, value):
    if not _is_real(value) or not math.isfinite(value):
      return self.describe()
    if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
      return self.describe()
    if self.high is not None and (value > self.high or (self.high_open and value == self.high)):
      return self.describe()
    return None

  def examples_of_bad(self):
    bad = [math.nan, math.inf, "0.1"]
    if self.low is not None:
      bad += [self.low - 1] + ([self.low] if self.low_open else [])
    if self.high is not None:
      bad += [self.high + 1] + ([self.high] if self.high_open else [])
    return bad


@dataclasses.dataclass(frozen=True)
class Choice:
  """One of a set of names; `values` may be a function, for a registry read when checked."""
  values: tuple | Callable[[], Any]
  optional: bool = False

  def allowed(self) -> tuple:
    return tuple(self.values() if callable(self.values) else self.values)

  def describe(self) -> str:
    return f"one of {', '.join(map(str, self.allowed()))}"

  def problem(self, value):
    ok = isinstance(value, str) and value in self.allowed()
    return None if ok else self.describe()

  def examples_of_bad(self):
    return ["no_such_name", 3]


@dataclasses.dataclass(frozen=True)
class Bool:
  optional: bool = False

  def describe(self) -> str:
    return "True or False"

  def problem(self, value):
    return None if isinstance(value, bool) else self.describe()

  def examples_of_bad(self):
    return [1, "yes"]


@dataclasses.dataclass(frozen=True)
class Text:
  """Any string: a path or a name that the code reading it checks (a genotype, a folder)."""
  optional: bool = False

  def describe(self) -> str:
    return "a string"

  def problem(self, value):
    return None if isinstance(value, str) else self.describe()

  def examples_of_bad(self):
    return [3, None]


@dataclasses.dataclass(frozen=True)
class Sequence:
  """A non-empty tuple or list whose items each satisfy `item`."""
  item: Any
  optional: bool = False

  def describe(self) -> str:
    return f"a non-empty list, each item {self.item.describe()}"

  def problem(self, value):
    ok = (isinstance(value, (tuple, list)) and len(value) > 0
          and all(self.item.problem(v) is None for v in value))
    return None if ok else self.describe()

  def examples_of_bad(self):
    return [(), ("no_such_name",), "relu"]


# --- The registries the choices come from (imported when checked) ------------------------------

def _relaxations():
  from darts_jax import relaxations
  return tuple(relaxations.RELAXATIONS)


def _regularisers():
  from darts_jax import regularisers
  return tuple(regularisers.REGULARISERS)


def _spaces():
  from darts_jax import spaces
  return tuple(spaces.SPACES)


def _methods():
  from darts_jax.bilevel import STEP_METHODS
  return tuple(STEP_METHODS)


def _exact_modes():
  from darts_jax.hypergradient import EXACT_MODES
  return tuple(EXACT_MODES)


def _compute_dtypes():
  from darts_jax.spaces.ops import COMPUTE_DTYPES
  return tuple(COMPUTE_DTYPES)


def _remat_policies():
  from darts_jax.spaces.darts_cnn.supernet import REMAT_POLICIES
  return tuple(REMAT_POLICIES)


def _schedules():
  from darts_jax.train.cnn_eval import SCHEDULES
  return SCHEDULES


def _alpha_splits():
  from darts_jax.data.images import ALPHA_SPLITS
  return ALPHA_SPLITS


def _toy_candidates():
  from darts_jax.train.toy_search import CANDIDATES
  return tuple(CANDIDATES)


# --- Blocks shared by several tasks ---------------------------------------------------------

POSITIVE = Real(0, low_open=True)
NON_NEGATIVE = Real(0)
NON_NEGATIVE_OPTIONAL = Real(0, optional=True)
FRACTION = Real(0, 1, high_open=True)  # a probability or a momentum: 0 allowed, 1 not

RUN = {
    "seed": Int(0, MAX_SEED),
    "epochs": Int(1),
    "batch_size": Int(1),
    "log_every": Int(1),
    "progress_bar": Bool(),
    "xla_cpu_fast_kernels": Bool(optional=True),  # read by main.py before JAX starts
    "checkpoint.every_steps": Int(1),
    "checkpoint.keep": Int(1),
    "checkpoint.resume_changed": Bool(),
    "checkpoint.trust_unverified": Bool(),
}
SGD = {  # the recurrent trainers' plain SGD; the others add "momentum"
    "learning_rate": POSITIVE,
    "weight_decay": NON_NEGATIVE,
    "grad_clip": POSITIVE,
}
ALPHAS = {
    "alpha_learning_rate": POSITIVE,
    "alpha_weight_decay": NON_NEGATIVE,
    "hypergradient.method": Choice(_methods),
    "hypergradient.unroll_steps": Int(1),
    "hypergradient.exact_mode": Choice(_exact_modes),
    "hypergradient.fd_epsilon": POSITIVE,
}
IMAGE_DATA = {
    "data.dir": Text(),
    "data.tfds_data_dir": Text(),
    "data.num_train": Int(0),  # 0: the whole training split
}
RECURRENT = {
    "data.name": Choice(("ptb", "wikitext2")),
    "data.dir": Text(),
    "data.num_train": Int(0),
    "bptt": Int(1),
    "max_seq_len_delta": Int(0),
    "window_bucket": Int(1),
    "eval_batch_size": Int(1),
    "tar": NON_NEGATIVE,
    "model.embed_size": Int(1),
    "model.hidden_size": Int(1),
    "model.dropout": FRACTION,
    "model.dropout_h": FRACTION,
    "model.dropout_x": FRACTION,
    "model.dropout_i": FRACTION,
    "model.dropout_e": FRACTION,
}

SCHEMAS = {
    "cnn_search": {
        **RUN, **SGD, "momentum": FRACTION, **ALPHAS, **IMAGE_DATA,
        "search_space": Choice(_spaces),
        "num_seeds": Int(1, optional=True),  # searches vmapped in one program
        "vmap_seeds": Int(0, optional=True),  # seeds per vmapped chunk; 0: all at once
        "relaxation": Choice(_relaxations),
        "aux_skip_beta": NON_NEGATIVE_OPTIONAL,  # darts_minus' initial beta (1)
        "tau_max": Real(0, low_open=True, optional=True),  # gumbel_hard/_soft's temperatures
        "tau_min": Real(0, low_open=True, optional=True),
        "weight_perturbation": Choice(("none", "random", "adversarial"),
                                      optional=True),  # SDARTS-RS, -ADV
        "perturbation_epsilon": Real(0, 1, low_open=True, optional=True),  # its eps_max (0.3)
        "alpha_optimizer": Choice(("adam", "sgd"), optional=True),  # absent: adam (DARTS)
        "alpha_grad_clip": NON_NEGATIVE_OPTIONAL,  # the alphas' global-norm clip; 0: none
        "alpha_b1": Real(0, 1, high_open=True, optional=True),  # Adam's beta1 (DARTS: 0.5)
        "alpha_warmup_epochs": Int(0, optional=True),  # epochs of weight steps alone (DrNAS)
        "regulariser.name": Choice(_regularisers),
        "regulariser.scale": NON_NEGATIVE,
        "regulariser.ramp_epochs": Int(1, optional=True),  # beta_decay's lambda ramp (100)
        "data.name": Choice(("cifar10", "cifar100", "ImageNet16-120", "digits")),
        "data.train_portion": Real(0, 1, low_open=True, high_open=True),
        "data.alpha_split": Choice(_alpha_splits, optional=True),  # absent: "train" (DARTS)
        "data.split_file": Text(optional=True),  # NAS-Bench-201's split file; "": none
        "augment": Bool(),
        "model.channels": Int(1),
        "model.layers": Int(1, optional=True),  # the DARTS space
        "model.cells_per_stage": Int(1, optional=True),  # NAS-Bench-201
        "model.track_running_stats": Bool(optional=True),  # NAS-Bench-201's cells' BN
        "model.partial_channels": Int(1, optional=True),  # PC-DARTS' k (DARTS' space); 1: none
        "model.edge_normalisation": Bool(optional=True),  # PC-DARTS' edge weights
        "model.remat": Choice(_remat_policies),
        "model.dtype": Choice(_compute_dtypes),
        "learning_rate_min": NON_NEGATIVE,
        "nesterov": Bool(),
        "eval_examples": Int(0),  # 0: the whole alpha half
        "benchmark_table": Text(optional=True),  # NAS-Bench-201; "": the shipped table
    },
    "cnn_eval": {
        **RUN, **SGD, "momentum": FRACTION, **IMAGE_DATA,
        "genotype": Text(),
        "data.name": Choice(("cifar10", "cifar100", "digits", "imagenet2012")),
        "data.num_train": Int(0, optional=True),  # ImageNet reads its whole split
        "data.num_test": Int(0, optional=True),  # 0: the whole test split
        "data.num_workers": Int(1, optional=True),  # ImageNet's decoding threads
        "augment.crop_flip": Bool(),
        "augment.cutout": Int(0),
        "model.channels": Int(1),
        "model.layers": Int(1),
        "model.auxiliary_weight": NON_NEGATIVE,
        "model.drop_path_prob": FRACTION,
        "model.scan_cells": Bool(),
        "model.remat": Bool(),
        "model.dtype": Choice(_compute_dtypes),
        "lr_schedule": Choice(_schedules),
        "learning_rate_min": NON_NEGATIVE,
        "lr_decay": Real(0, 1, low_open=True),
        "label_smoothing": FRACTION,
    },
    "rnn_search": {
        **RUN, **SGD, **ALPHAS, **RECURRENT,
        "relaxation": Choice(_relaxations),
        "data.num_valid": Int(0),  # 0: the whole validation split
    },
    "darts_pt": {  # darts_jax/train/darts_pt.py; its length follows from projection.interval
        **{k: v for k, v in RUN.items() if k != "epochs"}, **SGD, "momentum": FRACTION,
        **ALPHAS, **IMAGE_DATA,
        "search_workdir": Text(),  # the --workdir of the cnn_search run projected
        "search_space": Choice(_spaces),
        "relaxation": Choice(_relaxations),
        "aux_skip_beta": NON_NEGATIVE_OPTIONAL,
        "tau_max": Real(0, low_open=True, optional=True),
        "tau_min": Real(0, low_open=True, optional=True),
        "alpha_optimizer": Choice(("adam", "sgd"), optional=True),
        "alpha_grad_clip": NON_NEGATIVE_OPTIONAL,
        "alpha_b1": Real(0, 1, high_open=True, optional=True),
        "data.name": Choice(("cifar10", "cifar100", "ImageNet16-120", "digits")),
        "data.train_portion": Real(0, 1, low_open=True, high_open=True),
        "data.alpha_split": Choice(_alpha_splits, optional=True),
        "data.split_file": Text(optional=True),
        "augment": Bool(),
        "model.channels": Int(1),
        "model.layers": Int(1, optional=True),
        "model.cells_per_stage": Int(1, optional=True),
        "model.track_running_stats": Bool(optional=True),
        "model.remat": Choice(_remat_policies),
        "model.dtype": Choice(_compute_dtypes),
        "learning_rate_min": NON_NEGATIVE,
        "nesterov": Bool(),
        "eval_examples": Int(0),
        "benchmark_table": Text(optional=True),
        "projection.interval": Int(1),  # tuning epochs between decisions (proj_intv)
        "projection.edge_order": Choice(("random", "fixed")),
        "projection.criterion": Choice(("accuracy", "loss")),
        "projection.update_alphas": Bool(),  # the alphas' step goes on while tuning
        "projection.eval_batches": Int(0),  # batches per candidate; 0: the whole alpha half
        "projection.vmap_candidates": Int(0),  # candidates per vmap; 0: all at once
    },
    "rnn_eval": {
        **RUN, **SGD, **RECURRENT,
        "genotype": Text(),
        "test_batch_size": Int(1),
        "nonmono": Int(0),  # 0: switch at the first epoch that is not the best
    },
    "toy_search": {
        **RUN, **SGD, "momentum": FRACTION, **ALPHAS,
        "teacher_ops": Sequence(Choice(_toy_candidates)),
        "dim": Int(1),
        "num_examples": Int(1),
        "steps_per_epoch": Int(1),
    },
}


# --- Conditions between fields ----------------------------------------------------------------

# The tasks whose config describes DARTS' or NAS-Bench-201's CNN supernet.
CNN_SUPERNET_TASKS = ("cnn_search", "darts_pt")


def _min_below_max(config):
  if "learning_rate_min" in config and config.learning_rate_min > config.learning_rate:
    return (f"--config.learning_rate_min={config.learning_rate_min!r} is above "
            f"--config.learning_rate={config.learning_rate!r}: the cosine schedule would rise; "
            "lower learning_rate_min.")
  return None


def _finite_difference_unrolls_once(config):
  block = config.get("hypergradient")
  if block is not None and block.method == "finite_difference" and block.unroll_steps != 1:
    return ("--config.hypergradient.method=finite_difference (DARTS' approximation) is "
            f"defined for unroll_steps=1 only: use method=exact to unroll {block.unroll_steps} "
            "steps.")
  return None


def _tied_embedding(config):
  model = config.get("model")
  if config.task.startswith("rnn_") and model.embed_size != model.hidden_size:
    return ("--config.model.embed_size and --config.model.hidden_size must be equal (the "
            "decoder is tied to the embedding).")
  return None


def _space_has_its_size(config):
  if config.task not in CNN_SUPERNET_TASKS or config.search_space not in (
      "darts", "darts_without_none", "nas_bench_201"):
    return None
  field = "cells_per_stage" if config.search_space == "nas_bench_201" else "layers"
  if field not in config.model:
    return (f"--config.search_space={config.search_space} needs --config.model.{field}, which "
            "the config lacks: add it (configs/cifar_search.py, configs/nb201_search.py).")
  return None


def _partial_channels(config):
  if config.task != "cnn_search":
    return None
  k = config.model.get("partial_channels", 1)
  if k == 1:
    return None
  if config.model.channels % k:
    return (f"--config.model.partial_channels={k} must divide --config.model.channels="
            f"{config.model.channels} (each op sees channels / partial_channels).")
  return None


def _cell_bn_of_nb201(config):
  if config.task in CNN_SUPERNET_TASKS and config.search_space != "nas_bench_201" and \
      "track_running_stats" in config.model:
    return (f"--config.model.track_running_stats is an option of the NAS-Bench-201 space, not of "
            f"--config.search_space={config.search_space}: remove it.")
  return None


def _options_of_their_method(config):
  for field in ("tau_max", "tau_min"):
    if field in config and config.get("relaxation") not in ("gumbel_hard", "gumbel_soft"):
      return (f"--config.{field} is an option of --config.relaxation=gumbel_hard or gumbel_soft, "
              f"not of {config.get('relaxation')}: remove it.")
  if "tau_max" in config and "tau_min" in config and config.tau_min > config.tau_max:
    return (f"--config.tau_min={config.tau_min!r} is above --config.tau_max={config.tau_max!r}: "
            "the temperature would rise; swap them.")
  if config.get("weight_perturbation", "none") != "none" and "perturbation_epsilon" not in config:
    return ("--config.weight_perturbation needs --config.perturbation_epsilon (SDARTS: 0.3): "
            "add it.")
  if "aux_skip_beta" in config and config.get("relaxation") != "darts_minus":
    return (f"--config.aux_skip_beta is an option of --config.relaxation=darts_minus, not of "
            f"{config.get('relaxation')}: remove it.")
  block = config.get("regulariser")
  if block is not None and "ramp_epochs" in block and block.name != "beta_decay":
    return (f"--config.regulariser.ramp_epochs is an option of the beta_decay regulariser, not "
            f"of {block.name}: remove it.")
  if config.task == "rnn_search" and config.get("relaxation") == "darts_minus":
    return ("--config.relaxation=darts_minus adds a decaying skip connection, and the "
            "recurrent cell has none: choose another relaxation.")
  single = config.get("hypergradient") is not None and \
      config.hypergradient.method == "single_level"
  if single and config.task != "cnn_search":
    return ("--config.hypergradient.method=single_level (SNAS) is a mode of the CNN search "
            "only so far: use exact, finite_difference or first_order.")
  if config.task == "darts_pt" and config.get("relaxation") == "gumbel_hard":
    return ("--config.relaxation=gumbel_hard (GDAS) computes one op per edge, so removing an "
            "op's mixing weight does not measure what it contributes (DARTS-PT): project a "
            "supernet searched with another relaxation.")
  if "alpha_warmup_epochs" in config and config.alpha_warmup_epochs >= config.epochs:
    return (f"--config.alpha_warmup_epochs={config.alpha_warmup_epochs} leaves no epoch of the "
            f"{config.epochs} to update the alphas: lower it below --config.epochs.")
  if "alpha_b1" in config and config.get("alpha_optimizer", "adam") != "adam":
    return (f"--config.alpha_b1 is Adam's, and --config.alpha_optimizer="
            f"{config.alpha_optimizer}: remove it.")
  if single and config.get("weight_perturbation", "none") != "none":
    return ("--config.weight_perturbation (SDARTS) perturbs a weight step of its own, and "
            "method=single_level has one step for weights and alphas: choose one of them.")
  if config.get("relaxation") == "gumbel_hard" and config.task not in CNN_SUPERNET_TASKS:
    return ("--config.relaxation=gumbel_hard (GDAS) computes one op per edge, which the CNN "
            "supernets do and the recurrent cell does not: choose another relaxation.")
  return None


RELATIONS = (_min_below_max, _finite_difference_unrolls_once, _tied_embedding,
             _space_has_its_size, _cell_bn_of_nb201, _partial_channels,
             _options_of_their_method)


# --- The check ----------------------------------------------------------------------------------

def flatten(config, prefix: str = "") -> dict:
  """{"a.b": value} for every leaf of a ConfigDict (or dict)."""
  out = {}
  for key, value in config.items():
    if hasattr(value, "items"):
      out.update(flatten(value, f"{prefix}{key}."))
    else:
      out[prefix + key] = value
  return out


def check(config):
  """Checks `config` against its task's schema.

  Args:
    config: an experiment config (`ml_collections.ConfigDict`) whose `task` is a key of
      SCHEMAS.

  Raises:
    ConfigError: one line naming the first field that is missing, unknown to the task, of
      the wrong type or out of range, its value and what is allowed.
  """
  schema = SCHEMAS[config.task]
  fields = flatten(config)
  fields.pop("task")
  for name, rule in schema.items():
    if name not in fields:
      if not rule.optional:
        raise ConfigError(f"The config lacks {name}, which task {config.task} reads: add it "
                          "(the configs/ files of this task declare every field).")
      continue
    problem = rule.problem(fields[name])
    if problem:
      raise ConfigError(f"--config.{name}={fields[name]!r} must be {problem}.")
  unknown = sorted(set(fields) - set(schema))
  if unknown:
    raise ConfigError(f"The config has {unknown[0]}, which task {config.task} does not read: "
                      "remove it or correct its name"
                      f"{' (and ' + ', '.join(unknown[1:]) + ')' if unknown[1:] else ''}.")
  for relation in RELATIONS:
    problem = relation(config)
    if problem:
      raise ConfigError(problem)
