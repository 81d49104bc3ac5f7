"""Data parallelism: the jitted single-device step, run over a mesh of devices.

`jax.jit` with `NamedSharding`, never `pmap`. The step is written for one device and the
whole batch. Its state is replicated and its batches are split along their first axis over
the mesh's "data" axis; XLA partitions the program and inserts the all-reduces. Batch-norm
statistics and losses are means over the global batch, so every device computes what one
device holding the whole batch would, up to the order of floating-point sums.

Several hosts (not wired into the trainers yet): after `jax.distributed.initialize()`, every
host builds the same global batch order and `shard_batch` keeps its own rows of each batch.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

DATA = "data"


def data_mesh() -> jax.sharding.Mesh:
  """A 1-D mesh over every device of every host, its axis named "data"."""
  # Auto axes: XLA propagates the batch sharding through the step (JAX's default for
  # make_mesh is now Explicit, sharding-in-types, which the scans' carries do not accept).
  return jax.make_mesh((jax.device_count(),), (DATA,),
                       axis_types=(jax.sharding.AxisType.Auto,))


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec(DATA))


def replicate(tree, mesh):
  """Places every array of `tree` on every device of `mesh`."""
  return jax.device_put(tree, replicated(mesh))


def host_rows(global_batch: int) -> slice:
  """This host's contiguous rows of a global batch."""
  per_host = global_batch // jax.process_count()
  return slice(jax.process_index() * per_host, (jax.process_index() + 1) * per_host)


def shard_batch(batch, mesh):
  """A global batch (host numpy arrays, the same on every host) as arrays split along their
  first axis over the mesh; each host contributes only its own rows."""
  sharding = batch_sharded(mesh)

  def put(x):
    x = np.asarray(x)
    return jax.make_array_from_process_local_data(sharding, x[host_rows(len(x))], x.shape)

  return jax.tree.map(put, batch)
