"""Paper Table 3: FLA against the non-local blocks, FLANet-ResNet-50, Cityscapes val.

  python -m flanet_jax.main --config configs/table3.py:BLOCK --workdir DIR
BLOCK: fla, channel_nl, spatial_nl, dual_nl, cs_nl, rcca, ema (flanet_jax/models/
nonlocal_blocks.py) in place of the FLA block, or none (no block). The blocks' added GFLOPs
and memory are measured by benchmarks/bench_attention.py (BENCHMARKS.md).
Everything else is the recipe of configs/cityscapes_r101.py with a deep-stem ResNet-50.
"""

from configs import backbones, cityscapes_r101

ARGS = ('fla', 'channel_nl', 'spatial_nl', 'dual_nl', 'cs_nl', 'rcca', 'ema', 'none')


def get_config(arg=None):
  if arg not in ARGS:
    raise ValueError(f'configs/table3.py needs :BLOCK, one of {list(ARGS)}; got {arg!r}')
  config = backbones.use_backbone(cityscapes_r101.get_config(), 'resnet50')
  config.model.attention = arg
  return config
