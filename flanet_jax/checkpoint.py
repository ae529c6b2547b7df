"""Checkpoints on disk (Orbax)."""

import os
from typing import Any, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp

# --- Model variables ({'params', 'batch_stats'}) as one standalone checkpoint -------------------
# Written by scripts/convert_torch_weights.py, read by `pretrained.init_from`. Single process.

VARIABLE_COLLECTIONS = ('params', 'batch_stats')


def save_variables(path: str | os.PathLike, variables: Mapping[str, Any]) -> None:
  """Writes {'params': ..., 'batch_stats': ...} to the new directory `path` (never overwrites).

  Leaves are saved as host numpy arrays, so the checkpoint carries no device placement.
  """
  path = os.path.abspath(path)
  if os.path.exists(path):
    raise FileExistsError(f'{path} already exists; refusing to overwrite it '
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
    raise FileNotFoundError(f'no variables checkpoint at {path}')
  with ocp.StandardCheckpointer() as checkpointer:
    metadata = checkpointer.metadata(path).item_metadata.tree
    # Abstract leaves without sharding make Orbax restore numpy arrays.
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), metadata)
    return checkpointer.restore(path, target)

# --- end of model variables ----------------------------------------------------------------------
