"""Paper Table 2: the FLA block on four backbones, Cityscapes val, single scale.

  python -m flanet_jax.main --config configs/table2.py:BACKBONE-ATTENTION --workdir DIR
BACKBONE: shufflenet_v2, resnet18, resnet50, resnet101 (ImageNet weights: configs/backbones.py);
ATTENTION: fla (FLANet) or none (the same head without the block: the baseline).
Everything else is the recipe of configs/cityscapes_r101.py (= table2.py:resnet101-fla).
"""

from configs import backbones, cityscapes_r101

BACKBONES = ('shufflenet_v2', 'resnet18', 'resnet50', 'resnet101')
ATTENTIONS = ('none', 'fla')
ARGS = tuple(f'{b}-{a}' for b in BACKBONES for a in ATTENTIONS)


def get_config(arg=None):
  if arg not in ARGS:
    raise ValueError(f'configs/table2.py needs :BACKBONE-ATTENTION, one of {list(ARGS)}; '
                     f'got {arg!r}')
  backbone, attention = arg.split('-')
  config = backbones.use_backbone(cityscapes_r101.get_config(), backbone)
  config.model.attention = attention
  return config
