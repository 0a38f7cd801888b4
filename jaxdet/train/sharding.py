"""Device mesh and shardings: data parallelism over one ``data`` axis of all devices.

Parameters and optimizer state are replicated; batches are split on their leading axis. The
step is one ``jax.jit`` over global arrays, so reductions in the loss (positives, batch-norm
statistics) are global across the mesh, exactly as on one device.
"""
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(devices=None):
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh):
  return NamedSharding(mesh, P())


def batch_sharded(mesh):
  return NamedSharding(mesh, P(DATA_AXIS))


def host_rows(global_size):
  """The rows of a global batch of ``global_size`` this host holds: hosts hold equal,
  consecutive blocks in process order (as ``jaxdet.data.pipeline`` reads them)."""
  local = global_size // jax.process_count()
  return slice(jax.process_index() * local, (jax.process_index() + 1) * local)


def global_batch(local_batch, mesh):
  """This host's part of a batch (numpy / tf tensors) as global arrays sharded on ``data``."""
  sharding = batch_sharded(mesh)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch)


def local_rows(global_array):
  """This host's rows of a batch-sharded global array, in order, as numpy (they are the rows of
  the local batch it contributed through ``global_batch``)."""
  blocks = {}
  for shard in global_array.addressable_shards:  # a block held by several devices counts once
    rows = shard.index[0]
    blocks.setdefault((rows.start or 0, rows.stop), shard.data)
  return np.concatenate([np.asarray(blocks[key]) for key in sorted(blocks)])
