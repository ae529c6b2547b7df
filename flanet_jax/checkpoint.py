"""Checkpoints on disk (Orbax): training runs, and standalone model variables.

Training runs: `workdir/checkpoints/<step>/{state,data}`, the train state and the data
iterator. Saves are asynchronous; a checkpoint appears only when complete, so an interrupted
save never replaces the last good one. The train state is restored with the shardings of the
current mesh, so a run can resume (or be evaluated) on a different number of devices.

Model variables: `{'params', 'batch_stats'}` in one directory, written by the weight converter
and read by `pretrained.init_from`.
"""

import logging
import os
import pathlib
from typing import Any, Mapping

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp

from flanet_jax import errors

# --- Training runs -----------------------------------------------------------------------------

def _one_replica_type_handlers():
  """Orbax's standard type handlers, except that one replica writes each jax.Array.

  Orbax's default (on CPU and TPU) splits the write of each replicated array over its
  replicas, which compiles a slice per array shape and device at a process's first save. The
  train state is replicated and small next to that cost, so one replica writes each array, as
  Orbax does on GPU. Restoring is unaffected."""
  handlers = [(ty, ocp.type_handlers.get_type_handler(ty))
              for ty in ocp.type_handlers.supported_types() if ty is not jax.Array]
  return ocp.type_handlers.create_type_handler_registry(
      *handlers, (jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=False)))


def manager(workdir: pathlib.Path, keep: int, read_only: bool = False) -> ocp.CheckpointManager:
  """The run's checkpoints: item `state` (the train state, a PyTree of arrays) and `data`."""
  # Orbax logs what a read-only manager turns off, and 'Given directory is read only', which
  # reads like a permission problem; here it only means that evaluation writes no checkpoint.
  notices = _MessageFilter(('CheckpointManagerOptions.read_only=True',
                            'Given directory is read only'))
  logging.getLogger('absl').addFilter(notices)
  try:
    return _manager(workdir, keep, read_only)
  finally:
    logging.getLogger('absl').removeFilter(notices)


def _manager(workdir: pathlib.Path, keep: int, read_only: bool) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=not read_only,
                                         read_only=read_only)
  state_handler = ocp.handlers.PyTreeCheckpointHandler(
      type_handler_registry=_one_replica_type_handlers())
  handlers = ocp.handlers.DefaultCheckpointHandlerRegistry()
  handlers.add('state', ocp.args.PyTreeSave, state_handler)
  handlers.add('state', ocp.args.PyTreeRestore, state_handler)
  return ocp.CheckpointManager((workdir / 'checkpoints').absolute(), options=options,
                               handler_registry=handlers)


class _MessageFilter(logging.Filter):
  """Drops log records whose message starts with one of `prefixes`."""

  def __init__(self, prefixes: tuple[str, ...]):
    super().__init__()
    self.prefixes = prefixes

  def filter(self, record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith(self.prefixes)


def save(mngr: ocp.CheckpointManager, step: int, state, data_iterator) -> None:
  mngr.save(step, args=ocp.args.Composite(state=ocp.args.PyTreeSave(state),
                                          data=grain.checkpoint.CheckpointSave(data_iterator)))


def abstract_like(tree, sharding):
  """ShapeDtypeStructs of `tree` placed with `sharding`: the restore target."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


def restore_state(mngr: ocp.CheckpointManager, step: int, target):
  """The train state at `step`, shaped and sharded like `target` (abstract or concrete)."""
  restore = ocp.args.PyTreeRestore(
      target, restore_args=ocp.checkpoint_utils.construct_restore_args(target))
  return mngr.restore(step, args=ocp.args.Composite(state=restore)).state


def restore_data_iterator(mngr: ocp.CheckpointManager, step: int, data_iterator) -> bool:
  """Sets `data_iterator` to its saved position; False if saved by another process count."""
  saved = mngr.directory / str(step) / 'data'
  expected = f'process_{jax.process_index()}-of-{jax.process_count()}.json'
  if not (saved / expected).exists():
    return False
  mngr.restore(step, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(data_iterator)))
  return True


# --- Model variables ({'params', 'batch_stats'}) as one standalone checkpoint -------------------
# Written by flanet-jax-convert (convert/cli.py), read by `pretrained.init_from`. Single process.

VARIABLE_COLLECTIONS = ('params', 'batch_stats')


def save_variables(path: str | os.PathLike, variables: Mapping[str, Any]) -> None:
  """Writes {'params': ..., 'batch_stats': ...} to the new directory `path` (never overwrites).

  Leaves are saved as host numpy arrays, so the checkpoint carries no device placement.
  """
  path = os.path.abspath(path)
  if os.path.exists(path):
    raise errors.UserFileExistsError(f'{path} already exists; refusing to overwrite it '
                                     '(choose another destination or delete it first)')
  unknown = sorted(set(variables) - set(VARIABLE_COLLECTIONS))
  if unknown or 'params' not in variables:
    raise ValueError(f'expected the collections {VARIABLE_COLLECTIONS} (params required), '
                     f'got {sorted(variables)}')
  tree = jax.tree.map(lambda a: np.asarray(jax.device_get(a)), dict(variables))
  with ocp.StandardCheckpointer() as checkpointer:  # leaving the block waits for the write
    checkpointer.save(path, tree)


def load_variables(path: str | os.PathLike) -> dict[str, Any]:
  """Reads a `save_variables` checkpoint as nested dicts of numpy arrays (no device placement)."""
  path = os.path.abspath(path)
  if not os.path.isdir(path):
    raise errors.UserFileNotFoundError(f'no variables checkpoint at {path}')
  with ocp.StandardCheckpointer() as checkpointer:
    metadata = checkpointer.metadata(path).item_metadata.tree
    # Abstract leaves without sharding make Orbax restore numpy arrays.
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), metadata)
    return checkpointer.restore(path, target)

# --- end of model variables ----------------------------------------------------------------------
