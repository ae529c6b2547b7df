"""Shared layers against PyTorch, the semantics the port must reproduce."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from flanet_jax.models import layers, resnet


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


@pytest.mark.parametrize('size,features,kernel,stride,dilation,groups', [
    (9, (6, 8), 1, 1, 1, 1), (9, (6, 8), 1, 2, 1, 1),  # 1x1: matmuls on CPU
    (8, (256, 256), 3, 1, 2, 1), (7, (260, 256), 3, 1, 1, 1),  # 3x3 < 1 GFLOP: XLA's
    (11, (8, 8), 3, 1, 1, 1), (11, (256, 8), 3, 1, 1, 1), (11, (8, 8), 3, 2, 1, 1),
    (13, (4, 8), 7, 2, 1, 1), (9, (8, 8), 3, 1, 1, 4)])
def test_conv_gradients_match_xla_autodiff_in_float64(size, features, kernel, stride, dilation,
                                                       groups):
  (in_features, out_features), rng = features, np.random.default_rng(size * kernel + stride)
  x = rng.normal(size=(2, size, size + 2, in_features))
  w = rng.normal(size=(kernel, kernel, in_features // groups, out_features))
  with jax.enable_x64(True):
    reference = lambda x, w: layers._conv(x, w, stride, dilation, groups)
    want_y, want_vjp = jax.vjp(reference, x, w)
    d_out = rng.normal(size=want_y.shape)
    got_y, got_vjp = jax.vjp(jax.jit(lambda x, w: layers.conv2d(x, w, stride, dilation, groups)),
                             x, w)
    for got, want in zip([got_y, *got_vjp(d_out)], [want_y, *want_vjp(d_out)]):
      assert got.dtype == np.float64
      np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * np.abs(want).max())


@pytest.mark.parametrize('kernel,stride,dilation', [(1, 1, 1), (1, 2, 1), (2, 1, 1), (3, 1, 1),
                                                    (3, 1, 2)])
def test_kernel_grad_by_matmul_matches_xla_in_float64(kernel, stride, dilation):
  """The per-tap matmul kernel gradient (used on CPU where it is faster) against XLA's."""
  rng = np.random.default_rng(kernel + stride + dilation)
  x = rng.normal(size=(2, 9, 12, 5))
  with jax.enable_x64(True):
    conv = lambda w: layers._conv(x, w, stride, dilation, 1)
    w = rng.normal(size=(kernel, kernel, 5, 7))
    y, vjp = jax.vjp(conv, w)
    d_out = rng.normal(size=y.shape)
    got = layers._kernel_grad_by_matmul(x, d_out, kernel, stride, dilation)
    want = vjp(d_out)[0]
    assert got.dtype == np.float64 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * np.abs(want).max())


@pytest.mark.compiler
def test_kernel_grad_by_matmul_keeps_one_shifted_copy_of_the_input_at_a_time():
  """Temporary memory: the padded input, one shifted copy and the transposed d_out (3.7
  inputs' worth), not k*k copies (9.2 inputs' worth when the taps were unrolled)."""
  x = jax.ShapeDtypeStruct((2, 32, 32, 64), jnp.float32)
  grad = jax.jit(lambda x, d_out: layers._kernel_grad_by_matmul(x, d_out, 3, 1, 1))
  temp = grad.lower(x, x).compile().memory_analysis().temp_size_in_bytes
  assert temp < 4 * np.prod(x.shape) * 4


@pytest.mark.compiler
@pytest.mark.parametrize('features,kernel,stride,size,matmul', [
    ((64, 16), 1, 1, 8, True), ((64, 16), 1, 2, 8, True),  # 1x1: always
    ((256, 256), 3, 1, 32, True), ((64, 128), 3, 1, 64, True),  # >= 1 GFLOP
    ((256, 256), 3, 1, 8, False), ((64, 64), 3, 1, 64, False),  # below
    ((256, 256), 3, 2, 64, False)])  # strided
def test_conv_kernel_gradient_on_cpu_is_a_matmul_where_chosen(features, kernel, stride, size,
                                                              matmul):
  """The kernel gradient avoids XLA:CPU's slow kernel-gradient convolution where chosen."""
  in_features, out_features = features
  x = jnp.ones((2, size, size, in_features))
  w = jnp.ones((kernel, kernel, in_features, out_features))
  d_out = jnp.ones(jax.eval_shape(lambda w: layers.conv2d(x, w, stride), w).shape)
  kernel_grad = jax.grad(lambda w: jnp.sum(layers.conv2d(x, w, stride) * d_out))
  hlo = jax.jit(kernel_grad).lower(w).as_text(dialect='hlo')
  assert ('convolution(' not in hlo) == matmul


@pytest.mark.compiler
@pytest.mark.parametrize('kernel', [1, 3])
def test_kernel_grad_flops_match_xla_cost_analysis(kernel):
  x_shape, kernel_shape = (2, 16, 12, 8), (kernel, kernel, 8, 4)
  x, w, d_out = jnp.ones(x_shape), jnp.ones(kernel_shape), jnp.ones((2, 16, 12, 4))
  grad = jax.jit(lambda x, w, d: jax.vjp(lambda w: layers._conv(x, w, 1, 1, 1), w)[1](d)[0])
  xla = grad.lower(x, w, d_out).compile().cost_analysis()['flops']
  # XLA counts only the taps that land inside the image: (3H - 2)(3W - 2) of 9HW for 3x3.
  inside = 1.0 if kernel == 1 else (3 * 16 - 2) * (3 * 12 - 2) / (9 * 16 * 12)
  assert layers.kernel_grad_flops(x_shape, kernel_shape) * inside == pytest.approx(xla)


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


