"""HRNetV2 against timm's HRNet (same layers and PyTorch keys as the official code)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F

from flanet_jax.models.hrnet import CONFIGS, HRNet
from tests.torch_weights import torch_to_flax

# timm's classification head, not part of the HRNetV2 backbone.
_HEAD_PREFIXES = ('incre_modules', 'downsamp_modules', 'final_layer', 'classifier')


def _backbone_state_dict(model):
  return {k: v for k, v in model.state_dict().items() if not k.startswith(_HEAD_PREFIXES)}


def _shapes(tree):
  return jax.tree.map(lambda a: tuple(a.shape), tree)


@pytest.mark.parametrize('name', ['hrnet_w18_small', 'hrnet_w18', 'hrnet_w32', 'hrnet_w48'])
def test_parameters_convert_key_by_key_from_timm(name):
  """Every timm key maps to our variable of the same shape by the rule in hrnet.py, and back."""
  reference = torch_to_flax(_backbone_state_dict(timm.create_model(name)))
  variables = jax.eval_shape(lambda: HRNet(**CONFIGS[name]).init(
      jax.random.key(0), jnp.zeros((1, 64, 64, 3)), train=False))
  assert _shapes(variables) == _shapes(reference)
  if name == 'hrnet_w48':  # the HRNetV2-W48 backbone (HRNet-W48-C without its head)
    assert sum(a.size for a in jax.tree.leaves(variables['params'])) == 65_325_120


def _randomise_bn(model, generator):
  """Non-trivial eval-mode BatchNorms, so that a misplaced BN cannot go unnoticed."""
  for module in model.modules():
    if isinstance(module, torch.nn.BatchNorm2d):
      channels = module.num_features
      module.running_mean.copy_(0.1 * torch.randn(channels, generator=generator))
      module.running_var.copy_(torch.rand(channels, generator=generator) + 0.5)
      module.weight.data.copy_(torch.rand(channels, generator=generator) + 0.5)
      module.bias.data.copy_(0.1 * torch.randn(channels, generator=generator))


def _bilinear_fuse_layers(model):
  """timm (ImageNet code) upsamples with nearest neighbour in the fuse layers, the segmentation
  code bilinearly with align_corners=False; with inputs divisible by 32 the two sizes agree."""
  for stage in (model.stage2, model.stage3, model.stage4):
    for module in stage:
      for i, fuse_outer in enumerate(module.fuse_layers):
        for j, fuse in enumerate(fuse_outer):
          if j > i:
            fuse[2] = torch.nn.Upsample(scale_factor=2**(j - i), mode='bilinear',
                                        align_corners=False)


def _torch_representations(model, images):
  """The stage 2, 3, 4 outputs, each concatenated at branch 0's size as seg_hrnet.py does."""
  stage_outputs = []
  hooks = [stage.register_forward_hook(lambda m, i, out: stage_outputs.append(list(out)))
           for stage in (model.stage2, model.stage3, model.stage4)]
  with torch.no_grad():
    x = model.act1(model.bn1(model.conv1(images)))
    model.stages(model.act2(model.bn2(model.conv2(x))))
  for hook in hooks:
    hook.remove()

  def concat(xs):
    size = xs[0].shape[2:]
    return torch.cat([xs[0]] + [F.interpolate(x, size=size, mode='bilinear', align_corners=False)
                                for x in xs[1:]], 1)

  return [concat(xs).permute(0, 2, 3, 1).numpy() for xs in stage_outputs]


def test_forward_matches_timm_with_bilinear_fusion():
  size = (64, 96)  # multiples of 32, H != W
  generator = torch.Generator().manual_seed(0)
  model = timm.create_model('hrnet_w18_small').eval()
  with torch.no_grad():
    _randomise_bn(model, generator)
  _bilinear_fuse_layers(model)
  images = torch.randn(2, 3, *size, generator=generator)
  want = _torch_representations(model, images)

  variables = torch_to_flax(_backbone_state_dict(model))
  model = HRNet(**CONFIGS['hrnet_w18_small'])
  got = jax.jit(lambda v, x: model.apply(v, x, train=False))(
      variables, images.permute(0, 2, 3, 1).numpy())
  assert [g.shape for g in got] == [w.shape for w in want]
  assert [w.shape[-1] for w in want] == [16 + 32, 16 + 32 + 64, 16 + 32 + 64 + 128]
  for g, w in zip(got, want):
    assert np.abs(w).max() > 0.1
    np.testing.assert_allclose(np.asarray(g), w, rtol=1e-4, atol=1e-4 * np.abs(w).max())


def test_w48_representations_at_stride_4():
  model = HRNet(width=48)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)),
                                                train=False))
  for size in [(65, 97), (64, 64)]:
    outputs = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((2, *size, 3)), train=False),
                             variables)
    stride4 = [(s + 3) // 4 for s in size]  # two 3x3 stride-2 convs with padding 1
    assert [o.shape for o in outputs] == [(2, *stride4, c) for c in (144, 336, 720)]
