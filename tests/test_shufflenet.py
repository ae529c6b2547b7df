"""ShuffleNetV2 x1.0 against torchvision's `shufflenet_v2_x1_0`, plain and dilated, with the
weights carried over by the converter (`--arch shufflenet_v2`)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torchvision

from flanet_jax.convert import convert_state_dict
from flanet_jax.models.shufflenet import ShuffleNetV2
from tests.support import randomise_batch_norms_

# (strides, dilations) of the depthwise convs of stage3 and stage4, as in shufflenet.py.
_STAGE34 = {8: ((1, 1), (2, 4)), 16: ((2, 1), (1, 2)), 32: ((2, 2), (1, 1))}


def test_torchvision_checkpoint_converts_key_by_key():
  """Every backbone key lands on our variable of the same shape (the converter is strict);
  the ImageNet classifier `fc` is dropped and reported."""
  model = torchvision.models.shufflenet_v2_x1_0()
  conversion = convert_state_dict(model.state_dict(), 'shufflenet_v2')
  assert conversion.ignored == ('fc.weight', 'fc.bias')
  assert 'dropped 2 keys: fc.weight, fc.bias' in conversion.summary()
  expected = sum(p.numel() for name, p in model.named_parameters() if not name.startswith('fc.'))
  assert sum(a.size for a in jax.tree.leaves(conversion.variables['params'])) == expected
  assert expected == 1_253_604


def _dilate(model, output_stride):
  """The documented surgery on torchvision's model: stage3/4 depthwise convs get the stride and
  dilation of shufflenet.py (padding = dilation); the blocks keep their two-branch form."""
  for stage, stride, dilation in zip((model.stage3, model.stage4), *_STAGE34[output_stride]):
    for j, block in enumerate(stage):
      for module in block.modules():
        if isinstance(module, torch.nn.Conv2d) and module.groups > 1:
          module.stride = (stride, stride) if j == 0 else (1, 1)
          module.dilation = module.padding = (dilation, dilation)


@pytest.mark.parametrize('output_stride', [8, 16, 32])
def test_forward_matches_torchvision(output_stride):
  generator = torch.Generator().manual_seed(output_stride)
  model = randomise_batch_norms_(torchvision.models.shufflenet_v2_x1_0(), seed=output_stride)
  _dilate(model, output_stride)
  images = torch.randn(2, 3, 61, 70, generator=generator)
  with torch.no_grad():
    c2 = model.stage2(model.maxpool(model.conv1(images)))
    c3 = model.stage3(c2)
    c5 = model.conv5(model.stage4(c3))
  want = [t.permute(0, 2, 3, 1).numpy() for t in (c2, c3, c5)]

  variables = convert_state_dict(model.state_dict(), 'shufflenet_v2').variables
  got = ShuffleNetV2(output_stride).apply(variables, images.permute(0, 2, 3, 1).numpy(),
                                          train=False)
  assert [g.shape[-1] for g in got] == [116, 232, 1024]
  for g, w in zip(got, want):
    assert g.shape == w.shape and np.abs(w).max() > 0.1
    np.testing.assert_allclose(np.asarray(g), w, rtol=1e-4, atol=1e-4 * np.abs(w).max())


@pytest.mark.parametrize('output_stride,strides', [(8, (8, 8, 8)), (16, (8, 16, 16)),
                                                   (32, (8, 16, 32))])
def test_feature_strides(output_stride, strides):
  model = ShuffleNetV2(output_stride)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)),
                                                train=False))
  outputs = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((1, 64, 96, 3)), train=False),
                           variables)
  assert [o.shape for o in outputs] == [(1, 64 // s, 96 // s, c)
                                        for s, c in zip(strides, (116, 232, 1024))]
