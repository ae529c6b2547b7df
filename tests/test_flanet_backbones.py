"""FLANet on the HRNetV2 and ShuffleNetV2 backbones: shapes, head resolution, gradients."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from flanet_jax.models import build_model
from tests import support

NEW_BACKBONES = ['hrnet_w18_small', 'hrnet_w18', 'hrnet_w32', 'hrnet_w48', 'shufflenet_v2']


def _model(**kwargs):
  return build_model(ml_collections.ConfigDict(kwargs))


def _abstract_init(model, shape):
  return jax.eval_shape(lambda: model.init({'params': jax.random.key(0)}, jnp.zeros(shape),
                                           train=False))


@pytest.mark.parametrize('backbone', NEW_BACKBONES)
def test_output_shapes(backbone):
  model = _model(num_classes=7, backbone=backbone)
  variables = _abstract_init(model, (1, 64, 64, 3))
  for size in [(64, 64), (65, 97)]:
    outputs = jax.eval_shape(
        lambda v: model.apply(v, jnp.zeros((2, *size, 3)), train=False), variables)
    assert [o.shape for o in outputs] == [(2, *size, 7)] * 3
    assert all(o.dtype == jnp.float32 for o in outputs)


@pytest.mark.parametrize('backbone,output_upsample,stride', [
    ('resnet18', None, 4), ('shufflenet_v2', None, 4), ('hrnet_w48', None, 4),
    ('hrnet_w48', True, 2), ('resnet18', False, 8)])
def test_output_module_conv_resolution(backbone, output_upsample, stride):
  """By default every backbone's output modules run their 3x3 conv at stride 4: ResNet and
  ShuffleNet upsample their stride-8 features, HRNet's are there already."""
  model = _model(num_classes=5, backbone=backbone, output_upsample=output_upsample)
  images = jnp.zeros((1, 64, 96, 3))
  variables = _abstract_init(model, images.shape)
  _, state = jax.eval_shape(lambda v: model.apply(v, images, train=False,
                                                  capture_intermediates=True,
                                                  mutable=['intermediates']), variables)
  for name in ('out_main', 'out_aux1', 'out_aux2'):
    conv_out, = state['intermediates'][name]['conv_bn']['__call__']
    assert conv_out.shape[1:3] == (64 // stride, 96 // stride), name


@pytest.mark.parametrize('backbone,attention', [('hrnet_w18_small', 'fla'),
                                                ('shufflenet_v2', 'rcca')])
def test_gradients_finite_and_nonzero_for_every_parameter(backbone, attention):
  model = _model(num_classes=3, backbone=backbone, attention=attention, head_features=16,
                 aux_features=8)
  rng = np.random.default_rng(11)
  images = jnp.asarray(rng.normal(size=(2, 40, 36, 3)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, 3, size=(2, 40, 36)))
  variables = support.random_init(rng, model, images)  # gamma != 0

  _, grads = support.flanet_loss_and_grads(model, variables, images, labels, 3)
  support.assert_gradients_finite_and_nonzero(grads)
