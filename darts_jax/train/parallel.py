"""Data parallelism: the jitted single-device step, run over a mesh of devices and hosts.

`jax.jit` with `NamedSharding`, never `pmap`. A step is written for one device and the whole
batch. Its weights, alphas and optimiser states are replicated and its batches are split
along their batch axis over the mesh's "data" axis; XLA partitions the program and inserts
the all-reduces. Batch-norm statistics and losses are means over the global batch, so every
device computes what one device holding the whole batch would, up to the order of
floating-point sums (tests/test_parallel.py).

Several hosts: `initialize` (main.py's `--distributed`) joins this process to the others
through `jax.distributed`; the mesh then spans every device of every host. Every host builds
the same global batch order and feeds only its own rows of each batch (`shard_batch`), or
reads only its own rows in the first place (the ImageNet pipeline, `local=True`). Only the
first host writes files; Orbax coordinates the checkpoint writes of all of them.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

DATA = "data"


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None):
  """`jax.distributed.initialize`: call once per host, before anything else uses JAX.

  With no arguments JAX finds its peers on Cloud TPU pod slices, under SLURM and Open MPI;
  elsewhere (several GPU machines by hand) pass the first host's `ip:port` and the counts.
  """
  jax.distributed.initialize(coordinator_address, num_processes, process_id)


def is_primary() -> bool:
  """Whether this process writes the run's files (the first host)."""
  return jax.process_index() == 0


def sync(name: str):
  """Waits until every host reaches this point (a no-op on one host)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(name)


def data_mesh() -> jax.sharding.Mesh:
  """A 1-D mesh over every device of every host, its axis named "data"."""
  # Auto axes: XLA propagates the batch sharding through the step (JAX's default for
  # make_mesh is now Explicit, sharding-in-types, which the scans' carries do not accept).
  return jax.make_mesh((jax.device_count(),), (DATA,),
                       axis_types=(jax.sharding.AxisType.Auto,))


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh, axis: int = 0) -> NamedSharding:
  """Split along `axis` over the devices."""
  return NamedSharding(mesh, PartitionSpec(*[None] * axis, DATA))


def batch_sharding(mesh, size: int, axis: int = 0) -> NamedSharding:
  """Split along `axis` when its `size` divides over the devices, else replicated: the
  recurrent evaluations run 10 or 1 streams (the official batches), each device all of them."""
  return batch_sharded(mesh, axis) if size % mesh.size == 0 else replicated(mesh)


def replicate(tree, mesh):
  """Places every array of `tree` on every device of `mesh`."""
  return jax.device_put(tree, replicated(mesh))


def host_rows(size: int) -> slice:
  """This host's contiguous rows of a batch axis of `size` (all of it on one host)."""
  per_host = size // jax.process_count()
  return slice(jax.process_index() * per_host, (jax.process_index() + 1) * per_host)


def shard_batch(batch, mesh, *, axis: int = 0, local: bool = False):
  """Host arrays as global arrays split along `axis` over the mesh.

  Args:
    batch: a pytree of host arrays, all with the same size along `axis`; arrays without
      that axis are replicated.
    mesh: the `data_mesh()`.
    axis: the batch axis (1 for the recurrent models' time-major windows).
    local: False: `batch` is the global batch, the same on every host, and each host passes
      on only its own rows. True: `batch` holds this host's rows only (its size along `axis`
      times the number of hosts is the global batch).
  """
  hosts = jax.process_count()

  def put(x):
    x = np.asarray(x)
    if x.ndim <= axis:  # no batch axis (a window's time mask): the same on every device
      return jax.make_array_from_process_local_data(replicated(mesh), x, x.shape)
    shape = list(x.shape)
    if local:
      shape[axis] *= hosts
    sharding = batch_sharding(mesh, shape[axis], axis)
    if local and sharding.is_fully_replicated and hosts > 1:
      raise ValueError(f"a host-local batch of {x.shape[axis]} rows cannot be replicated")
    if not (local or sharding.is_fully_replicated):
      x = x[(slice(None),) * axis + (host_rows(shape[axis]),)]
    return jax.make_array_from_process_local_data(sharding, x, tuple(shape))

  return jax.tree.map(put, batch)
