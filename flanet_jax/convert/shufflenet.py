"""Key map of torchvision's ShuffleNetV2 x1.0 (`shufflenet_v2_x1_0`).

Our names follow torchvision's by the rule of models/shufflenet.py
(`stage3_0/branch2_3` <-> `stage3.0.branch2.3`, `conv5_1` <-> `conv5.1`); the ImageNet
classifier `fc.*` is dropped.
"""

import numpy as np

from flanet_jax.convert.core import Arch, indexed_module_name
from flanet_jax.models.shufflenet import ShuffleNetV2


def torchvision_name(path: tuple[str, ...]) -> str:
  return indexed_module_name(path)


def shufflenet_arch() -> Arch:
  def build(state_dict: dict[str, np.ndarray]):
    del state_dict  # x1.0 only; the output stride does not change the parameters
    return ShuffleNetV2(output_stride=32)

  return Arch('shufflenet_v2', 'torchvision ShuffleNetV2 x1.0 backbone', build,
              {'torchvision': torchvision_name}, ignored=('fc.',))
