"""init_from: a backbone or a whole model lands exactly where it belongs, or fails loudly."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import timm
import torchvision
from flax import traverse_util
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from flanet_jax.checkpoint import save_variables
from flanet_jax.convert import convert_state_dict
from flanet_jax.models.flanet import FLANet
from flanet_jax.models.resnet import ResNet
from flanet_jax.pretrained import init_from
from tests.support import randomise_batch_norms_

_IMAGE = jnp.zeros((1, 32, 32, 3))


def _init(module, seed=0):
  """Variables of `module` with random values (stats included): every leaf is recognisable."""
  abstract = jax.eval_shape(lambda: module.init(jax.random.key(0), _IMAGE, train=False))
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda a: jnp.asarray(rng.normal(size=a.shape), a.dtype), abstract)


def _flat(tree):
  return {'/'.join(k): v for k, v in traverse_util.flatten_dict(tree).items()}


@pytest.fixture(scope='module')
def model_variables():
  return _init(FLANet(num_classes=3, backbone='resnet18', deep_stem=False))


def test_backbone_fills_exactly_the_backbone(model_variables, tmp_path):
  backbone = _init(ResNet(18, deep_stem=False), 1)
  save_variables(tmp_path / 'r18', backbone)
  new, report = init_from(model_variables, tmp_path / 'r18')  # prefix found: 'backbone'

  assert report.prefix == 'backbone'
  old, new, pre = _flat(model_variables), _flat(new), _flat(backbone)
  assert new.keys() == old.keys()
  loaded = {f'{k.split("/")[0]}/backbone/{k.split("/", 1)[1]}': v for k, v in pre.items()}
  assert set(report.initialised) == loaded.keys()
  assert set(report.not_initialised) == old.keys() - loaded.keys()
  assert {k.split('/')[1] for k in report.not_initialised} == {
      'head_conv1', 'head_conv2', 'attention', 'out_main', 'out_aux1', 'out_aux2'}
  for key in old:
    want = loaded[key] if key in loaded else old[key]
    np.testing.assert_array_equal(new[key], want, err_msg=key)
    assert new[key].dtype == old[key].dtype
  assert 'head_conv1' in report.summary()


def test_whole_model_and_explicit_prefix(model_variables):
  pretrained = _init(FLANet(num_classes=3, backbone='resnet18', deep_stem=False), 2)
  new, report = init_from(model_variables, pretrained)
  assert report.prefix == '' and not report.not_initialised
  for got, want in zip(jax.tree.leaves(new), jax.tree.leaves(pretrained)):
    np.testing.assert_array_equal(got, want)

  head = {c: pretrained[c]['head_conv1'] for c in ('params', 'batch_stats')}
  new, report = init_from(model_variables, head, prefix='head_conv1')
  assert len(report.initialised) == 5  # kernel, scale, bias, mean, var
  np.testing.assert_array_equal(new['batch_stats']['head_conv1']['bn']['var'],
                                head['batch_stats']['bn']['var'])


def test_mismatches_are_errors_listing_every_array(model_variables):
  other_classes = _init(FLANet(num_classes=5, backbone='resnet18', deep_stem=False))
  with pytest.raises(ValueError) as error:
    init_from(model_variables, other_classes)
  message = str(error.value)
  assert '6 pretrained arrays do not fit' in message  # kernel + bias of three classifiers
  assert 'params/out_aux2/classifier/kernel: pretrained (1, 1, 64, 5), model (1, 1, 64, 3)' in (
      message)

  deep_stem = _init(ResNet(18, deep_stem=True))  # conv2/conv3/bn2/bn3 do not exist here
  with pytest.raises(ValueError, match=r"(?s)under prefix 'backbone'.*backbone/conv3/kernel: not"):
    init_from(model_variables, deep_stem)
  with pytest.raises(ValueError, match='no pretrained array matches'):
    init_from(model_variables, {'params': {'decoder': {'kernel': np.zeros(3)}}})
  with pytest.raises(ValueError, match='no pretrained array matches'):
    init_from(model_variables, _init(ResNet(18, deep_stem=False)), prefix='attention')


def test_sharded_variables_stay_sharded(model_variables):
  replicated = NamedSharding(Mesh(np.array(jax.devices()), ('data',)), PartitionSpec())
  sharded = jax.device_put(model_variables, replicated)
  new, _ = init_from(sharded, _init(ResNet(18, deep_stem=False), 3))
  assert all(leaf.sharding == replicated for leaf in jax.tree.leaves(new))


_TORCH_BACKBONES = {'hrnet_w18_small': lambda: timm.create_model('hrnet_w18_small'),
                    'shufflenet_v2': torchvision.models.shufflenet_v2_x1_0}


@pytest.mark.parametrize('backbone', sorted(_TORCH_BACKBONES))
def test_converted_backbone_fills_a_flanet_with_that_backbone(backbone):
  torch_model = randomise_batch_norms_(_TORCH_BACKBONES[backbone](), seed=0)
  converted = convert_state_dict(torch_model.state_dict(), backbone).variables
  variables = _init(FLANet(num_classes=3, backbone=backbone, head_features=16, aux_features=8))
  new, report = init_from(variables, converted)

  assert report.prefix == 'backbone'
  old, new, pre = _flat(variables), _flat(new), _flat(converted)
  loaded = {f'{k.split("/")[0]}/backbone/{k.split("/", 1)[1]}': v for k, v in pre.items()}
  assert set(report.initialised) == loaded.keys()
  assert {k.split('/')[0] for k in loaded} == {'params', 'batch_stats'}
  assert {k.split('/')[1] for k in report.not_initialised} == {
      'head_conv1', 'head_conv2', 'attention', 'out_main', 'out_aux1', 'out_aux2'}
  for key in old:
    np.testing.assert_array_equal(new[key], loaded.get(key, old[key]), err_msg=key)
