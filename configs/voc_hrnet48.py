"""FLANet-HRNetV2-W48 on PASCAL VOC 2012 (paper Table 5: 88.5 mIoU on the test server).

The recipe of configs/voc_r101.py with the HRNetV2-W48 backbone; see
configs/cityscapes_hrnet48.py for its ImageNet weights.
"""

from configs import backbones, voc_r101


def get_config():
  return backbones.use_backbone(voc_r101.get_config(), 'hrnet_w48')
