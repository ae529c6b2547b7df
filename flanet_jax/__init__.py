"""flanet_jax: FLANet (Fully Attentional Network for Semantic Segmentation) in JAX/Flax."""


def __getattr__(name):
  # `flanet_jax.Segmenter` imports JAX and the models only when used, so that importing a
  # submodule (e.g. the converter) stays light.
  if name == 'Segmenter':
    from flanet_jax.segmenter import Segmenter  # pylint: disable=import-outside-toplevel
    return Segmenter
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
