"""FLANet-HRNetV2-W48 on Cityscapes (paper Table 1: 83.6 mIoU on the test server).

The recipe of configs/cityscapes_r101.py with the HRNetV2-W48 backbone (ImageNet weights:
  flanet-jax-convert hrnetv2_w48_imagenet_pretrained.pth \
      weights/hrnet_w48 --arch hrnet_w48).
The head wiring on HRNet is ours (the authors released no HRNet code): see
flanet_jax/models/flanet.py. Test server: as in configs/cityscapes_r101.py.
"""

from configs import backbones, cityscapes_r101


def get_config():
  return backbones.use_backbone(cityscapes_r101.get_config(), 'hrnet_w48')
