"""Key map of a whole FLANet checkpoint in the layout of the authors' released model.

  Flax                                   official PyTorch
  backbone/...                           backbone.... (deep stem, official names)
  head_conv1/{conv,bn}, head_conv2/...   conv.{0,1}, conv.{3,4}
  attention/row_prior, col_prior         fully.conv1, fully.conv2   (Linear)
  attention/fuse/{conv,bn}, gamma        fully.conv.{0,1}, fully.gamma
  out_main, out_aux1, out_aux2           conv_out1 (main), conv_out2 (layer2), conv_out3 (layer3)
    conv_bn/{conv,bn}, classifier          .conv.1, .conv.2, .conv.5
"""

import numpy as np

from flanet_jax.convert.core import Arch
from flanet_jax.convert.resnet import official_deep_stem_name
from flanet_jax.models.flanet import FLANet

_MODULES = {
    ('head_conv1', 'conv'): 'conv.0', ('head_conv1', 'bn'): 'conv.1',
    ('head_conv2', 'conv'): 'conv.3', ('head_conv2', 'bn'): 'conv.4',
    ('attention',): 'fully',
    ('attention', 'row_prior'): 'fully.conv1', ('attention', 'col_prior'): 'fully.conv2',
    ('attention', 'fuse', 'conv'): 'fully.conv.0', ('attention', 'fuse', 'bn'): 'fully.conv.1',
}
_OUTPUTS = {'out_main': 'conv_out1', 'out_aux1': 'conv_out2', 'out_aux2': 'conv_out3'}
_OUTPUT_LAYERS = {('conv_bn', 'conv'): 'conv.1', ('conv_bn', 'bn'): 'conv.2',
                  ('classifier',): 'conv.5'}


def official_name(path: tuple[str, ...]) -> str:
  if path[0] == 'backbone':
    return 'backbone.' + official_deep_stem_name(path[1:])
  if path[0] in _OUTPUTS:
    return f'{_OUTPUTS[path[0]]}.{_OUTPUT_LAYERS[path[1:]]}'
  return _MODULES[path]


def _num_classes(state_dict: dict[str, np.ndarray]) -> int:
  """From any classifier bias; 1 when all are absent (conversion then reports them missing)."""
  for output in _OUTPUTS.values():
    bias = state_dict.get(f'{output}.conv.5.bias')
    if bias is not None and bias.ndim == 1:
      return bias.shape[0]
  return 1


def flanet_arch(depth: int) -> Arch:
  def build(state_dict: dict[str, np.ndarray]):
    return FLANet(_num_classes(state_dict), backbone=f'resnet{depth}', deep_stem=True)

  return Arch(f'flanet_resnet{depth}', f'whole FLANet-ResNet{depth}, official key layout',
              build, {'official': official_name})
