"""Where a run's numbers go: a JSON-lines file, TensorBoard scalars, and the terminal."""

from __future__ import annotations

import json
import math
import os
import time


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
