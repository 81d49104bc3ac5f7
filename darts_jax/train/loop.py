"""The run loop every trainer shares: resume, steps, NaN guard, checkpoints, SIGTERM, metrics.

A trainer supplies its state and what is its own (a step, the end of an epoch, what its
checkpoint record holds); `run` owns the protocol around them, in the order that makes a run
resumable bit for bit:

  1. open the workdir's checkpoints (`checkpoints.RunCheckpoints`: checks a resumed run's
     config, takes over SIGTERM and Ctrl-C), and let the first host write the run's own files;
  2. restore the newest readable checkpoint: the state, and the record of where the run stands
     (epoch, step within it, the running training sums, the trainer's host-side record);
  3. for each epoch from there: the steps (each logged to the progress bar and the NaN guard,
     a checkpoint every `config.checkpoint.every_steps` steps or when SIGTERM arrives), then
     the trainer's end of epoch (evaluation, outputs), the epoch's metrics, its checkpoint,
     its line on the terminal, and the stop if SIGTERM arrived.

Data order and per-step keys are functions of (seed, epoch, step), so the state and the
position are all a restarted run needs. Only the first host writes files (`MetricWriter`,
`RunCheckpoints` and `on_open` see to it).
"""

from __future__ import annotations

import time
from typing import Any, Callable, NamedTuple

from darts_jax.train import parallel
from darts_jax.train.checkpoints import RunCheckpoints
from darts_jax.train.metrics import EpochProgress, MetricWriter


class StepLog(NamedTuple):
  """What a step reports to the progress bar and the NaN guard (device scalars are fine)."""

  loss: Any
  accuracy: Any = 0.0
  checks: dict | None = None  # further scalars that must stay finite, by name


class EpochEnd(NamedTuple):
  """What a trainer's end of epoch returns.

  Attributes:
    state: the state to go on with (e.g. after a switch of optimiser).
    scalars: the epoch's metrics (the loop adds `epoch` and `epoch_seconds`).
    record: host-side values for the epoch's checkpoint record (histories, the best result).
    report: `report(scalars) -> str`, the epoch's line on the terminal.
  """

  state: Any
  scalars: dict
  record: dict
  report: Callable[[dict], str]


def run(config, workdir: str, state, *, steps_per_epoch: Callable[[int], int] | int,
        train_step: Callable, end_of_epoch: Callable, resume: Callable | None = None,
        record: Callable[[], dict] | None = None, begin_epoch: Callable | None = None,
        on_open: Callable[[], None] | None = None, best: bool = False,
        perplexity: bool = False, epochs: int | None = None):
  """Runs the epochs left of `config.epochs` (or `epochs`), resuming from `workdir`'s checkpoints.

  Args:
    config: the run's config; reads `epochs` (unless given), `log_every`, `progress_bar` and
      `checkpoint`.
    workdir: where the checkpoints, `config.json` and the metrics go.
    state: the initial state, placed as the step expects it; a checkpoint's replaces it.
    steps_per_epoch: the number of steps of an epoch, or `steps_per_epoch(epoch) -> int`.
    train_step: `train_step(state, epoch, index, step) -> (state, StepLog)` for the epoch's
      `index`-th step, `step` counting every step before it.
    end_of_epoch: `end_of_epoch(state, epoch, step, progress, ckpt) -> EpochEnd`, after the
      epoch's last step, `step` counting the steps done; `progress` is its
      `metrics.EpochProgress` (`loss`, `accuracy`, `started`, `start`), `ckpt` the
      `RunCheckpoints` (for `save_best`).
    resume: `resume(record, ckpt)`, called once before the first step with the checkpoint
      record the run continues from (`{"epoch": 0, "index": 0, "step": 0}` on a new run):
      position the data there and take back the host-side record.
    record: `record() -> dict`, the host-side record for a checkpoint within an epoch.
    begin_epoch: `begin_epoch(state, epoch, start) -> state` before an epoch's steps; `start`
      is the first step's index (not 0 when the epoch resumes).
    on_open: called on the first host once the checkpoints accepted the config, to write the
      files that describe the run (e.g. the genotype trained).
    best: also keep `checkpoints/best` (`ckpt.save_best`, `ckpt.restore_best`).
    perplexity: the progress bar shows exp(loss) instead of the accuracy.
    epochs: the run's number of epochs when the trainer derives it (DARTS-PT's tuning epochs
      follow from its schedule); default `config.epochs`.

  Returns:
    `(state, scalars)`: the final state and the last epoch's scalars (empty when the workdir
    held a finished run).

  Raises:
    checkpoints.Preempted: SIGTERM or Ctrl-C arrived; the checkpoint is saved (exit status
      143 or 130).
    NonFiniteLossError: a step's loss or a checked gradient norm was not finite.
  """
  steps_in = steps_per_epoch if callable(steps_per_epoch) else (lambda _: steps_per_epoch)
  scalars = {}  # stays empty when the workdir holds a finished run
  epochs = config.epochs if epochs is None else epochs
  with RunCheckpoints(workdir, config, best=best) as ckpt:
    if on_open is not None and parallel.is_primary():  # on several hosts, the first writes
      on_open()
    state, meta = ckpt.restore(state) or (state, {"epoch": 0, "index": 0, "step": 0})
    step = meta["step"]
    if meta["epoch"] >= epochs:
      print(f"the workdir holds a finished run ({meta['epoch']} epochs, {step} steps): "
            "nothing left to train", flush=True)
    elif step:
      print(f"resuming from the checkpoint at step {step} (epoch {meta['epoch'] + 1}, step "
            f"{meta['index']} of {steps_in(meta['epoch'])})", flush=True)
    if resume is not None:
      resume(meta, ckpt)
    writer = MetricWriter(workdir, resume_step=step)
    try:
      for epoch in range(meta["epoch"], epochs):
        progress = EpochProgress.for_epoch(config, epoch, steps_in(epoch), meta,
                                           perplexity=perplexity, epochs=epochs)
        if begin_epoch is not None:
          state = begin_epoch(state, epoch, progress.start)
        for index in progress:
          state, log = train_step(state, epoch, index, step)
          progress.log(index, step, log.loss, log.accuracy, log.checks)
          step += 1
          ckpt.step_done(step, progress, lambda: (state, record() if record else {}))
        progress.check()
        end = end_of_epoch(state, epoch, step, progress, ckpt)
        state = end.state
        scalars = {**end.scalars, "epoch_seconds": time.perf_counter() - progress.started}
        writer.write(step, {"epoch": epoch + 1, **scalars})
        ckpt.save(step, state, {"epoch": epoch + 1, "index": 0, **end.record})
        print(end.report(scalars), flush=True)
        ckpt.stop(step)
    finally:
      writer.close()
  return state, scalars