@pytest.mark.parametrize('features', [(3, 4), (256, 256)])  # (256, 256): matmul kernel gradient
def test_conv_of_upsampled_input_gradients_in_float64(features):
  rng = np.random.default_rng(features[0])
  x = rng.normal(size=(2, 4, 7, features[0]))
  w = rng.normal(size=(3, 3, *features))
  with jax.enable_x64(True):
    upsample = lambda x: jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)  # nearest x2
    reference = lambda x, w: layers._conv(upsample(x), w, 1, 1, 1)
    want_y, want_vjp = jax.vjp(reference, x, w)
    got_y, got_vjp = jax.vjp(jax.jit(layers.conv3x3_of_upsampled_2x), x, w)
    np.testing.assert_allclose(got_y, want_y, rtol=1e-12, atol=1e-12 * np.abs(want_y).max())
    d_out = rng.normal(size=want_y.shape)
    for got, want in zip(got_vjp(d_out), want_vjp(d_out)):
      np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * np.abs(want).max())


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
  np.testing.assert_array_equal(np.asarray(layers.max_pool_3x3_s2(x)), want)


@pytest.mark.parametrize('size', [(17, 17), (16, 9)])
@pytest.mark.parametrize('values', ['random', 'ties', 'nans'])
def test_max_pool_gradient_matches_torch(size, values):
  """Ties (small integers) check that each window's gradient goes to its first maximum;
  NaNs, that a NaN is the maximum (PyTorch: the last NaN of the window)."""
  rng = np.random.default_rng(len(values) + size[1])
  x = (rng.normal(size=(2, *size, 4)) if values == 'random'
       else rng.integers(0, 3, size=(2, *size, 4))).astype(np.float32)
  if values == 'nans':
    x[rng.random(x.shape) < 0.1] = np.nan
  d_out = rng.normal(size=(2, (size[0] + 1) // 2, (size[1] + 1) // 2, 4)).astype(np.float32)
  x_torch = _nchw(x).requires_grad_()
  out_torch = F.max_pool2d(x_torch, 3, 2, 1)
  out_torch.backward(_nchw(d_out))
  out, vjp = jax.vjp(layers.max_pool_3x3_s2, x)
  np.testing.assert_array_equal(np.asarray(out), _nhwc(out_torch.detach()))
  np.testing.assert_allclose(np.asarray(vjp(d_out)[0]), _nhwc(x_torch.grad), rtol=1e-6,
                             atol=1e-6)


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


@pytest.mark.compiler
def test_materialised_is_exact_in_values_and_gradients():
  x = np.random.default_rng(5).normal(size=(3, 4, 5, 6)).astype(np.float32)
  # (No subnormals: XLA:CPU flushes them to 0 in every arithmetic op, so a residual stream,
  # the output of an add, never holds one.)
  x.flat[:5] = [np.nan, np.inf, -np.inf, -0.0, np.finfo(np.float32).tiny]
  y, vjp = jax.vjp(layers.materialised, jnp.asarray(x))
  np.testing.assert_array_equal(np.asarray(y), x)
  assert np.signbit(np.asarray(y).flat[3])  # -0 stays -0
  g = np.random.default_rng(6).normal(size=x.shape).astype(np.float32)
  np.testing.assert_array_equal(np.asarray(vjp(jnp.asarray(g))[0]), g)
  for platform, divides in (('cpu', True), ('cuda', False), ('tpu', False)):  # CPU-only work
    lowered = jax.jit(layers.materialised).trace(x).lower(lowering_platforms=(platform,))
    assert ('divide' in lowered.as_text()) == divides, platform


def _fusion_operand_counts(hlo_text):
  """Number of operands of every fusion in an optimised HLO module's text."""
  calls = re.findall(r'= \S+ fusion\((.*?)\), kind=', hlo_text)
  return [call.count('%') for call in calls]


@pytest.mark.compiler
def test_residual_stream_is_computed_once_per_block():
  """The compiled training gradient of 8 chained Bottlenecks: no fusion recomputes earlier
  blocks' outputs. Without `layers.materialised` XLA:CPU copied every earlier block's BN
  affine, add and ReLU into each later block's fusions (the last ones took ~40 operands; in
  FLANet-R101's layer3, up to 124)."""

  class Chain(nn.Module):
    @nn.compact
    def __call__(self, x):
      for i in range(8):
        x = resnet.Bottleneck(4, name=f'block{i}')(x, train=True)
      return x

  rng = np.random.default_rng(7)
  x = jnp.asarray(rng.normal(size=(2, 8, 8, 16)).astype(np.float32))
  cotangent = jnp.asarray(rng.normal(size=x.shape).astype(np.float32))
  chain = Chain()
  variables = chain.init(jax.random.key(0), x)

  def loss(params, x):
    y, _ = chain.apply({**variables, 'params': params}, x, mutable=['batch_stats'])
    return jnp.sum(y * cotangent)

  compiled = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(variables['params'], x).compile()
  assert max(_fusion_operand_counts(compiled.as_text())) <= 16
