"""Backbone choices of the experiment configs: model keys and the converted ImageNet weights.

Each backbone starts from ImageNet weights converted once with
  flanet-jax-convert SRC.pth weights/ARCH --arch ARCH
(README, "Converting PyTorch weights"). ResNet-50/101 use the deep (64-64-128) stem of the
original code's ImageNet models; ResNet-18 the torchvision 7x7 stem, whose ImageNet weights
are the standard ones.
"""

# model.backbone -> (model.deep_stem, --arch of the converter = folder under weights/)
IMAGENET_WEIGHTS = {
    'shufflenet_v2': (False, 'shufflenet_v2'),
    'resnet18': (False, 'resnet18'),
    'resnet50': (True, 'resnet50_deep'),
    'resnet101': (True, 'resnet101_deep'),
    'hrnet_w48': (False, 'hrnet_w48'),
}


def use_backbone(config, backbone: str):
  """Sets `model.backbone`, its stem and `init_from` to its converted ImageNet weights."""
  if backbone not in IMAGENET_WEIGHTS:
    raise ValueError(f'Unknown backbone {backbone!r}; choose one of {sorted(IMAGENET_WEIGHTS)}')
  deep_stem, arch = IMAGENET_WEIGHTS[backbone]
  config.model.backbone = backbone
  config.model.deep_stem = deep_stem
  config.init_from = f'weights/{arch}'
  return config
