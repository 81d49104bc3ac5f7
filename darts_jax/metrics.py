"""Where a run's numbers go: a JSON-lines file, TensorBoard scalars, and the terminal."""

from __future__ import annotations

import json
import math
import os
import time

from darts_jax.errors import NonFiniteLossError


def perplexity(nll: float) -> float:
  """exp(nll), infinite rather than an OverflowError for a diverged loss."""
  return math.exp(nll) if nll < 700 else math.inf


class MetricWriter:
  """Writes `{step, **scalars}` to `<workdir>/metrics.jsonl` and to TensorBoard event files
  in `<workdir>/tensorboard` (view with `tensorboard --logdir <workdir>`)."""

  def __init__(self, workdir: str):
    from tensorboardX import SummaryWriter  # pure Python: no TensorFlow needed

    os.makedirs(workdir, exist_ok=True)
    self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
    self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, scalars: dict):
    scalars = {k: float(v) for k, v in scalars.items()}
    self._jsonl.write(json.dumps({"step": step, "time": time.time(), **scalars}) + "\n")
    self._jsonl.flush()
    for name, value in scalars.items():
      if math.isfinite(value):
        self._tb.add_scalar(name, value, step)
    self._tb.flush()

  def close(self):
    self._jsonl.close()
    self._tb.close()


class EpochProgress:
  """An epoch's progress bar, the running mean of the logged training loss and accuracy, and
  the NaN guard: iterate over it for the step index, and `log` each step's metrics.

  Only every `log_every`-th step (and the last) is read back from the device, since each read
  waits for the step to finish.
  """

  def __init__(self, epoch: int, epochs: int, steps: int, log_every: int, show: bool = True,
               perplexity: bool = False):
    from tqdm import tqdm

    self.epoch, self.steps, self.log_every = epoch, steps, log_every
    self._perplexity = perplexity  # show exp(mean loss) rather than the accuracy
    self._sums = [0.0, 0.0, 0]
    self._bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{epochs}", unit="step",
                     dynamic_ncols=True, disable=not show)

  def __iter__(self):
    return iter(self._bar)

  def log(self, index: int, step: int, loss, accuracy=0.0):
    """Reads back and checks the loss of the epoch's `index`-th step (global `step`)."""
    if index % self.log_every and index != self.steps - 1:
      return
    loss, accuracy = float(loss), float(accuracy)
    if not math.isfinite(loss):
      raise NonFiniteLossError(f"Training loss is {loss} at epoch {self.epoch + 1}, step "
                               f"{step}: lower --config.learning_rate or check the data.")
    self._sums = [self._sums[0] + loss, self._sums[1] + accuracy, self._sums[2] + 1]
    if self._perplexity:
      self._bar.set_postfix(loss=f"{self.loss:.3f}", ppl=f"{perplexity(self.loss):.1f}")
    else:
      self._bar.set_postfix(loss=f"{self.loss:.3f}", acc=f"{self.accuracy:.3f}")

  @property
  def loss(self) -> float:
    return self._sums[0] / max(self._sums[2], 1)

  @property
  def accuracy(self) -> float:
    return self._sums[1] / max(self._sums[2], 1)
