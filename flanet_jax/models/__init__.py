"""Model construction from an ml_collections config."""

import dataclasses

import jax.numpy as jnp

from flanet_jax import errors
from flanet_jax.models.flanet import FLANet

_FIELDS = {f.name for f in dataclasses.fields(FLANet)} - {'parent', 'name', 'dtype'}


def build_model(model_config, dtype: str = 'float32') -> FLANet:
  """Builds FLANet from `config.model` (keys: the FLANet fields, e.g. backbone, attention).

  `dtype` is the compute dtype ('float32' or 'bfloat16'); parameters stay float32.
  """
  kwargs = dict(model_config)
  unknown = sorted(set(kwargs) - _FIELDS)
  if unknown:
    raise errors.UserValueError(f'Unknown model config keys {unknown}; valid keys: '
                                f'{sorted(_FIELDS)}')
  return FLANet(dtype=jnp.dtype(dtype), **kwargs)
