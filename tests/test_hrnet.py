"""HRNetV2 against timm's HRNet (same layers and PyTorch keys as the official code), with the
weights carried over by the converter (`--arch hrnet_w*`)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F

from flanet_jax.convert import ConversionError, convert_state_dict
from flanet_jax.models.hrnet import CONFIGS, HRNet
from tests.support import randomise_batch_norms_

# timm's (and the official ImageNet code's) classification head, not part of the HRNetV2 backbone.
_HEAD_PREFIXES = ('incre_modules.', 'downsamp_modules.', 'final_layer.', 'classifier.')


@pytest.mark.parametrize('name', ['hrnet_w18_small', 'hrnet_w18', 'hrnet_w32', 'hrnet_w48'])
def test_timm_checkpoint_converts_key_by_key(name):
  """Every timm backbone key lands on our variable of the same shape (the converter is strict:
  nothing missing, nothing extra), and exactly the classification head is dropped and reported."""
  state_dict = timm.create_model(name).state_dict()
  conversion = convert_state_dict(state_dict, name)
  head = [k for k in state_dict
          if k.startswith(_HEAD_PREFIXES) and not k.endswith('num_batches_tracked')]
  assert 'classifier.weight' in head and sorted(conversion.ignored) == sorted(head)
  assert f'dropped {len(head)} keys: ' in conversion.summary()
  backbone_keys = [k for k in state_dict
                   if not k.startswith(_HEAD_PREFIXES) and not k.endswith('num_batches_tracked')]
  assert len(jax.tree.leaves(conversion.variables)) == len(backbone_keys)
  if name == 'hrnet_w48':  # the HRNetV2-W48 backbone (HRNet-W48-C without its head)
    assert sum(a.size for a in jax.tree.leaves(conversion.variables['params'])) == 65_325_120


def test_missing_extra_and_misshapen_keys_abort_with_one_error():
  state_dict = timm.create_model('hrnet_w18_small').state_dict()
  del state_dict['stage4.0.branches.3.1.bn2.running_var']
  state_dict['stage4.1.fuse_layers.0.1.0.weight'] = torch.zeros(16, 32, 1, 1)  # no 2nd module
  state_dict['fc.weight'] = torch.zeros(1000, 2048)  # not HRNet's classifier: unexpected
  state_dict['transition3.3.0.0.weight'] = torch.zeros(128, 64, 1, 1)
  with pytest.raises(ConversionError) as error:
    convert_state_dict(state_dict, 'hrnet_w18_small')
  message = str(error.value)
  for expected in ('missing keys (1)', 'stage4.0.branches.3.1.bn2.running_var',
                   'unexpected keys (2)', 'stage4.1.fuse_layers.0.1.0.weight', 'fc.weight',
                   'keys with the wrong shape (1)',
                   'transition3.3.0.0.weight: checkpoint (128, 64, 1, 1), expected (128, 64, 3, 3)'):
    assert expected in message
  assert 'classifier.weight' not in message


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


@pytest.mark.parametrize('name,shape', [
    ('hrnet_w18_small', (2, 64, 96)),  # H != W, batch 2
    ('hrnet_w48', (1, 64, 64)),  # the converted W48 itself: every module and block in place
])
def test_converted_features_match_timm_with_bilinear_fusion(name, shape):
  batch, *size = shape  # multiples of 32
  model = randomise_batch_norms_(timm.create_model(name), seed=batch)
  _bilinear_fuse_layers(model)
  images = torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(1))
  want = _torch_representations(model, images)
  variables = convert_state_dict(model.state_dict(), name).variables

  ours = HRNet(**CONFIGS[name])
  apply = lambda v, x: ours.apply(v, x, train=False)
  # Op by op for W48: compiling the whole wide network costs more than running it op by op.
  apply = apply if name == 'hrnet_w48' else jax.jit(apply)
  got = apply(variables, images.permute(0, 2, 3, 1).numpy())
  width = CONFIGS[name]['width']
  assert [w.shape[-1] for w in want] == [3 * width, 7 * width, 15 * width]
  for g, w in zip(got, want):
    assert g.shape == w.shape and np.abs(w).max() > 0.1
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
