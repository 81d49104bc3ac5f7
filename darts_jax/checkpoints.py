"""Orbax checkpoints of a training run: the last epoch's and the best one's."""

from __future__ import annotations

import os


class BestAndLast:
  """`<directory>/last/<epoch>` (every epoch) and `<directory>/best/<epoch>` (when the
  validation figure improves), one of each kept; writes are asynchronous."""

  def __init__(self, directory: str):
    import orbax.checkpoint as ocp

    self._ocp = ocp
    options = ocp.CheckpointManagerOptions(max_to_keep=1)
    directory = os.path.abspath(directory)
    self.last = ocp.CheckpointManager(os.path.join(directory, "last"), options=options)
    self.best = ocp.CheckpointManager(os.path.join(directory, "best"), options=options)

  def save(self, epoch: int, last, best=None):
    """Saves the pytree `last`, and `best` when it is given (the epoch improved)."""
    self.last.save(epoch, args=self._ocp.args.StandardSave(last))
    if best is not None:
      self.best.save(epoch, args=self._ocp.args.StandardSave(best))

  def close(self):
    for manager in (self.last, self.best):
      manager.wait_until_finished()
      manager.close()
