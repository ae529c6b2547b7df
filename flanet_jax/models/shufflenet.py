"""ShuffleNetV2 x1.0 backbone (Ma et al., ECCV 2018), torchvision `shufflenet_v2_x1_0`, NHWC.

conv1 (3x3 s2, 24) -> max-pool 3x3 s2 -> stage2 (4 blocks, 116) -> stage3 (8, 232) ->
stage4 (4, 464) -> conv5 (1x1, 1024). The first block of each stage has two branches
(`branch1`: depthwise 3x3 + BN, 1x1 + BN + ReLU on the whole input; `branch2`: 1x1, depthwise
3x3, 1x1 on the whole input); the others split the channels in halves and run `branch2` on the
second half. Branch outputs are concatenated and channel-shuffled with 2 groups.

Dilation for segmentation, as the dilated ResNet: with output stride 8, stage3 and stage4 keep
stride 1, and the depthwise 3x3 convs of *every* block there (branch1 and branch2 of the first
block, branch2 of the others) use dilation 2 (stage3) and 4 (stage4), padding = dilation. The
first block of each stage keeps its two-branch form, so the parameters are the classification
network's. Output stride 16 dilates stage4 only (by 2); 32 is the plain network.

Returns (stage2, stage3, conv5) = 116, 232, 1024 channels, the analogues of ResNet's layer2,
layer3 and layer4. torchvision's `fc` is not part of the backbone.

Parameter names follow torchvision's keys mechanically: the numeric indices after a name join it
with `_` (`stage3.0.branch2.3.weight` -> `stage3_0/branch2_3/kernel`, `conv5.1.running_var` ->
batch_stats `conv5_1/var`); conv `weight` [out, in/groups, kh, kw] becomes `kernel`
[kh, kw, in/groups, out], BN `weight`/`bias` become `scale`/`bias`.
"""

import flax.linen as nn
import jax.numpy as jnp

from flanet_jax import errors
from flanet_jax.models.layers import Conv, Dtype, batch_norm, rematerialised
from flanet_jax.models.ops import PLAIN, Ops

STAGE_BLOCKS = (4, 8, 4)
STAGE_WIDTHS = (116, 232, 464)
STEM_WIDTH, LAST_WIDTH = 24, 1024

# (strides, dilations) of stage3 and stage4 for each output stride.
_STAGE34 = {8: ((1, 1), (2, 4)), 16: ((2, 1), (1, 2)), 32: ((2, 2), (1, 1))}


def channel_shuffle(x, groups: int = 2):
  """torchvision's `channel_shuffle` for NHWC: channel g*n + j moves to j*groups + g."""
  *lead, channels = x.shape
  x = x.reshape(*lead, groups, channels // groups)
  return jnp.swapaxes(x, -1, -2).reshape(*lead, channels)


class InvertedResidual(nn.Module):
  """torchvision `InvertedResidual`; `split=False` is the two-branch first block of a stage."""
  features: int
  strides: int = 1
  dilation: int = 1
  split: bool = True
  dtype: Dtype = jnp.float32
  ops: Ops = PLAIN

  def _bn(self, x, train, name, relu=False):
    x = batch_norm(train, self.dtype, name)(x)
    return nn.relu(x) if relu else x

  def _depthwise(self, x, name):
    return Conv(x.shape[-1], 3, self.strides, self.dilation, groups=x.shape[-1],
                dtype=self.dtype, ops=self.ops, name=name)(x)

  def _branch1(self, x, train):
    x = self._bn(self._depthwise(x, 'branch1_0'), train, 'branch1_1')
    x = Conv(self.features // 2, 1, dtype=self.dtype, ops=self.ops, name='branch1_2')(x)
    return self._bn(x, train, 'branch1_3', relu=True)

  def _branch2(self, x, train):
    x = Conv(self.features // 2, 1, dtype=self.dtype, ops=self.ops, name='branch2_0')(x)
    x = self._bn(x, train, 'branch2_1', relu=True)
    x = self._bn(self._depthwise(x, 'branch2_3'), train, 'branch2_4')
    x = Conv(self.features // 2, 1, dtype=self.dtype, ops=self.ops, name='branch2_5')(x)
    return self._bn(x, train, 'branch2_6', relu=True)

  @nn.compact
  def __call__(self, x, train: bool):
    if self.split:
      half = x.shape[-1] // 2
      out = jnp.concatenate([x[..., :half], self._branch2(x[..., half:], train)], axis=-1)
    else:
      out = jnp.concatenate([self._branch1(x, train), self._branch2(x, train)], axis=-1)
    return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
  """ShuffleNetV2 x1.0; returns (stage2, stage3, conv5) feature maps."""
  output_stride: int = 8
  dtype: Dtype = jnp.float32
  remat: bool = False  # rematerialise the blocks (layers.rematerialised)
  ops: Ops = PLAIN

  @nn.compact
  def __call__(self, x, train: bool):
    if self.output_stride not in _STAGE34:
      raise errors.UserValueError(f'output_stride {self.output_stride} not in {sorted(_STAGE34)}')
    strides34, dilations34 = _STAGE34[self.output_stride]
    strides = (2, *strides34)
    dilations = (1, *dilations34)

    x = x.astype(self.dtype)
    x = Conv(STEM_WIDTH, 3, 2, dtype=self.dtype, ops=self.ops, name='conv1_0')(x)
    x = self.ops.max_pool_3x3_s2(nn.relu(batch_norm(train, self.dtype, 'conv1_1')(x)))
    outputs = []
    block = rematerialised(InvertedResidual, self.remat)
    for s, (blocks, width) in enumerate(zip(STAGE_BLOCKS, STAGE_WIDTHS)):
      for j in range(blocks):
        x = block(width, strides[s] if j == 0 else 1, dilations[s], split=j > 0,
                  dtype=self.dtype, ops=self.ops, name=f'stage{s + 2}_{j}')(x, train)
      outputs.append(x)
    x = Conv(LAST_WIDTH, 1, dtype=self.dtype, ops=self.ops, name='conv5_0')(x)
    x = nn.relu(batch_norm(train, self.dtype, 'conv5_1')(x))
    return outputs[0], outputs[1], x
