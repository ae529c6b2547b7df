"""PyTorch -> Flax conversion: numerics against PyTorch, key placement, strictness, the CLI."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import timm
import torch
import torchvision
from flax import traverse_util

from flanet_jax import checkpoint
from flanet_jax.convert import (ARCHS, ConversionError, convert_file, convert_state_dict,
                                export_state_dict)
from flanet_jax.convert import torch_reference
from flanet_jax.models import build_model
from flanet_jax.models.fla import FullyAttentionalBlock
from flanet_jax.models.flanet import FLANet
from flanet_jax.models.resnet import ResNet
from tests import support


def _randomise_(module: torch.nn.Module, seed: int) -> torch.nn.Module:
  """Random BN affine parameters and running statistics (never PyTorch's 1/0 defaults), FLA
  gamma 0.5 (0 would bypass the attention), eval mode. Convs keep their random init."""
  torch.manual_seed(seed)
  with torch.no_grad():
    for m in module.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        m.weight.uniform_(0.5, 1.5)
        m.bias.normal_(0.0, 0.1)
        m.running_mean.normal_(0.0, 0.1)
        m.running_var.uniform_(0.5, 1.5)
      elif isinstance(m, torch_reference.FullyAttentionalBlock):
        m.gamma.fill_(0.5)
  return module.eval()


def _nchw(x):
  return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def _nhwc(t):
  return t.detach().numpy().transpose(0, 2, 3, 1)


def _assert_close(got, want, rtol=1e-4):
  """Max error relative to the largest magnitude, on a tensor that is not trivially small."""
  got, want = np.asarray(got), np.asarray(want)
  assert got.shape == want.shape
  scale = np.abs(want).max()
  assert scale > 0.1
  assert np.abs(got - want).max() <= rtol * scale, np.abs(got - want).max() / scale


def _flat(variables):
  return traverse_util.flatten_dict(variables)


def _assert_same_variables(a, b):
  a, b = _flat(a), _flat(b)
  assert a.keys() == b.keys()
  for key in a:
    assert a[key].shape == b[key].shape, key
    np.testing.assert_array_equal(a[key], b[key], err_msg=str(key))


@pytest.mark.parametrize('depth', [18, 50, 101])
def test_torchvision_resnet_features_match_pytorch(depth):
  net = _randomise_(getattr(torchvision.models, f'resnet{depth}')(weights=None), depth)
  conversion = convert_state_dict(net.state_dict(), f'resnet{depth}')
  assert conversion.ignored == ('fc.weight', 'fc.bias')

  x = np.random.default_rng(depth).normal(size=(2, 64, 96, 3)).astype(np.float32)
  with torch.no_grad():
    h = net.maxpool(net.relu(net.bn1(net.conv1(_nchw(x)))))
    c2 = net.layer2(net.layer1(h))
    c3 = net.layer3(c2)
    want = (c2, c3, net.layer4(c3))
  model = ResNet(depth, deep_stem=False, output_stride=32)
  got = jax.jit(lambda v, x: model.apply(v, x, train=False))(conversion.variables, x)
  for g, w in zip(got, want):
    _assert_close(g, _nhwc(w))


# Official deep-stem names -> CSAIL names: the CSAIL ImageNet files name the deep stem
# conv1, bn1, conv2, bn2, conv3, bn3 where the official code uses conv1.{0,1,3,4,6} and bn1.
# Written out independently of the key map.
_CSAIL_STEM = {'conv1.0.': 'conv1.', 'conv1.1.': 'bn1.', 'conv1.3.': 'conv2.',
               'conv1.4.': 'bn2.', 'conv1.6.': 'conv3.', 'bn1.': 'bn3.'}


def _to_csail(key):
  for official, csail in _CSAIL_STEM.items():
    if key.startswith(official):
      return csail + key[len(official):]
  return key


def test_deep_stem_resnet101_both_namings_and_dilated_features_match_reference():
  net = _randomise_(torch_reference.ResNet(101, deep_stem=True), 7)
  official = dict(net.state_dict())
  official['fc.weight'], official['fc.bias'] = torch.randn(1000, 2048), torch.randn(1000)
  csail = {_to_csail(k): v for k, v in official.items()}
  assert 'conv1.0.weight' in official and 'conv3.weight' in csail and 'bn3.weight' in csail

  from_official = convert_state_dict(official, 'resnet101_deep')
  from_csail = convert_state_dict(csail, 'resnet101_deep')
  assert (from_official.naming, from_csail.naming) == ('official', 'csail')
  _assert_same_variables(from_official.variables, from_csail.variables)
  params, stats = from_official.variables['params'], from_official.variables['batch_stats']
  np.testing.assert_array_equal(stats['bn3']['var'], official['bn1.running_var'].numpy())
  np.testing.assert_array_equal(params['bn2']['scale'], official['conv1.4.weight'].numpy())
  np.testing.assert_array_equal(params['bn1']['bias'], csail['bn1.bias'].numpy())

  # Our dilated backbone (output stride 8, dilation in every layer3/4 block) = the reference.
  x = np.random.default_rng(0).normal(size=(2, 64, 48, 3)).astype(np.float32)
  with torch.no_grad():
    want = net(_nchw(x))
  model = ResNet(101, deep_stem=True, output_stride=8)
  got = jax.jit(lambda v, x: model.apply(v, x, train=False))(from_official.variables, x)
  for g, w in zip(got, want):
    _assert_close(g, _nhwc(w))


# Official key -> (our variable path, layout); independent of the converter's key map.
_OFFICIAL_PLACES = {
    'backbone.conv1.0.weight': ('params/backbone/conv1/kernel', 'conv'),
    'backbone.conv1.4.running_var': ('batch_stats/backbone/bn2/var', ''),
    'backbone.conv1.6.weight': ('params/backbone/conv3/kernel', 'conv'),
    'backbone.bn1.weight': ('params/backbone/bn3/scale', ''),
    'backbone.layer3.22.conv2.weight': ('params/backbone/layer3_22/conv2/kernel', 'conv'),
    'backbone.layer4.0.downsample.1.running_mean':
        ('batch_stats/backbone/layer4_0/downsample_bn/mean', ''),
    'conv.0.weight': ('params/head_conv1/conv/kernel', 'conv'),
    'conv.4.running_mean': ('batch_stats/head_conv2/bn/mean', ''),
    'fully.conv1.weight': ('params/attention/row_prior/kernel', 'linear'),
    'fully.conv2.bias': ('params/attention/col_prior/bias', ''),
    'fully.conv.0.weight': ('params/attention/fuse/conv/kernel', 'conv'),
    'fully.conv.1.running_var': ('batch_stats/attention/fuse/bn/var', ''),
    'fully.gamma': ('params/attention/gamma', 'scalar'),
    'conv_out1.conv.1.weight': ('params/out_main/conv_bn/conv/kernel', 'conv'),
    'conv_out2.conv.2.weight': ('params/out_aux1/conv_bn/bn/scale', ''),
    'conv_out3.conv.5.weight': ('params/out_aux2/classifier/kernel', 'conv'),
    'conv_out3.conv.5.bias': ('params/out_aux2/classifier/bias', ''),
}
_LAYOUTS = {'conv': lambda w: w.transpose(2, 3, 1, 0), 'linear': lambda w: w.T,
            'scalar': lambda w: w.reshape(()), '': lambda w: w}


def test_official_flanet_keys_land_where_they_belong_and_round_trip():
  net = torch_reference.FLANet(num_classes=19, depth=101)
  # Tensor i holds values in [i, i + 0.5): every converted array tells which key it came from.
  reference = {}
  for i, (key, value) in enumerate(net.state_dict().items()):
    if not key.endswith('num_batches_tracked'):
      reference[key] = (i + 0.5 * torch.rand(value.shape)).to(value.dtype)
  families = ('backbone.conv1.0.', 'backbone.bn1.', 'backbone.layer4.2.conv3.', 'conv.4.',
              'fully.conv1.', 'fully.conv2.', 'fully.conv.0.', 'fully.conv.1.', 'fully.gamma',
              'conv_out1.conv.1.', 'conv_out2.conv.2.', 'conv_out3.conv.5.')
  assert all(any(k.startswith(f) for k in reference) for f in families)

  conversion = convert_state_dict(net.state_dict() | reference, 'flanet_resnet101')
  flat = {'/'.join(k): v for k, v in _flat(conversion.variables).items()}
  # One to one: each key landed in exactly one array, whole.
  origins = sorted(int(np.floor(v.min())) for v in flat.values())
  assert all(np.floor(v.max()) == np.floor(v.min()) for v in flat.values())
  keys = list(net.state_dict())
  assert [keys[i] for i in origins] == sorted(reference, key=keys.index)
  for key, (path, layout) in _OFFICIAL_PLACES.items():
    np.testing.assert_array_equal(flat[path], _LAYOUTS[layout](reference[key].numpy()),
                                  err_msg=key)

  # The structure is exactly the model that build_model makes.
  model = build_model(dict(num_classes=19, backbone='resnet101'))
  abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), np.zeros((1, 64, 64, 3)),
                                               train=False))
  shapes = lambda tree: jax.tree.map(lambda a: a.shape, tree)
  assert shapes(abstract) == shapes(conversion.variables)

  # PyTorch -> Flax -> PyTorch and Flax -> PyTorch -> Flax are the identity.
  exported = export_state_dict(conversion.variables, 'flanet_resnet101')
  assert exported.keys() == net.state_dict().keys()
  for key, value in reference.items():
    np.testing.assert_array_equal(exported[key], value.numpy(), err_msg=key)
  net.load_state_dict({k: torch.from_numpy(v) for k, v in exported.items()}, strict=True)
  _assert_same_variables(convert_state_dict(exported, 'flanet_resnet101').variables,
                         conversion.variables)


@pytest.mark.parametrize('arch', sorted(ARCHS))
def test_every_arch_round_trips_flax_to_pytorch_to_flax(arch):
  rng = np.random.default_rng(0)
  template = ARCHS[arch].template({'conv_out1.conv.5.bias': np.zeros(4)})
  variables = traverse_util.unflatten_dict(
      {k: rng.standard_normal(s.shape, np.float32) for k, s in template.items()})
  for naming in ARCHS[arch].namings:
    state_dict = export_state_dict(variables, arch, naming)
    conversion = convert_state_dict(state_dict, arch)
    assert conversion.naming == naming
    _assert_same_variables(conversion.variables, variables)


def test_flanet_matches_official_reference_model():
  net = _randomise_(torch_reference.FLANet(num_classes=5, depth=50), 3)
  x = np.random.default_rng(1).normal(size=(1, 64, 80, 3)).astype(np.float32)  # H != W
  with torch.no_grad():
    want = [_nhwc(o) for o in net(_nchw(x))]
    net.fully.gamma.fill_(0.0)
    without_attention = _nhwc(net(_nchw(x))[0])
  # The attention changes the output far beyond the tolerance, so the check below covers it.
  assert np.abs(without_attention - want[0]).max() > 1e-2 * np.abs(want[0]).max()

  with torch.no_grad():
    net.fully.gamma.fill_(0.5)
  conversion = convert_state_dict(net.state_dict(), 'flanet_resnet50')
  model = FLANet(num_classes=5, backbone='resnet50')
  got = jax.jit(lambda v, x: model.apply(v, x, train=False))(conversion.variables, x)
  for g, w in zip(got, want):
    _assert_close(g, w)


def test_reference_fla_block_keeps_the_original_batch_defect():
  """Ours equals the reference per image; the reference mixes images at batch > 1."""
  block = _randomise_(torch_reference.FullyAttentionalBlock(8), 4)
  x = np.random.default_rng(4).normal(size=(2, 6, 4, 8)).astype(np.float32)
  with torch.no_grad():
    batched = _nhwc(block(_nchw(x)))
    alone = np.concatenate([_nhwc(block(_nchw(x[i:i + 1]))) for i in range(2)])
  t = {k: v.numpy() for k, v in block.state_dict().items()}
  variables = {
      'params': {'row_prior': {'kernel': t['conv1.weight'].T, 'bias': t['conv1.bias']},
                 'col_prior': {'kernel': t['conv2.weight'].T, 'bias': t['conv2.bias']},
                 'gamma': t['gamma'].reshape(()),
                 'fuse': {'conv': {'kernel': t['conv.0.weight'].transpose(2, 3, 1, 0)},
                          'bn': {'scale': t['conv.1.weight'], 'bias': t['conv.1.bias']}}},
      'batch_stats': {'fuse': {'bn': {'mean': t['conv.1.running_mean'],
                                      'var': t['conv.1.running_var']}}}}
  ours = FullyAttentionalBlock(8).apply(variables, x, train=False)
  _assert_close(ours, alone)
  assert np.abs(batched - alone).max() > 1e-2 * np.abs(alone).max()


def _resnet18_state_dict():
  return _randomise_(torchvision.models.resnet18(weights=None), 0).state_dict()


def test_checkpoint_wrappers_prefixes_and_half_precision_are_handled(tmp_path):
  state_dict = _resnet18_state_dict()
  plain = convert_state_dict(state_dict, 'resnet18').variables
  for dtype in (torch.float16, torch.bfloat16):
    wrapped = {'epoch': 3, 'model': {'module.' + k: v.to(dtype) if v.is_floating_point() else v
                                     for k, v in state_dict.items()}}
    torch.save(wrapped, tmp_path / f'{dtype}.pth')
    got = convert_file(tmp_path / f'{dtype}.pth', 'resnet18').variables
    assert all(a.dtype == np.float32 for a in jax.tree.leaves(got))
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(plain)):
      np.testing.assert_allclose(a, b, rtol=1e-2, atol=1e-2)  # half precision rounding
  torch.save({'state_dict': state_dict}, tmp_path / 'sd.pth')
  _assert_same_variables(convert_file(tmp_path / 'sd.pth', 'resnet18').variables, plain)


def test_every_mismatch_is_reported_in_one_error():
  state_dict = _resnet18_state_dict()
  del state_dict['conv1.weight'], state_dict['layer2.0.bn1.running_var']
  state_dict['layer5.0.conv1.weight'] = torch.zeros(3)
  state_dict['layer1.0.conv1.weight'] = torch.zeros(64, 64, 1, 1)
  state_dict['layer4.1.bn2.bias'] = torch.zeros(7)
  with pytest.raises(ConversionError) as error:
    convert_state_dict(state_dict, 'resnet18')
  message = str(error.value)
  for expected in ('missing keys (2)', 'conv1.weight', 'layer2.0.bn1.running_var',
                   'unexpected keys (1)', 'layer5.0.conv1.weight',
                   'keys with the wrong shape (2)',
                   'layer1.0.conv1.weight: checkpoint (64, 64, 1, 1), expected (64, 64, 3, 3)',
                   'layer4.1.bn2.bias: checkpoint (7,), expected (512,)'):
    assert expected in message
  assert 'fc.weight' not in message  # an ImageNet classifier is dropped for a backbone


def test_wrong_arch_and_stray_classifier_are_errors():
  state_dict = _resnet18_state_dict()
  with pytest.raises(ConversionError, match="unknown arch 'resnet34'.*resnet18"):
    convert_state_dict(state_dict, 'resnet34')
  with pytest.raises(ConversionError, match=r'(?s)right arch.*missing.*layer1.0.conv3.weight'):
    convert_state_dict(state_dict, 'resnet50')
  with pytest.raises(ConversionError, match='naming'):
    convert_state_dict(state_dict, 'resnet18', naming='csail')
  # A whole FLANet has no ImageNet classifier: fc.* there is unexpected.
  flanet = torch_reference.FLANet(num_classes=3, depth=50).state_dict()
  flanet['backbone.fc.weight'], flanet['backbone.fc.bias'] = torch.zeros(9, 2048), torch.zeros(9)
  with pytest.raises(ConversionError) as error:
    convert_state_dict(flanet, 'flanet_resnet50')
  assert str(error.value).splitlines()[1:] == [
      '  unexpected keys (2):', '    backbone.fc.bias', '    backbone.fc.weight']
  # Exporting variables of another architecture fails too.
  variables = convert_state_dict(state_dict, 'resnet18').variables
  with pytest.raises(ConversionError, match='resnet50'):
    export_state_dict(variables, 'resnet50')
  with pytest.raises(ConversionError, match="params/bn1/bias is not a variable of arch .flanet_resnet50."):
    export_state_dict(variables, 'flanet_resnet50')


def _run_cli(*args):
  """`flanet-jax-convert ARGS` (its module, so that no installed script is needed)."""
  return subprocess.run([sys.executable, '-m', 'flanet_jax.convert.cli', *map(str, args)],
                        capture_output=True, text=True, cwd=support.REPO, check=False)


def _user_error(result) -> str:
  """The stderr of a converter run that refused its input: status 1, an `error:` line first
  (the offending keys may follow), no traceback."""
  assert result.returncode == 1, result.stderr
  assert result.stderr.startswith('error: ') and 'Traceback' not in result.stderr, result.stderr
  return result.stderr


def test_cli_converts_and_refuses_bad_input_without_writing(tmp_path):
  state_dict = _resnet18_state_dict()
  torch.save({'state_dict': state_dict}, tmp_path / 'r18.pth')
  dst = tmp_path / 'out' / 'r18'
  result = _run_cli(tmp_path / 'r18.pth', dst, '--arch', 'resnet18')
  assert result.returncode == 0, result.stderr
  assert 'arch resnet18' in result.stdout and 'fc.weight' in result.stdout
  _assert_same_variables(checkpoint.load_variables(dst),
                         convert_state_dict(state_dict, 'resnet18').variables)

  result = _run_cli(tmp_path / 'r18.pth', dst, '--arch', 'resnet18')
  assert 'already exists' in _user_error(result)

  bad = tmp_path / 'bad'
  result = _run_cli(tmp_path / 'r18.pth', bad, '--arch', 'resnet50')
  assert 'missing keys' in _user_error(result) and 'layer3.5.conv3.weight' in result.stderr
  assert not bad.exists()


def test_cli_converts_an_hrnet_and_reports_its_dropped_classifier(tmp_path):
  state_dict = timm.create_model('hrnet_w18_small').state_dict()
  torch.save(state_dict, tmp_path / 'hrnet.pth')
  dst = tmp_path / 'hrnet'
  result = _run_cli(tmp_path / 'hrnet.pth', dst, '--arch', 'hrnet_w18_small')
  assert result.returncode == 0, result.stderr
  dropped = [k for k in state_dict if k.startswith(('incre_modules.', 'downsamp_modules.',
                                                    'final_layer.', 'classifier.'))
             and not k.endswith('num_batches_tracked')]
  assert f'dropped {len(dropped)} keys' in result.stdout
  assert all(k in result.stdout for k in dropped)
  _assert_same_variables(checkpoint.load_variables(dst),
                         convert_state_dict(state_dict, 'hrnet_w18_small').variables)


def test_flanet_jax_works_without_torch():
  code = ('import sys; sys.modules["torch"] = None\n'  # any `import torch` now fails
          'import flanet_jax.convert, flanet_jax.pretrained, flanet_jax.checkpoint\n'
          'import flanet_jax.models\n'
          'try:\n'
          '  flanet_jax.convert.convert_state_dict({}, "resnet18")\n'
          'except flanet_jax.convert.ConversionError as e:\n'
          '  assert "missing keys (100)" in str(e), e\n'
          'print("converter ok")\n')
  result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(support.REPO)),
                          cwd=support.REPO, check=False)
  assert result.returncode == 0 and 'converter ok' in result.stdout, result.stderr
