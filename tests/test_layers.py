"""Shared layers against PyTorch, the semantics the port must reproduce."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from flanet_jax.models import layers, ops


def _nchw(x):
  return torch.from_numpy(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2))))


def _nhwc(t):
  return np.transpose(t.detach().numpy(), (0, 2, 3, 1))


@pytest.mark.parametrize('size,kernel,stride,dilation', [
    (17, 3, 2, 1), (16, 3, 2, 1), (15, 7, 2, 1), (13, 3, 1, 2), (13, 3, 1, 4), (9, 1, 2, 1)])
def test_conv_matches_torch_padding(size, kernel, stride, dilation):
  rng = np.random.default_rng(size + kernel + stride + dilation)
  x = rng.normal(size=(2, size, size + 3, 5)).astype(np.float32)
  conv = layers.Conv(6, kernel, stride, dilation, use_bias=True)
  variables = conv.init(jax.random.key(0), x)
  got = np.asarray(conv.apply(variables, x))
  weight = torch.from_numpy(np.array(np.transpose(variables['params']['kernel'], (3, 2, 0, 1))))
  bias = torch.from_numpy(np.array(variables['params']['bias']))
  want = _nhwc(F.conv2d(_nchw(x), weight, bias, stride, dilation * (kernel - 1) // 2, dilation))
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('size', [(5, 7), (6, 6)])
def test_conv_of_upsampled_input_matches_torch(size):
  """Conv(upsample_2x=True) = the official nn.Upsample(scale_factor=2) then a 3x3 conv."""
  x = np.random.default_rng(sum(size)).normal(size=(2, *size, 5)).astype(np.float32)
  conv = layers.Conv(6, 3, use_bias=True, upsample_2x=True)
  variables = conv.init(jax.random.key(1), x)
  weight = torch.from_numpy(np.array(np.transpose(variables['params']['kernel'], (3, 2, 0, 1))))
  bias = torch.from_numpy(np.array(variables['params']['bias']))
  upsampled = F.interpolate(_nchw(x), scale_factor=2, mode='nearest')
  want = _nhwc(F.conv2d(upsampled, weight, bias, padding=1))
  got = np.asarray(conv.apply(variables, x))
  assert got.shape == want.shape == (2, 2 * size[0], 2 * size[1], 6)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('options', [dict(kernel_size=1), dict(strides=2), dict(dilation=2),
                                     dict(groups=2)])
def test_conv_of_upsampled_input_rejects_other_convs(options):
  conv = layers.Conv(4, **{'kernel_size': 3, **options}, upsample_2x=True)
  with pytest.raises(ValueError, match='upsample_2x needs a 3x3 kernel'):
    conv.init(jax.random.key(0), jnp.ones((1, 4, 4, 4)))


def test_conv_init_is_kaiming_normal_gain_one():
  conv = layers.Conv(256, 3)
  kernel = conv.init(jax.random.key(3), jnp.ones((1, 4, 4, 128)))['params']['kernel']
  assert abs(float(kernel.std()) * np.sqrt(128 * 9) - 1.0) < 0.02
  assert abs(float(kernel.mean())) < 1e-3


@pytest.mark.parametrize('size', [(17, 17), (16, 9)])
def test_max_pool_matches_torch(size):
  x = np.random.default_rng(0).normal(size=(2, *size, 3)).astype(np.float32)
  want = _nhwc(F.max_pool2d(_nchw(x), 3, 2, 1))
  np.testing.assert_array_equal(np.asarray(ops.max_pool_3x3_s2(x)), want)


@pytest.mark.parametrize('in_size,out_size', [((9, 13), (65, 97)), ((12, 12), (96, 96)),
                                              ((20, 30), (7, 11)), ((1, 5), (4, 9))])
@pytest.mark.parametrize('align_corners', [True, False])
def test_resize_bilinear_matches_torch(in_size, out_size, align_corners):
  x = np.random.default_rng(2).normal(size=(2, *in_size, 3)).astype(np.float32)
  want = _nhwc(F.interpolate(_nchw(x), out_size, mode='bilinear', align_corners=align_corners))
  got = layers.resize_bilinear(x, out_size, align_corners=align_corners)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


def test_batch_norm_matches_torch_train_and_running_stats():
  x = np.random.default_rng(4).normal(2.0, 3.0, size=(4, 6, 5, 3)).astype(np.float32)
  bn = layers.batch_norm(train=True)
  variables = bn.init(jax.random.key(0), x)
  got, updates = bn.apply(variables, x, mutable=['batch_stats'])
  torch_bn = torch.nn.BatchNorm2d(3).train()
  want = _nhwc(torch_bn(_nchw(x)))
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(np.asarray(updates['batch_stats']['mean']),
                             torch_bn.running_mean.numpy(), rtol=1e-5)
  # PyTorch stores the unbiased variance; ours the biased one (documented in layers.py).
  n = x.size // 3
  np.testing.assert_allclose(0.9 + 0.1 * x.var(axis=(0, 1, 2)),
                             np.asarray(updates['batch_stats']['var']), rtol=1e-5)
  np.testing.assert_allclose(0.9 + 0.1 * x.var(axis=(0, 1, 2)) * n / (n - 1),
                             torch_bn.running_var.numpy(), rtol=1e-5)
