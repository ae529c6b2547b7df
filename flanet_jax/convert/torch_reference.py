"""Reference PyTorch FLANet with the structure and state_dict keys of the authors' release.

This is the yardstick for the JAX port: the parity tests load its weights into our model and
compare outputs, and benchmarks can time it. It reproduces the released model, including its
batch defect: the FLA block tiles the pooled priors across the batch with `repeat`, so for
batch > 1 sample i is paired with another sample's priors (identical to ours at batch 1).
BatchNorm2d stands in for the original SyncBatchNorm (same parameters and eval behaviour).

Needs torch (the `convert` extra); nothing in flanet_jax imports this module implicitly.

  model = FLANet(num_classes=19, depth=101).eval()    # keys: backbone.*, conv.*, fully.*, ...
"""

import torch
import torch.nn.functional as F
from torch import nn

_LAYERS = {18: (2, 2, 2, 2), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


class BasicBlock(nn.Module):
  expansion = 1

  def __init__(self, inplanes, planes, stride=1, dilation=1, downsample=None):
    super().__init__()
    self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, dilation, dilation, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, dilation, dilation, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.downsample = downsample

  def forward(self, x):
    out = F.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    identity = x if self.downsample is None else self.downsample(x)
    return F.relu(out + identity)


class Bottleneck(nn.Module):
  """Stride on the 3x3 conv; dilation (and padding) on the 3x3 conv."""
  expansion = 4

  def __init__(self, inplanes, planes, stride=1, dilation=1, downsample=None):
    super().__init__()
    self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, stride, dilation, dilation, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(planes * 4)
    self.downsample = downsample

  def forward(self, x):
    out = F.relu(self.bn1(self.conv1(x)))
    out = F.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    identity = x if self.downsample is None else self.downsample(x)
    return F.relu(out + identity)


class ResNet(nn.Module):
  """Dilated ResNet returning (layer2, layer3, layer4); the deep stem is one Sequential
  `conv1` (indices 0, 1, 3, 4, 6 hold weights) followed by `bn1`, as in the original."""

  def __init__(self, depth=101, deep_stem=True, dilated=True):
    super().__init__()
    block = BasicBlock if depth == 18 else Bottleneck
    self.inplanes = 128 if deep_stem else 64
    if deep_stem:
      self.conv1 = nn.Sequential(
          nn.Conv2d(3, 64, 3, 2, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
          nn.Conv2d(64, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
          nn.Conv2d(64, 128, 3, 1, 1, bias=False))
    else:
      self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
    self.bn1 = nn.BatchNorm2d(self.inplanes)
    self.maxpool = nn.MaxPool2d(3, 2, 1)
    blocks = _LAYERS[depth]
    self.layer1 = self._make_layer(block, 64, blocks[0])
    self.layer2 = self._make_layer(block, 128, blocks[1], stride=2)
    # Output stride 8: layer3/4 keep stride 1 and dilate every block, the first one too.
    self.layer3 = self._make_layer(block, 256, blocks[2], *((1, 2) if dilated else (2, 1)))
    self.layer4 = self._make_layer(block, 512, blocks[3], *((1, 4) if dilated else (2, 1)))

  def _make_layer(self, block, planes, num_blocks, stride=1, dilation=1):
    downsample = None
    if stride != 1 or self.inplanes != planes * block.expansion:
      downsample = nn.Sequential(
          nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
          nn.BatchNorm2d(planes * block.expansion))
    layers = [block(self.inplanes, planes, stride, dilation, downsample)]
    self.inplanes = planes * block.expansion
    layers += [block(self.inplanes, planes, 1, dilation) for _ in range(1, num_blocks)]
    return nn.Sequential(*layers)

  def forward(self, x):
    x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
    c2 = self.layer2(self.layer1(x))
    c3 = self.layer3(c2)
    return c2, c3, self.layer4(c3)


class FullyAttentionalBlock(nn.Module):
  """The FLA block: Linear priors `conv1` (rows) and `conv2` (columns), `conv` = 3x3-BN-ReLU."""

  def __init__(self, planes):
    super().__init__()
    self.conv1 = nn.Linear(planes, planes)
    self.conv2 = nn.Linear(planes, planes)
    self.conv = nn.Sequential(nn.Conv2d(planes, planes, 3, 1, 1, bias=False),
                              nn.BatchNorm2d(planes), nn.ReLU())
    self.gamma = nn.Parameter(torch.zeros(1))

  def forward(self, x):
    b, c, h, w = x.shape
    columns = x.permute(0, 3, 1, 2).reshape(b * w, c, h)  # one (C, H) slice per column
    rows = x.permute(0, 2, 1, 3).reshape(b * h, c, w)  # one (C, W) slice per row
    row_prior = self.conv1(x.mean(dim=3).permute(0, 2, 1))  # (B, H, C), pooled over the width
    col_prior = self.conv2(x.mean(dim=2).permute(0, 2, 1))  # (B, W, C), pooled over the height
    # The original's batch tiling: entry i of the B*W slices gets prior i % B (not i // W).
    relation_h = torch.softmax(torch.bmm(columns, row_prior.repeat(w, 1, 1)), dim=-1)
    relation_w = torch.softmax(torch.bmm(rows, col_prior.repeat(h, 1, 1)), dim=-1)
    out_h = torch.bmm(relation_h, columns).view(b, w, c, h).permute(0, 2, 3, 1)
    out_w = torch.bmm(relation_w, rows).view(b, h, c, w).permute(0, 2, 1, 3)
    return self.conv(self.gamma * (out_h + out_w) + x)


class FLANetOutput(nn.Module):
  """Nearest x2, 3x3 conv-BN-ReLU, Dropout2d (the original's 0.1), 1x1 classifier: keys
  conv.{1,2,5}."""

  def __init__(self, in_planes, mid_planes, num_classes, dropout_rate=0.1):
    super().__init__()
    self.conv = nn.Sequential(
        nn.Upsample(scale_factor=2), nn.Conv2d(in_planes, mid_planes, 3, 1, 1, bias=False),
        nn.BatchNorm2d(mid_planes), nn.ReLU(), nn.Dropout2d(dropout_rate),
        nn.Conv2d(mid_planes, num_classes, 1, bias=True))

  def forward(self, x):
    return self.conv(x)


class FLANet(nn.Module):
  """Returns [main, aux1, aux2] logits (NCHW) at the input size.

  The original hard-codes a Bottleneck backbone's widths (2048/1024/512); they are derived
  from the backbone here, which is the same for ResNet-50/101. `dropout_rate` 0 makes a
  training-mode step deterministic (parity tests).
  """

  def __init__(self, num_classes=19, depth=101, deep_stem=True, dropout_rate=0.1):
    super().__init__()
    self.backbone = ResNet(depth, deep_stem)
    c4 = 512 * (1 if depth == 18 else 4)
    self.conv = nn.Sequential(nn.Conv2d(c4, 512, 3, 1, 1, bias=False), nn.BatchNorm2d(512),
                              nn.ReLU(), nn.Conv2d(512, 512, 3, 1, 1, bias=False),
                              nn.BatchNorm2d(512), nn.ReLU())
    self.fully = FullyAttentionalBlock(512)
    self.conv_out1 = FLANetOutput(c4 + 512, 512, num_classes, dropout_rate)
    self.conv_out2 = FLANetOutput(c4 // 4, 64, num_classes, dropout_rate)  # on layer2
    self.conv_out3 = FLANetOutput(c4 // 2, 64, num_classes, dropout_rate)  # on layer3
    for m in self.modules():  # the original's init (Linear layers keep PyTorch's default)
      if isinstance(m, nn.Conv2d):
        nn.init.kaiming_normal_(m.weight, a=1)
      elif isinstance(m, nn.BatchNorm2d):
        nn.init.constant_(m.weight, 1)
        nn.init.constant_(m.bias, 0)

  def forward(self, x):
    size = x.shape[2:]
    c2, c3, c4 = self.backbone(x)
    feats = self.fully(self.conv(c4))
    outputs = [self.conv_out1(torch.cat([c4, feats], 1)), self.conv_out2(c2),
               self.conv_out3(c3)]
    return [F.interpolate(o, size, mode='bilinear', align_corners=True) for o in outputs]
