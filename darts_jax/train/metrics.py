"""Where a run's numbers go: a JSON-lines file, TensorBoard scalars, and the terminal."""

from __future__ import annotations

import json
import math
import os
import sys
import time

from darts_jax.train import parallel
from darts_jax.errors import NonFiniteLossError, WorkdirError


def perplexity(nll: float) -> float:
  """exp(nll), infinite rather than an OverflowError for a diverged loss."""
  return math.exp(nll) if nll < 700 else math.inf


def _step_of(line: bytes) -> float:
  try:
    step = json.loads(line)["step"]  # bytes that are not UTF-8: a ValueError
  except (ValueError, KeyError, TypeError):  # a line cut short by a kill, or damaged
    return math.inf
  return step if isinstance(step, (int, float)) and not isinstance(step, bool) else math.inf


class MetricWriter:
  """Writes `{step, **scalars}` to `<workdir>/metrics.jsonl` and to TensorBoard event files
  in `<workdir>/tensorboard` (view with `tensorboard --logdir <workdir>`). On several hosts,
  only the first writes; on the others it does nothing."""

  def __init__(self, workdir: str, resume_step: int | None = None):
    from tensorboardX import SummaryWriter  # pure Python: no TensorFlow needed

    self._jsonl = self._tb = None
    if not parallel.is_primary():
      return
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "metrics.jsonl")
    if os.path.lexists(path) and not os.path.isfile(path):
      raise WorkdirError(f"{path} is not a file: move it away and run the same command "
                         "again.")
    if resume_step is not None and os.path.exists(path):
      # Lines written after the checkpoint the run resumes from will be written again.
      with open(path, "rb") as f:
        lines = f.readlines()
      kept = [line for line in lines if _step_of(line) <= resume_step]
      damaged = sum(_step_of(line) == math.inf for line in lines[:-1])  # the last: a kill
      if damaged:
        print(f"warning: {path}: dropped {damaged} unreadable line(s).", file=sys.stderr,
              flush=True)
      with open(path + ".tmp", "wb") as f:
        f.writelines(kept)
      os.replace(path + ".tmp", path)
    self._jsonl = open(path, "a", encoding="utf-8")
    self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, scalars: dict):
    if self._jsonl is None:
      return
    scalars = {k: float(v) for k, v in scalars.items()}
    self._jsonl.write(json.dumps({"step": step, "time": time.time(), **scalars}) + "\n")
    self._jsonl.flush()
    for name, value in scalars.items():
      if math.isfinite(value):
        self._tb.add_scalar(name, value, step)
    self._tb.flush()

  def close(self):
    if self._jsonl is not None:
      self._jsonl.close()
      self._tb.close()


class EpochProgress:
  """An epoch's progress bar, the running mean of the training loss and accuracy, and the
  NaN guard: iterate over it for the step index, and `log` each step's metrics.

  Logged values stay on the device until every `log_every`-th step (and the last, and
  `check()`, which the checkpointer calls before a save); then they are read back in one
  transfer and each is checked, so a non-finite value is reported with the exact step.
  `start` and `sums` continue an epoch interrupted at step `start` (see `sums`).
  """

  def __init__(self, epoch: int, epochs: int, steps: int, log_every: int, show: bool = True,
               perplexity: bool = False, start: int = 0, sums=None):
    from tqdm import tqdm

    self.epoch, self.steps, self.log_every, self.start = epoch, steps, log_every, start
    self.started = time.perf_counter()  # when the epoch (or its resumed part) began
    self.done = start  # steps of the epoch done so far
    self._perplexity = perplexity  # show exp(mean loss) rather than the accuracy
    self.sums = list(sums) if sums else [0.0, 0.0, 0]  # loss, accuracy, count
    self._pending = []
    self._bar = tqdm(range(start, steps), desc=f"epoch {epoch + 1}/{epochs}", unit="step",
                     dynamic_ncols=True, disable=not (show and parallel.is_primary()),
                     initial=start, total=steps)

  @classmethod
  def for_epoch(cls, config, epoch: int, steps: int, resumed: dict, perplexity: bool = False,
                epochs: int | None = None):
    """`epoch`'s progress in a run that resumed from the checkpoint record `resumed`
    ({"epoch", "index", "progress"}): that epoch continues at its step `index`. `epochs`:
    the run's length, when it is not `config.epochs`."""
    here = epoch == resumed["epoch"]
    return cls(epoch, config.epochs if epochs is None else epochs, steps, config.log_every, config.progress_bar, perplexity,
               start=resumed["index"] if here else 0,
               sums=resumed.get("progress") if here else None)

  def __iter__(self):
    return iter(self._bar)

  def log(self, index: int, step: int, loss, accuracy=0.0, checks: dict | None = None):
    """Records the epoch's `index`-th step (global `step`): its loss and accuracy, and
    `checks`, further scalars that must be finite (e.g. {"weight gradient norm": ...})."""
    self.done = index + 1
    self._pending.append((step, {"training loss": loss, **(checks or {})}, accuracy))
    if index % self.log_every == 0 or index == self.steps - 1:
      self.check()

  def check(self):
    """Reads back the pending steps' values; raises NonFiniteLossError at the first
    non-finite one, naming the step and the quantity."""
    import jax

    pending, self._pending = jax.device_get(self._pending), []
    for step, values, accuracy in pending:
      for name, value in values.items():
        if not math.isfinite(float(value)):
          raise NonFiniteLossError(
              f"The {name} is {float(value)} at step {step} (epoch {self.epoch + 1}); the run "
              "stopped without saving it, the checkpoints hold earlier steps only: lower "
              "--config.learning_rate or check the data.")
      loss = float(values["training loss"])
      self.sums = [self.sums[0] + loss, self.sums[1] + float(accuracy), self.sums[2] + 1]
    if not pending:
      return
    if self._perplexity:
      self._bar.set_postfix(loss=f"{self.loss:.3f}", ppl=f"{perplexity(self.loss):.1f}")
    else:
      self._bar.set_postfix(loss=f"{self.loss:.3f}", acc=f"{self.accuracy:.3f}")

  def position(self) -> dict:
    """Where the epoch stands, for a checkpoint's record (what `for_epoch` resumes from)."""
    return {"epoch": self.epoch, "index": self.done, "progress": self.sums}

  @property
  def loss(self) -> float:
    return self.sums[0] / max(self.sums[2], 1)

  @property
  def accuracy(self) -> float:
    return self.sums[1] / max(self.sums[2], 1)
