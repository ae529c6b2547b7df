"""FLANet: a backbone, a two-conv head, an attention block and three output modules.

  c2, c3, c4 = backbone(image)               strides 8 (dilated); c4 is the last stage
  feats      = attention(conv3x3-BN-ReLU x2 (c4 -> 512))
  main       = OutputModule(512)(concat[c4, feats])
  aux1, aux2 = OutputModule(64)(c2), OutputModule(64)(c3)
each output bilinearly resized (align_corners=True) to the input size.
`attention='none'` keeps the head and drops the block: the Table 2 baseline; the other names
are FLA and the non-local blocks of Table 3 (nonlocal_blocks.py).

Backbones: dilated ResNet-18/50/101 and ShuffleNetV2 (stride 8; c4 = layer4 / conv5) and
HRNetV2 (c2, c3, c4 = the stage 2, 3, 4 representations at stride 4; c4 has 15W channels, 720
for W48). The authors released no HRNet head; ours is the same head on c4: the two 3x3 convs
reduce 720 -> 512 and the block attends at stride 4. The output modules' nearest x2 upsampling
exists to bring stride-8 features to stride 4 before their 3x3 conv; HRNet features are already
there, so by default the HRNet output modules skip it (`output_upsample`, default per backbone).
At 768x768, upsampling would make the W48 main module's 3x3 conv (1232 -> 512) cost 1.67
TFLOPs at stride 2; without it, 0.42 (the ResNet-101 model's, 2560 -> 512 at stride 4: 0.87).
"""

import functools
from typing import Callable, Mapping

import flax.linen as nn
import jax.numpy as jnp

from flanet_jax import errors
from flanet_jax.models.fla import FullyAttentionalBlock
from flanet_jax.models.hrnet import CONFIGS as HRNET_CONFIGS, HRNet
from flanet_jax.models.layers import Conv, ConvBN, Dtype, resize_bilinear
from flanet_jax.models.nonlocal_blocks import NONLOCAL_BLOCKS
from flanet_jax.models.ops import PLAIN, Ops
from flanet_jax.models.resnet import ResNet
from flanet_jax.models.shufflenet import ShuffleNetV2

# model.attention name -> block class with the interface `Block(features, dtype)(x, train)`.
ATTENTION_BLOCKS: Mapping[str, Callable[..., nn.Module] | None] = {
    'fla': FullyAttentionalBlock,
    'none': None,
    **NONLOCAL_BLOCKS,
}

def _fuse_passes_through(next_fun, args, kwargs, context):
  if (isinstance(context.module, ConvBN) and context.module.name.startswith('fuse') and
      context.method_name == '__call__'):
    return args[0]
  return next_fun(*args, **kwargs)


def attention_only():
  """A context in which every attention block's 3x3 conv-BN-ReLU `fuse` passes its input
  through: the attention module alone, whose cost the paper's Table 3 counts."""
  return nn.intercept_methods(_fuse_passes_through)


RESNET_DEPTHS = {'resnet18': 18, 'resnet50': 50, 'resnet101': 101}
BACKBONES = sorted([*RESNET_DEPTHS, *HRNET_CONFIGS, 'shufflenet_v2'])


class OutputModule(nn.Module):
  """Official `FLANetOutput`: nearest x2, 3x3 conv-BN-ReLU, channel dropout, 1x1 classifier."""
  mid_features: int
  num_classes: int
  dropout_rate: float = 0.1
  upsample: bool = True
  dtype: Dtype = jnp.float32
  ops: Ops = PLAIN

  @nn.compact
  def __call__(self, x, train: bool):
    # The x2 upsampling is folded into the conv (ops.conv3x3_of_upsampled_2x): same values,
    # 2.25x fewer FLOPs than convolving the upsampled features.
    x = ConvBN(self.mid_features, 3, upsample_2x=self.upsample, dtype=self.dtype, ops=self.ops,
               name='conv_bn')(x, train)
    # Dropout2d: whole channels are dropped, so the mask broadcasts over H and W.
    x = nn.Dropout(self.dropout_rate, broadcast_dims=(1, 2), deterministic=not train)(x)
    return Conv(self.num_classes, 1, use_bias=True, dtype=self.dtype, ops=self.ops,
                name='classifier')(x)


