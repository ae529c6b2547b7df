"""Reading PyTorch checkpoints into a clean {key: float32 numpy array} state_dict.

torch is imported only inside `load_torch_state_dict`, so flanet_jax works without it; the
converter needs the `convert` extra (`pip install -e .[convert]`).
"""

import os
from typing import Any, Mapping

import numpy as np

from flanet_jax import errors
from flanet_jax.convert.errors import ConversionError

# Training checkpoints wrap the weights; these keys are unwrapped, outermost first.
_WRAPPERS = ('state_dict', 'model')
_DATA_PARALLEL_PREFIX = 'module.'


def load_torch_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """torch.load (CPU, weights only) and `clean_state_dict`."""
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise errors.UserError('reading PyTorch checkpoints needs torch: pip install -e ".[convert]"'
                           ) from e
  if not os.path.isfile(path):
    raise errors.UserFileNotFoundError(f'no checkpoint file {os.fspath(path)!r}')
  try:
    obj = torch.load(path, map_location='cpu', weights_only=True)
  except Exception as e:  # pickle errors of many kinds; say which file and why
    raise ConversionError(f'cannot read {os.fspath(path)!r} as a PyTorch weights file: {e}') from e
  return clean_state_dict(obj)


def _to_numpy(value) -> np.ndarray:
  """Tensor or array -> numpy; floating point (fp16, bf16, fp64) becomes float32."""
  if hasattr(value, 'detach'):  # a torch.Tensor (bf16 has no numpy dtype: cast in torch)
    value = value.detach().cpu()
    value = value.float().numpy() if value.is_floating_point() else value.numpy()
  value = np.asarray(value)
  is_float = value.dtype.kind == 'f' or 'float' in value.dtype.name  # incl. ml_dtypes bfloat16
  return value.astype(np.float32) if is_float else value


def clean_state_dict(obj: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """Unwraps {'state_dict'|'model': ...}, strips 'module.', drops num_batches_tracked."""
  while isinstance(obj, Mapping) and any(isinstance(obj.get(w), Mapping) for w in _WRAPPERS):
    obj = next(obj[w] for w in _WRAPPERS if isinstance(obj.get(w), Mapping))
  if not isinstance(obj, Mapping):
    raise ConversionError(f'expected a state_dict (a mapping of names to tensors), '
                          f'got {type(obj).__name__}')
  state_dict, not_arrays = {}, []
  for key, value in obj.items():
    while key.startswith(_DATA_PARALLEL_PREFIX):
      key = key[len(_DATA_PARALLEL_PREFIX):]
    if key.endswith('num_batches_tracked'):
      continue
    if not hasattr(value, 'shape'):
      not_arrays.append(f'{key} ({type(value).__name__})')
    elif key in state_dict:
      raise ConversionError(f'key {key!r} appears twice once "module." prefixes are stripped')
    else:
      state_dict[key] = _to_numpy(value)
  if not_arrays:
    raise ConversionError('state_dict values that are not tensors: ' + ', '.join(not_arrays))
  return state_dict
