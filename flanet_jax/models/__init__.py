"""Model construction from an ml_collections config."""

import dataclasses

import jax.numpy as jnp

from flanet_jax import errors, kernels
from flanet_jax.models.flanet import FLANet

# Config keys: FLANet's fields, with `kernels` (a name) in place of `ops` (what it selects).
_FIELDS = {f.name for f in dataclasses.fields(FLANet)} - {'parent', 'name', 'dtype', 'ops'}
_KEYS = _FIELDS | {'kernels'}


def build_model(model_config, dtype: str = 'float32') -> FLANet:
  """Builds FLANet from `config.model` (keys: the FLANet fields, e.g. backbone, attention, and
  `kernels`, the implementation of its operations: flanet_jax/kernels, default 'auto').

  `dtype` is the compute dtype ('float32' or 'bfloat16'); parameters stay float32.
  """
  kwargs = dict(model_config)
  unknown = sorted(set(kwargs) - _KEYS)
  if unknown:
    raise errors.UserValueError(f'Unknown model config keys {unknown}; valid keys: '
                                f'{sorted(_KEYS)}')
  ops = kernels.select(kwargs.pop('kernels', 'auto'))
  return FLANet(dtype=jnp.dtype(dtype), ops=ops, **kwargs)
