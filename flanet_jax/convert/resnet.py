"""Key maps of ResNet backbones: torchvision (7x7 stem) and deep stem (official or CSAIL names).

Flax names are `conv1`, `bn1`, `layer3_5/conv2`, `layer1_0/downsample_{conv,bn}`; PyTorch's are
`conv1`, `bn1`, `layer3.5.conv2`, `layer1.0.downsample.{0,1}`. The deep stem is `conv1, bn1,
conv2, bn2, conv3, bn3` in Flax and in CSAIL checkpoints; the official FLANet code holds the
three convs and the first two BNs in one Sequential `conv1` and calls the last BN `bn1`.
"""

import numpy as np

from flanet_jax.convert.core import Arch
from flanet_jax.models.resnet import ResNet

_DOWNSAMPLE = {'downsample_conv': 'downsample.0', 'downsample_bn': 'downsample.1'}
_OFFICIAL_DEEP_STEM = {'conv1': 'conv1.0', 'bn1': 'conv1.1', 'conv2': 'conv1.3',
                       'bn2': 'conv1.4', 'conv3': 'conv1.6', 'bn3': 'bn1'}


def _module_name(path: tuple[str, ...], stem: dict[str, str]) -> str:
  """('layer3_5', 'conv2') -> 'layer3.5.conv2'; stem modules are renamed through `stem`."""
  if len(path) == 1:
    return stem.get(path[0], path[0])
  block, layer = path
  return f"{block.replace('_', '.')}.{_DOWNSAMPLE.get(layer, layer)}"


def torchvision_name(path: tuple[str, ...]) -> str:
  """torchvision names; also CSAIL's deep stem, whose names equal ours."""
  return _module_name(path, {})


def official_deep_stem_name(path: tuple[str, ...]) -> str:
  """The official FLANet code's names (`conv1.{0,1,3,4,6}`, `bn1`)."""
  return _module_name(path, _OFFICIAL_DEEP_STEM)


def backbone_arch(depth: int, deep_stem: bool) -> Arch:
  """An ImageNet ResNet without its classifier (`fc.*` is dropped)."""
  def build(state_dict: dict[str, np.ndarray]):
    del state_dict  # sizes are fixed by the depth
    return ResNet(depth, deep_stem, output_stride=32)

  if deep_stem:
    return Arch(f'resnet{depth}_deep', f'deep-stem ResNet-{depth} (official or CSAIL names)',
                build, {'official': official_deep_stem_name, 'csail': torchvision_name},
                ignored=('fc.',))
  return Arch(f'resnet{depth}', f'torchvision ResNet-{depth} (7x7 stem)', build,
              {'torchvision': torchvision_name}, ignored=('fc.',))
