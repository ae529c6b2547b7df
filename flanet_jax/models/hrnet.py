"""HRNetV2 backbone (Wang et al., TPAMI 2020), segmentation form, NHWC.

Structure of the official HRNet-Semantic-Segmentation `seg_hrnet.py` (same layers as the
ImageNet HRNet-Image-Classification code and timm's `hrnet_w*`, minus their classification head):
stem (two 3x3 s2 convs, 64 channels) -> layer1 (Bottlenecks) -> transition1 -> stage2 ->
transition2 -> stage3 -> transition3 -> stage4. Stage s has s branches of widths W, 2W, 4W, 8W at
strides 4, 8, 16, 32; each of its modules runs BasicBlocks per branch, then fuses every branch
into every other one (1x1 conv + BN + upsampling for lower resolutions, chains of 3x3 s2 convs
for higher ones) and applies ReLU. W48: stage modules (1, 4, 3), 4 blocks per branch.

Upsampling (fuse layers and the final concatenation) is bilinear with `align_corners=False`:
the original release interpolates with mode='bilinear' and no `align_corners` (PyTorch's default,
False), and the later code's `ALIGN_CORNERS` option, though True by default, is False in the
released Cityscapes HRNetV2-W48 experiment. (The ImageNet classification code, hence timm,
upsamples with nearest neighbour in the fuse layers; ImageNet weights are fine-tuned across
this.) BatchNorm uses this project's PyTorch momentum 0.1, as timm and the later
`seg_hrnet_ocr.py` (the first `seg_hrnet.py` used 0.01).

Outputs, each at stride 4 (branch 0's resolution), the branches concatenated after upsampling:
  (stage2 representation W+2W, stage3 representation W+2W+4W, stage4 representation 15W),
i.e. 720 channels for W48 -- the HRNetV2 representation -- and the two earlier ones feed FLANet's
auxiliary heads the way ResNet's layer2 and layer3 do.

Parameter names map mechanically from the PyTorch keys (official and timm share them): the
dotted module path is cut after each name, and the numeric indices that follow a name are
joined to it with `_`:
  `stage3.2.branches.1.3.conv1.weight`  -> `stage3_2/branches_1_3/conv1/kernel`
  `stage4.0.fuse_layers.3.0.1.0.weight` -> `stage4_0/fuse_layers_3_0_1_0/kernel`
  `transition2.2.0.1.running_mean`      -> batch_stats `transition2_2_0_1/mean`
The one exception is the residual shortcut shared with resnet.py: `layer1.0.downsample.{0,1}`
-> `layer1_0/downsample_conv`, `layer1_0/downsample_bn`. Conv `weight` [out, in, kh, kw] becomes
`kernel` [kh, kw, in, out]; BN `weight`/`bias` become `scale`/`bias`.
"""

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from flanet_jax.models.layers import Conv, Dtype, batch_norm, rematerialised, resize_bilinear
from flanet_jax.models.ops import PLAIN, Ops
from flanet_jax.models.resnet import BasicBlock, Bottleneck

# HRNet fields per backbone name (timm's and the official configs). W18-Small-v1 is the cheap
# variant for tests.
CONFIGS = {
    'hrnet_w18_small': dict(width=16, stage_modules=(1, 1, 1), num_blocks=2, layer1_blocks=1,
                            layer1_planes=32),
    'hrnet_w18': dict(width=18),
    'hrnet_w32': dict(width=32),
    'hrnet_w48': dict(width=48),
}


