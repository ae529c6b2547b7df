"""Key maps of HRNetV2 backbones: official HRNet ImageNet checkpoints and timm's `hrnet_w*`.

Both use the names of HRNet-Image-Classification's `cls_hrnet.py`. Our names follow them by the
rule of models/hrnet.py (`stage3_2/branches_1_3/conv1` <-> `stage3.2.branches.1.3.conv1`), plus
the Bottleneck shortcut shared with resnet.py (`downsample_{conv,bn}` <-> `downsample.{0,1}`).
The ImageNet classification head is not part of the segmentation backbone and is dropped.
"""

import numpy as np

from flanet_jax.convert.core import Arch, indexed_module_name
from flanet_jax.models.hrnet import CONFIGS, HRNet

_RENAMES = {'downsample_conv': 'downsample_0', 'downsample_bn': 'downsample_1'}
# cls_hrnet.py's (and timm's) classification head on top of stage4.
CLASSIFIER_PREFIXES = ('incre_modules.', 'downsamp_modules.', 'final_layer.', 'classifier.')
_TITLES = {'hrnet_w18_small': 'HRNet-W18-Small-v1', 'hrnet_w18': 'HRNetV2-W18',
           'hrnet_w32': 'HRNetV2-W32', 'hrnet_w48': 'HRNetV2-W48'}


def official_name(path: tuple[str, ...]) -> str:
  """('layer1_0', 'downsample_bn') -> 'layer1.0.downsample.1'; official and timm alike."""
  return indexed_module_name(path, _RENAMES)


def hrnet_arch(name: str) -> Arch:
  """An ImageNet HRNet (official or timm `name`) without its classification head."""
  def build(state_dict: dict[str, np.ndarray]):
    del state_dict  # sizes are fixed by the name
    return HRNet(**CONFIGS[name])

  return Arch(name, f'{_TITLES[name]} backbone (official HRNet ImageNet or timm {name} names)',
              build, {'official': official_name}, ignored=CLASSIFIER_PREFIXES)
