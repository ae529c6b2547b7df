"""Orbax checkpoints of a training run: the train state and the data iterator, per step.

`workdir/checkpoints/<step>/{state,data}`. Saves are asynchronous; a checkpoint appears only
when complete, so an interrupted save never replaces the last good one. The train state is
restored with the shardings of the current mesh, so a run can resume (or be evaluated) on a
different number of devices.
"""

import pathlib

import grain
import jax
import orbax.checkpoint as ocp


def manager(workdir: pathlib.Path, keep: int, read_only: bool = False) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=not read_only,
                                         read_only=read_only)
  return ocp.CheckpointManager((workdir / 'checkpoints').absolute(), options=options)


def save(mngr: ocp.CheckpointManager, step: int, state, data_iterator) -> None:
  mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                          data=grain.checkpoint.CheckpointSave(data_iterator)))


def abstract_like(tree, sharding):
  """ShapeDtypeStructs of `tree` placed with `sharding`: the restore target."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


def restore_state(mngr: ocp.CheckpointManager, step: int, target):
  """The train state at `step`, shaped and sharded like `target` (abstract or concrete)."""
  restored = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
  return restored.state


def restore_data_iterator(mngr: ocp.CheckpointManager, step: int, data_iterator) -> bool:
  """Sets `data_iterator` to its saved position; False if saved by another process count."""
  saved = mngr.directory / str(step) / 'data'
  expected = f'process_{jax.process_index()}-of-{jax.process_count()}.json'
  if not (saved / expected).exists():
    return False
  mngr.restore(step, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(data_iterator)))
  return True