def _require_choice(key: str, value, choices) -> None:
  if value not in choices:
    raise errors.UserValueError(f'model.{key}={value!r}: choose one of {sorted(choices)}')


def build_backbone(name: str, deep_stem: bool, output_stride: int, dtype: Dtype,
                   remat: bool = False, ops: Ops = PLAIN) -> nn.Module:
  """`deep_stem` applies to ResNets, `output_stride` to ResNets and ShuffleNetV2; HRNet's
  features are always at stride 4. `remat` rematerialises every residual block (all three)."""
  _require_choice('backbone', name, BACKBONES)
  if name in RESNET_DEPTHS:
    return ResNet(RESNET_DEPTHS[name], deep_stem, output_stride, dtype, remat, ops,
                  name='backbone')
  if name in HRNET_CONFIGS:
    return HRNet(**HRNET_CONFIGS[name], dtype=dtype, remat=remat, ops=ops, name='backbone')
  return ShuffleNetV2(output_stride, dtype, remat, ops, name='backbone')


class FLANet(nn.Module):
  """Returns (main, aux1, aux2) logits of shape (B, H, W, num_classes), float32 (float64 if
  the compute dtype is). `ops`: the implementation of the operations every layer uses
  (models/ops.py; `build_model` picks it from `model.kernels`)."""
  num_classes: int
  backbone: str = 'resnet101'
  attention: str = 'fla'
  deep_stem: bool = True
  output_stride: int = 8
  head_features: int = 512
  aux_features: int = 64
  dropout_rate: float = 0.1
  output_upsample: bool | None = None  # None: x2 upsampling in the output modules unless HRNet
  fla_chunk_size: int = 0  # > 0: FLA attention this many rows/columns at a time (fla.py)
  remat: bool = False  # rematerialise the backbone's residual blocks in the backward pass
  dtype: Dtype = jnp.float32
  ops: Ops = PLAIN

  def __post_init__(self):
    # Checked when the model is built, before anything is traced, compiled or written.
    _require_choice('backbone', self.backbone, BACKBONES)
    _require_choice('attention', self.attention, ATTENTION_BLOCKS)
    if self.fla_chunk_size < 0 or (self.fla_chunk_size and self.attention != 'fla'):
      raise errors.UserValueError(f'model.fla_chunk_size={self.fla_chunk_size}: must be >= 0, '
                                  f"and 0 unless model.attention='fla' (got {self.attention!r})")
    super().__post_init__()

  @nn.compact
  def __call__(self, images, train: bool):
    size = images.shape[1:3]
    c2, c3, c4 = build_backbone(self.backbone, self.deep_stem, self.output_stride,
                                self.dtype, self.remat, self.ops)(images, train)

    head_conv = functools.partial(ConvBN, self.head_features, 3, dtype=self.dtype, ops=self.ops)
    feats = head_conv(name='head_conv1')(c4, train)
    feats = head_conv(name='head_conv2')(feats, train)
    block = ATTENTION_BLOCKS[self.attention]
    if block is not None:
      options = {'chunk_size': self.fla_chunk_size or None} if self.attention == 'fla' else {}
      feats = block(self.head_features, dtype=self.dtype, ops=self.ops, name='attention',
                    **options)(feats, train)

    upsample = self.output_upsample
    if upsample is None:
      upsample = self.backbone not in HRNET_CONFIGS

    def output(x, mid, name):
      logits = OutputModule(mid, self.num_classes, self.dropout_rate, upsample, self.dtype,
                            self.ops, name=name)(x, train)
      # float32 at least: bf16 logits are widened, float64 ones (x64 tests) are kept.
      return resize_bilinear(logits.astype(jnp.promote_types(logits.dtype, jnp.float32)), size)

    main = output(jnp.concatenate([c4, feats.astype(c4.dtype)], axis=-1),
                  self.head_features, 'out_main')
    aux1 = output(c2, self.aux_features, 'out_aux1')
    aux2 = output(c3, self.aux_features, 'out_aux2')
    return main, aux1, aux2
