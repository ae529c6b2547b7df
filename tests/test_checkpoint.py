"""Training-run checkpoints: the replicated train state saves without compiling anything and
restores exactly, with the data iterator's position."""

import logging
import subprocess
import sys

import grain
import jax
import numpy as np

from flanet_jax import checkpoint, parallel
from tests import support


def test_replicated_state_saves_without_compiling_and_restores_exactly(tmp_path, caplog):
  mesh = parallel.make_mesh()
  rng = np.random.default_rng(0)
  state = {'kernel': rng.normal(size=(3, 3, 16, 8)), 'scale': rng.normal(size=(64,)),
           'step': np.int32(7)}
  state = jax.device_put(state, parallel.replicated(mesh))  # on all 8 devices
  iterator = iter(grain.MapDataset.range(10).to_iter_dataset())
  next(iterator), next(iterator)
  mngr = checkpoint.manager(tmp_path, keep=1)
  with jax.log_compiles(), caplog.at_level(logging.WARNING, logger='jax'):
    checkpoint.save(mngr, 1, state, iterator)
    mngr.wait_until_finished()
  # Orbax's replica-parallel writes would compile a slice per array and device.
  assert not [r for r in caplog.records if 'Compiling' in r.getMessage()]

  target = checkpoint.abstract_like(state, parallel.replicated(mesh))
  restored = checkpoint.restore_state(mngr, 1, target)
  for key, value in state.items():
    assert restored[key].sharding == parallel.replicated(mesh)
    np.testing.assert_array_equal(restored[key], value)
  fresh = iter(grain.MapDataset.range(10).to_iter_dataset())
  assert checkpoint.restore_data_iterator(mngr, 1, fresh) and next(fresh) == 2


# Run in a fresh process: the state before and after the first import of flanet_jax.checkpoint.
_IMPORT_SIDE_EFFECTS = """
import logging
import jax
import orbax.checkpoint as ocp

def snapshot():
  loggers = {name: logging.getLogger(name).level for name in ('', 'absl', 'jax', 'orbax')}
  return ocp.type_handlers.get_type_handler(jax.Array), loggers

before = snapshot()
import flanet_jax.checkpoint
assert snapshot() == before, (before, snapshot())
"""


def test_import_leaves_orbax_registry_and_loggers_alone():
  """The one-replica array handler lives in the manager's own registry, not Orbax's global."""
  subprocess.run([sys.executable, '-c', _IMPORT_SIDE_EFFECTS], cwd=support.REPO,
                 capture_output=True, text=True, timeout=120, check=True)
