"""Data parallelism over all devices of all hosts: one mesh axis `data`.

The global batch is sharded along `data`, the train state replicated. Under `jax.jit`,
BatchNorm's mean over the batch axis then covers the *global* batch: XLA inserts the
cross-device reductions, which makes every BatchNorm a synchronised (cross-replica) one.
The mesh axis is `Auto`, so XLA's partitioner places these collectives.
"""

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from flanet_jax import errors

DATA_AXIS = 'data'


def initialize_distributed(dist_config) -> None:
  """Joins a multi-process job when `distributed.coordinator_address` is set."""
  if dist_config.coordinator_address:
    jax.distributed.initialize(coordinator_address=dist_config.coordinator_address,
                               num_processes=dist_config.num_processes,
                               process_id=dist_config.process_id)


def make_mesh(devices=None) -> jax.sharding.Mesh:
  """A 1-D `data` mesh over `devices` (default: every device of every process)."""
  devices = jax.devices() if devices is None else devices
  return jax.make_mesh((len(devices),), (DATA_AXIS,), devices=devices,
                       axis_types=(jax.sharding.AxisType.Auto,))


def batch_sharding(mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def check_batch_size(name: str, global_batch: int) -> None:
  if global_batch % jax.device_count():
    raise errors.UserValueError(f'{name}={global_batch} must be divisible by the '
                                f'{jax.device_count()} devices')


def to_global(host_batch: dict, mesh) -> dict:
  """Host-local NumPy batch -> global jax.Arrays sharded on `data` (each host its slice)."""
  sharding = batch_sharding(mesh)
  return {key: jax.make_array_from_process_local_data(sharding, np.asarray(value))
          for key, value in host_batch.items()}
