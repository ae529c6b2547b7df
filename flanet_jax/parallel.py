"""Data parallelism over all devices of all hosts: one mesh axis `data`.

The global batch is sharded along `data`, the train state replicated. Under `jax.jit`,
BatchNorm's mean over the batch axis then covers the *global* batch: XLA inserts the
cross-device reductions, which makes every BatchNorm a synchronised (cross-replica) one.
The mesh axis is `Auto`, so XLA's partitioner places these collectives.
"""

import os
from typing import Mapping

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from flanet_jax import errors

DATA_AXIS = 'data'


# What JAX's own cluster detection reads on SLURM and Open MPI (jax.distributed.initialize()
# without arguments), and the worker list of a TPU job on GKE.
_SLURM_VARIABLES = ('SLURM_JOB_ID', 'SLURM_STEP_NODELIST', 'SLURM_NTASKS', 'SLURM_PROCID',
                    'SLURM_LOCALID')
_OPEN_MPI_LAUNCHER = 'OMPI_MCA_orte_hnp_uri'  # set by mpirun / mpiexec
_TPU_WORKERS = ('TPU_PROCESS_ADDRESSES', 'TPU_WORKER_HOSTNAMES')


def cluster_in_environment(environ: Mapping[str, str]) -> str | None:
  """The multi-process job that `environ` shows (SLURM tasks of one srun, Open MPI ranks of
  one mpirun, the hosts of a GKE TPU job), or None (one process, or a SLURM batch script
  outside srun)."""
  if all(v in environ for v in _SLURM_VARIABLES) and int(environ['SLURM_NTASKS']) > 1:
    return 'SLURM'
  if _OPEN_MPI_LAUNCHER in environ and int(environ.get('OMPI_COMM_WORLD_SIZE', '1')) > 1:
    return 'Open MPI'
  workers = next((environ[v] for v in _TPU_WORKERS if environ.get(v)), '')
  if len(workers.split(',')) > 1:
    return 'TPU'
  return None


def distributed_arguments(dist_config, environ: Mapping[str, str]) -> dict | None:
  """The keyword arguments of `jax.distributed.initialize` for `config.distributed`, or None
  to run as a single process.

  An explicit `coordinator_address` (with num_processes, process_id) is used as given. Else
  `{}`, with which JAX finds the coordinator, process count and id itself, when `auto` is
  True, or when it is None and the environment shows a multi-process job.
  """
  if dist_config.coordinator_address:
    if dist_config.auto:
      raise errors.UserValueError(
          'distributed.auto=True and distributed.coordinator_address='
          f'{dist_config.coordinator_address!r} conflict: set one of them')
    return {'coordinator_address': dist_config.coordinator_address,
            'num_processes': dist_config.num_processes, 'process_id': dist_config.process_id}
  if dist_config.num_processes != 1 or dist_config.process_id != 0:
    raise errors.UserValueError(
        f'distributed.num_processes={dist_config.num_processes} and distributed.process_id='
        f'{dist_config.process_id} need distributed.coordinator_address (or distributed.auto)')
  if dist_config.auto or (dist_config.auto is None and cluster_in_environment(environ)):
    return {}
  return None


def initialize_distributed(dist_config, environ: Mapping[str, str] = os.environ) -> None:
  """Joins the multi-process job that `config.distributed` (or the environment) describes."""
  arguments = distributed_arguments(dist_config, environ)
  if arguments is not None:
    jax.distributed.initialize(**arguments)


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
