"""Which `jax.distributed.initialize` call `config.distributed` and the environment ask for."""

import pytest

from configs import default
from flanet_jax import errors, parallel

SLURM = {'SLURM_JOB_ID': '4242', 'SLURM_STEP_NODELIST': 'node[001-002]', 'SLURM_NTASKS': '8',
         'SLURM_PROCID': '3', 'SLURM_LOCALID': '1'}
OPEN_MPI = {'OMPI_MCA_orte_hnp_uri': '1531576320.0;tcp://10.96.0.1:34911',
            'OMPI_COMM_WORLD_SIZE': '2', 'OMPI_COMM_WORLD_RANK': '1'}
GKE_TPU = {'TPU_WORKER_HOSTNAMES': 'tpu-0,tpu-1,tpu-2,tpu-3', 'TPU_WORKER_ID': '2'}


def _distributed(**settings):
  config = default.get_config().distributed
  config.update(settings)
  return config


def test_single_process_by_default():
  assert parallel.distributed_arguments(_distributed(), {'HOME': '/root'}) is None


def test_explicit_coordinator_is_passed_as_given_whatever_the_environment():
  config = _distributed(coordinator_address='host0:1234', num_processes=4, process_id=2)
  expected = {'coordinator_address': 'host0:1234', 'num_processes': 4, 'process_id': 2}
  assert parallel.distributed_arguments(config, {}) == expected
  assert parallel.distributed_arguments(config, SLURM) == expected
  config.auto = False
  assert parallel.distributed_arguments(config, {}) == expected


@pytest.mark.parametrize('environ', [SLURM, OPEN_MPI, GKE_TPU], ids=['slurm', 'mpi', 'tpu'])
def test_a_multi_process_environment_lets_jax_find_the_coordinator(environ):
  assert parallel.distributed_arguments(_distributed(), environ) == {}
  assert parallel.distributed_arguments(_distributed(auto=False), environ) is None


@pytest.mark.parametrize('environ', [
    dict(SLURM, SLURM_NTASKS='1'),  # one task
    {k: v for k, v in SLURM.items() if k != 'SLURM_STEP_NODELIST'},  # batch script, no srun
    dict(OPEN_MPI, OMPI_COMM_WORLD_SIZE='1'),
    {k: v for k, v in OPEN_MPI.items() if k != 'OMPI_MCA_orte_hnp_uri'},  # not from mpirun
    dict(GKE_TPU, TPU_WORKER_HOSTNAMES='tpu-0'),  # a single host
], ids=['slurm-1-task', 'slurm-batch', 'mpi-1-rank', 'mpi-no-launcher', 'tpu-1-host'])
def test_a_single_process_environment_runs_alone(environ):
  assert parallel.cluster_in_environment(environ) is None
  assert parallel.distributed_arguments(_distributed(), environ) is None


def test_auto_asks_jax_to_find_the_coordinator_anywhere():
  """Cloud TPU pod slices: JAX asks the TPU metadata server, which no variable shows."""
  assert parallel.distributed_arguments(_distributed(auto=True), {}) == {}


def test_conflicting_settings_are_user_errors():
  with pytest.raises(errors.UserError, match='auto=True.*coordinator_address=.host0:1234'):
    parallel.distributed_arguments(_distributed(auto=True, coordinator_address='host0:1234'), {})
  with pytest.raises(errors.UserError, match='num_processes=4 .*need distributed.coordinator'):
    parallel.distributed_arguments(_distributed(num_processes=4), SLURM)


def test_initialize_distributed_calls_jax_with_those_arguments(monkeypatch):
  calls = []
  monkeypatch.setattr(parallel.jax.distributed, 'initialize', lambda **kw: calls.append(kw))
  parallel.initialize_distributed(_distributed(), {})
  parallel.initialize_distributed(_distributed(), OPEN_MPI)
  parallel.initialize_distributed(_distributed(coordinator_address='h:1', num_processes=2), {})
  assert calls == [{}, {'coordinator_address': 'h:1', 'num_processes': 2, 'process_id': 0}]
