"""FLANet-HRNetV2-W48 on ADE20K (paper Table 4: 46.99 mIoU on val).

The recipe of configs/ade20k_r101.py with the HRNetV2-W48 backbone; see
configs/cityscapes_hrnet48.py for its ImageNet weights.
"""

from configs import ade20k_r101, backbones


def get_config():
  return backbones.use_backbone(ade20k_r101.get_config(), 'hrnet_w48')
