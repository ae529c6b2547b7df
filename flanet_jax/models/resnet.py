"""Dilated ResNet-18/50/101 backbones (NHWC) as in the official FLANet code.

Output stride 8: layer3 and layer4 keep stride 1 and use dilation 2 and 4 in *every* block
(the first one too), padding = dilation. Output stride 16 dilates layer4 only; 32 is the plain
classification network. The deep stem is 3x3 s2 (3->64), 3x3 (64->64), 3x3 (64->128), then
`bn1`, ReLU and max-pool 3x3 s2 pad 1; the plain stem is a 7x7 s2 conv.

Parameter names follow PyTorch's (`conv1`, `bn1`, `layer3_5/conv2`, `layer1_0/downsample_conv`)
so that ImageNet weights convert key by key. The deep stem uses the CSAIL naming
(`conv1, bn1, conv2, bn2, conv3, bn3`), where `bn3` is the official `bn1`.
"""

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from flanet_jax import errors
from flanet_jax.models.layers import Conv, Dtype, batch_norm, rematerialised
from flanet_jax.models.ops import PLAIN, Ops


class _Block(nn.Module):
  planes: int
  strides: int = 1
  dilation: int = 1
  dtype: Dtype = jnp.float32
  ops: Ops = PLAIN
  expansion = 1

  def _conv(self, *args, **kwargs):
    return Conv(*args, dtype=self.dtype, ops=self.ops, **kwargs)

  def _shortcut(self, x, train):
    """Identity, or 1x1 conv (stride) + BN when the shape changes."""
    out_features = self.planes * self.expansion
    if self.strides == 1 and x.shape[-1] == out_features:
      return x
    x = self._conv(out_features, 1, self.strides, name='downsample_conv')(x)
    return batch_norm(train, self.dtype, 'downsample_bn')(x)

  def _output(self, out, x, train):
    """ReLU(out + shortcut): the residual stream the next block reads."""
    return self.ops.block_output(nn.relu(out + self._shortcut(x, train)))


class BasicBlock(_Block):
  expansion = 1

  @nn.compact
  def __call__(self, x, train: bool):
    out = self._conv(self.planes, 3, self.strides, self.dilation, name='conv1')(x)
    out = nn.relu(batch_norm(train, self.dtype, 'bn1')(out))
    out = self._conv(self.planes, 3, 1, self.dilation, name='conv2')(out)
    out = batch_norm(train, self.dtype, 'bn2')(out)
    return self._output(out, x, train)


class Bottleneck(_Block):
  """Bottleneck with the stride on the 3x3 conv (as torchvision and the original)."""
  expansion = 4

  @nn.compact
  def __call__(self, x, train: bool):
    out = self._conv(self.planes, 1, name='conv1')(x)
    out = nn.relu(batch_norm(train, self.dtype, 'bn1')(out))
    out = self._conv(self.planes, 3, self.strides, self.dilation, name='conv2')(out)
    out = nn.relu(batch_norm(train, self.dtype, 'bn2')(out))
    out = self._conv(self.planes * 4, 1, name='conv3')(out)
    out = batch_norm(train, self.dtype, 'bn3')(out)
    return self._output(out, x, train)


_DEPTHS = {
    18: (BasicBlock, (2, 2, 2, 2)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
}

# (strides, dilations) of layer3 and layer4 for each output stride.
_LAYER34 = {8: ((1, 1), (2, 4)), 16: ((2, 1), (1, 2)), 32: ((2, 2), (1, 1))}


class ResNet(nn.Module):
  """Returns the (layer2, layer3, layer4) feature maps.

  `remat`: rematerialise every residual block in the backward pass (`nn.remat`): only the
  block inputs are kept from the forward pass, which trades training memory for recomputing
  the blocks' forward passes. Same values and parameter names either way.
  """
  depth: int = 101
  deep_stem: bool = True
  output_stride: int = 8
  dtype: Dtype = jnp.float32
  remat: bool = False
  ops: Ops = PLAIN

  def _conv(self, *args, **kwargs):
    return Conv(*args, dtype=self.dtype, ops=self.ops, **kwargs)

  def _stem(self, x, train):
    if self.deep_stem:
      for i, width in enumerate((64, 64), start=1):
        x = self._conv(width, 3, 2 if i == 1 else 1, name=f'conv{i}')(x)
        x = nn.relu(batch_norm(train, self.dtype, f'bn{i}')(x))
      x = self._conv(128, 3, name='conv3')(x)
      x = batch_norm(train, self.dtype, 'bn3')(x)
    else:
      x = self._conv(64, 7, 2, name='conv1')(x)
      x = batch_norm(train, self.dtype, 'bn1')(x)
    return self.ops.max_pool_3x3_s2(nn.relu(x))

  def _layer(self, x, train, index, planes, num_blocks, strides, dilation):
    block = rematerialised(_DEPTHS[self.depth][0], self.remat)
    for j in range(num_blocks):
      x = block(planes, strides if j == 0 else 1, dilation, self.dtype, self.ops,
                name=f'layer{index}_{j}')(x, train)
    return x

  @nn.compact
  def __call__(self, x, train: bool) -> Sequence[jnp.ndarray]:
    if self.depth not in _DEPTHS:
      raise errors.UserValueError(f'ResNet depth {self.depth} not in {sorted(_DEPTHS)}')
    if self.output_stride not in _LAYER34:
      raise errors.UserValueError(f'output_stride {self.output_stride} not in {sorted(_LAYER34)}')
    _, blocks = _DEPTHS[self.depth]
    (s3, s4), (d3, d4) = _LAYER34[self.output_stride]
    x = self._stem(x.astype(self.dtype), train)
    x = self._layer(x, train, 1, 64, blocks[0], 1, 1)
    c2 = self._layer(x, train, 2, 128, blocks[1], 2, 1)
    c3 = self._layer(c2, train, 3, 256, blocks[2], s3, d3)
    c4 = self._layer(c3, train, 4, 512, blocks[3], s4, d4)
    return c2, c3, c4
