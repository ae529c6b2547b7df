"""FLANet and its dilated ResNet backbones: sizes, shapes, modes, gradients."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from flanet_jax.models import build_model
from flanet_jax.models.resnet import ResNet
from tests import support


def _count(tree):
  return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(tree))


def _abstract_init(model, shape):
  rngs = {'params': jax.random.key(0), 'dropout': jax.random.key(1)}
  return jax.eval_shape(lambda: model.init(rngs, jnp.zeros(shape), train=False))


def _model(**kwargs):
  return build_model(ml_collections.ConfigDict(kwargs))


def test_flanet_resnet101_parameter_count_matches_original():
  variables = _abstract_init(_model(num_classes=19, backbone='resnet101'), (1, 64, 64, 3))
  assert _count(variables['params']) == 70_002_810
  assert _count(variables['params']['backbone']) == 42_623_936
  assert _count(variables['batch_stats']) == 110_080


@pytest.mark.parametrize('depth,deep_stem,count', [
    # torchvision resnet{18,50,101} without the 1000-way fc layer.
    (18, False, 11_689_512 - 513_000),
    (50, False, 25_557_032 - 2_049_000),
    (101, False, 44_549_160 - 2_049_000),
])
def test_plain_resnet_parameter_counts_match_torchvision(depth, deep_stem, count):
  variables = _abstract_init(ResNet(depth, deep_stem), (1, 64, 64, 3))
  assert _count(variables['params']) == count


@pytest.mark.parametrize('output_stride,strides', [(8, (8, 8, 8)), (16, (8, 16, 16)),
                                                   (32, (8, 16, 32))])
def test_backbone_feature_strides(output_stride, strides):
  features = _abstract_init(ResNet(50, True, output_stride), (1, 64, 96, 3))
  shapes = jax.eval_shape(
      lambda v: ResNet(50, True, output_stride).apply(v, jnp.zeros((1, 64, 96, 3)), train=False),
      features)
  assert [s.shape for s in shapes] == [(1, 64 // s, 96 // s, c)
                                       for s, c in zip(strides, (512, 1024, 2048))]


@pytest.mark.parametrize('backbone', ['resnet18', 'resnet50', 'resnet101'])
@pytest.mark.parametrize('size', [(64, 64), (48, 80), (65, 97)])
def test_output_shapes(backbone, size):
  model = _model(num_classes=7, backbone=backbone)
  variables = _abstract_init(model, (2, *size, 3))
  outputs = jax.eval_shape(
      lambda v: model.apply(v, jnp.zeros((2, *size, 3)), train=False), variables)
  assert [o.shape for o in outputs] == [(2, *size, 7)] * 3
  assert all(o.dtype == jnp.float32 for o in outputs)


def test_train_and_eval_modes():
  model = _model(num_classes=5, backbone='resnet18', attention='fla')
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.normal(size=(2, 33, 47, 3)), jnp.float32)
  variables = support.random_init(rng, model, images)
  train = jax.jit(lambda v, x, key: model.apply(v, x, train=True, rngs={'dropout': key},
                                                mutable=['batch_stats']))
  evaluate = jax.jit(lambda v, x: model.apply(v, x, train=False))

  (main_a, _, _), updated = train(variables, images, jax.random.key(1))
  (main_b, _, _), _ = train(variables, images, jax.random.key(2))
  assert main_a.shape == (2, 33, 47, 5)
  assert np.abs(np.asarray(main_a - main_b)).max() > 1e-4  # dropout is on
  changed = jax.tree.map(lambda a, b: bool(np.any(a != b)), variables['batch_stats'],
                         updated['batch_stats'])
  assert all(jax.tree.leaves(changed))  # every running statistic moved

  out_a, out_b = evaluate(variables, images), evaluate(variables, images)
  for a, b in zip(out_a, out_b):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert all(np.isfinite(np.asarray(o)).all() for o in out_a)


@pytest.mark.parametrize('attention', ['fla', 'none'])
def test_gradients_finite_and_nonzero_for_every_parameter(attention):
  model = _model(num_classes=4, backbone='resnet50', attention=attention)
  rng = np.random.default_rng(3)
  images = jnp.asarray(rng.normal(size=(2, 32, 40, 3)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, 4, size=(2, 32, 40)))
  variables = support.random_init(rng, model, images)  # gamma != 0: the prior layers learn
  params = variables['params']

  _, grads = support.flanet_loss_and_grads(model, variables, images, labels, 4)
  support.assert_gradients_finite_and_nonzero(grads)
  assert ('attention' in params) == (attention == 'fla')


def test_build_model_rejects_unknown_keys_and_names():
  """When the model is built, before anything is traced."""
  with pytest.raises(ValueError, match='bakbone'):
    _model(num_classes=3, bakbone='resnet50')
  with pytest.raises(ValueError, match="model.backbone='resnet34'"):
    _model(num_classes=3, backbone='resnet34')
  with pytest.raises(ValueError, match="model.attention='ccnet'"):
    _model(num_classes=3, attention='ccnet')
  with pytest.raises(ValueError, match="model.kernels='cpu'"):
    _model(num_classes=3, kernels='cpu')


@pytest.mark.compiler
def test_bfloat16_compute_keeps_parameters_statistics_and_logits_in_float32():
  rng = np.random.default_rng(5)
  images = jnp.asarray(rng.normal(size=(2, 40, 48, 3)), jnp.float32)
  kwargs = dict(num_classes=5, backbone='resnet18', head_features=32, aux_features=16)
  model32 = build_model(ml_collections.ConfigDict(kwargs))
  model16 = build_model(ml_collections.ConfigDict(kwargs), dtype='bfloat16')
  variables = support.random_init(rng, model32, images)

  def apply(model, params):
    outputs, updates = model.apply({'params': params, 'batch_stats': variables['batch_stats']},
                                   images, train=True, rngs={'dropout': jax.random.key(1)},
                                   mutable=['batch_stats'])
    return sum(jnp.mean(o ** 2) for o in outputs), (outputs, updates)

  grad_fn = jax.jit(jax.grad(apply, argnums=1, has_aux=True), static_argnums=0)
  grads16, (outputs16, updates16) = grad_fn(model16, variables['params'])
  _, (outputs32, _) = jax.jit(apply, static_argnums=0)(model32, variables['params'])
  assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(grads16))
  assert all(s.dtype == jnp.float32 for s in jax.tree.leaves(updates16['batch_stats']))
  for out16, out32 in zip(outputs16, outputs32):
    assert out16.dtype == jnp.float32
    rel = float(jnp.linalg.norm(out16 - out32) / jnp.linalg.norm(out32))
    assert rel < 0.05, rel  # bf16 has 8 bits of mantissa: close, not equal
  # The bf16 program really computes in bf16 (convolutions included).
  hlo = jax.jit(lambda p: apply(model16, p)[0]).lower(variables['params']).as_text()
  convolutions = [line for line in hlo.splitlines() if 'stablehlo.convolution' in line]
  assert convolutions and all(line.endswith('bf16>') for line in convolutions)
