"""Which implementation of the models' operations to use: `config.model.kernels`.

  'xla'    the plain operations of models/ops.py everywhere, all differentiated by JAX (no
           custom gradient anywhere, so `jax.jvp` works through the model): the reference.
  'tuned'  the XLA:CPU implementations of kernels/cpu.py, on any platform.
  'auto'   'tuned' on CPU; elsewhere the plain operations with the FLA block's hand-written,
           map-recomputing backward pass (what GPUs and TPUs should run).
All three compute the same values and gradients to float rounding.
"""

import dataclasses

import jax

from flanet_jax import errors
from flanet_jax.kernels import cpu
from flanet_jax.models import ops

CHOICES = ('auto', 'xla', 'tuned')

# 'auto' off CPU: the plain operations, and the FLA block's backward pass that recomputes its
# C x C maps instead of storing B * (H + W) of them.
ACCELERATOR = dataclasses.replace(ops.PLAIN, fla_recomputes_maps=True)


def select(name: str, platform: str | None = None) -> ops.Ops:
  """The `Ops` of `model.kernels=name` on `platform` (default: JAX's default backend)."""
  if name not in CHOICES:
    raise errors.UserValueError(f'model.kernels={name!r}: choose one of {list(CHOICES)}')
  if name == 'xla':
    return ops.PLAIN
  if name == 'tuned' or (platform or jax.default_backend()) == 'cpu':
    return cpu.OPS
  return ACCELERATOR
