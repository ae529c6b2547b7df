"""The one error the converter raises for checkpoints that do not fit."""


class ConversionError(ValueError):
  """The checkpoint does not fit the architecture; the message lists every offending key."""
