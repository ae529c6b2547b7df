"""The one error the converter raises for checkpoints that do not fit."""

from flanet_jax.errors import UserValueError


class ConversionError(UserValueError):
  """The checkpoint does not fit the architecture; the message lists every offending key."""