class HighResolutionModule(nn.Module):
  """Official `HighResolutionModule`: parallel branches of BasicBlocks, then all-to-all fusion."""
  widths: Sequence[int]
  num_blocks: int = 4
  align_corners: bool = False
  dtype: Dtype = jnp.float32
  remat: bool = False  # rematerialise the residual blocks (layers.rematerialised)
  ops: Ops = PLAIN

  def _conv_bn(self, x, features, kernel_size, strides, train, name):
    """`name_0` conv and `name_1` BN: a PyTorch `Sequential(Conv2d, BatchNorm2d, ...)`."""
    x = Conv(features, kernel_size, strides, dtype=self.dtype, ops=self.ops, name=f'{name}_0')(x)
    return batch_norm(train, self.dtype, f'{name}_1')(x)

  def _fuse(self, x, i, j, size, train):
    """Branch j brought to branch i's resolution and width (official `fuse_layers[i][j]`)."""
    if j > i:  # lower resolution: 1x1 conv + BN, then upsample
      x = self._conv_bn(x, self.widths[i], 1, 1, train, f'fuse_layers_{i}_{j}')
      return resize_bilinear(x, size, self.align_corners)
    for k in range(i - j):  # higher resolution: i - j stride-2 3x3 convs, ReLU between them
      last = k == i - j - 1
      x = self._conv_bn(x, self.widths[i] if last else self.widths[j], 3, 2, train,
                        f'fuse_layers_{i}_{j}_{k}')
      x = x if last else nn.relu(x)
    return x

  @nn.compact
  def __call__(self, xs, train: bool):
    xs = list(xs)
    for i, width in enumerate(self.widths):
      for b in range(self.num_blocks):
        block = rematerialised(BasicBlock, self.remat)
        block = block(width, dtype=self.dtype, ops=self.ops, name=f'branches_{i}_{b}')
        xs[i] = block(xs[i], train)

    fused = []
    for i in range(len(xs)):
      size = xs[i].shape[1:3]
      terms = [xs[j] if j == i else self._fuse(xs[j], i, j, size, train) for j in range(len(xs))]
      fused.append(nn.relu(sum(terms[1:], terms[0])))  # summed in the official order
    return fused


class HRNet(nn.Module):
  """HRNetV2-W{width}; returns the stage 2, 3 and 4 representations at stride 4."""
  width: int = 48
  stage_modules: Sequence[int] = (1, 4, 3)
  num_blocks: int = 4
  layer1_blocks: int = 4
  layer1_planes: int = 64
  align_corners: bool = False
  dtype: Dtype = jnp.float32
  remat: bool = False  # rematerialise the residual blocks (layers.rematerialised)
  ops: Ops = PLAIN

  def _conv_bn_relu(self, x, features, strides, train, name):
    x = Conv(features, 3, strides, dtype=self.dtype, ops=self.ops, name=f'{name}_0')(x)
    return nn.relu(batch_norm(train, self.dtype, f'{name}_1')(x))

  def _transition(self, xs, widths, index, train):
    """Official `_make_transition_layer`: branches that change width get a 3x3 conv (only after
    layer1); the new, lowest-resolution branch is a stride-2 3x3 conv of the last branch."""
    out = []
    for i, width in enumerate(widths):
      if i < len(xs):
        x = xs[i]
        if x.shape[-1] != width:
          x = self._conv_bn_relu(x, width, 1, train, f'transition{index}_{i}')
      else:
        x = self._conv_bn_relu(xs[-1], width, 2, train, f'transition{index}_{i}_0')
      out.append(x)
    return out

  def _concat(self, xs):
    """Every branch upsampled to branch 0's resolution and concatenated (HRNetV2 head input)."""
    size = xs[0].shape[1:3]
    return jnp.concatenate([resize_bilinear(x, size, self.align_corners) for x in xs], axis=-1)

  @nn.compact
  def __call__(self, x, train: bool):
    x = x.astype(self.dtype)
    for i in (1, 2):
      x = Conv(64, 3, 2, dtype=self.dtype, ops=self.ops, name=f'conv{i}')(x)
      x = nn.relu(batch_norm(train, self.dtype, f'bn{i}')(x))
    for j in range(self.layer1_blocks):
      block = rematerialised(Bottleneck, self.remat)
      x = block(self.layer1_planes, dtype=self.dtype, ops=self.ops,
                name=f'layer1_{j}')(x, train)

    xs, representations = [x], []
    for stage, num_modules in enumerate(self.stage_modules, start=2):
      widths = [self.width * 2**i for i in range(stage)]
      xs = self._transition(xs, widths, stage - 1, train)
      for m in range(num_modules):
        xs = HighResolutionModule(widths, self.num_blocks, self.align_corners, self.dtype,
                                  self.remat, self.ops, name=f'stage{stage}_{m}')(xs, train)
      representations.append(self._concat(xs))
    return tuple(representations)
