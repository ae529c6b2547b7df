"""The CPU-tuned kernels (flanet_jax/kernels/cpu.py) compute the plain operations (models/ops.py):
values and gradients in float64; and what `model.kernels` selects on each platform."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from flanet_jax import kernels
from flanet_jax.kernels import cpu
from flanet_jax.models import build_model, ops, resnet
from tests import support


def _assert_same_values_and_gradients(tuned, plain, args, rng, rtol=1e-12):
  """tuned(*args) and its VJP equal plain's in float64, on a random cotangent."""
  with jax.enable_x64(True):
    args = [jnp.asarray(a, jnp.float64) for a in args]
    want_y, want_vjp = jax.vjp(plain, *args)
    got_y, got_vjp = jax.vjp(jax.jit(tuned), *args)
    d_out = jnp.asarray(rng.normal(size=want_y.shape))
    for got, want in zip([got_y, *got_vjp(d_out)], [want_y, *want_vjp(d_out)]):
      assert got.dtype == np.float64 and got.shape == want.shape
      assert np.abs(want).max() > 0.1  # not two near-zero tensors
      np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * np.abs(want).max())


@pytest.mark.parametrize('size,features,kernel,stride,dilation,groups', [
    (9, (6, 8), 1, 1, 1, 1), (9, (6, 8), 1, 2, 1, 1),  # 1x1: matmuls
    (8, (256, 256), 3, 1, 2, 1), (7, (260, 256), 3, 1, 1, 1),  # 3x3 < 1 GFLOP: XLA's
    (11, (8, 8), 3, 1, 1, 1), (11, (256, 8), 3, 1, 1, 1), (11, (8, 8), 3, 2, 1, 1),
    (13, (4, 8), 7, 2, 1, 1), (9, (8, 8), 3, 1, 1, 4)])
def test_tuned_conv_equals_plain_conv(size, features, kernel, stride, dilation, groups):
  (in_features, out_features), rng = features, np.random.default_rng(size * kernel + stride)
  x = rng.normal(size=(2, size, size + 2, in_features))
  w = rng.normal(size=(kernel, kernel, in_features // groups, out_features))
  _assert_same_values_and_gradients(lambda x, w: cpu.conv2d(x, w, stride, dilation, groups),
                                    lambda x, w: ops.conv2d(x, w, stride, dilation, groups),
                                    (x, w), rng)


@pytest.mark.parametrize('kernel,stride,dilation', [(1, 1, 1), (1, 2, 1), (2, 1, 1), (3, 1, 1),
                                                    (3, 1, 2)])
def test_kernel_grad_by_matmul_equals_xla_kernel_gradient(kernel, stride, dilation):
  """The per-tap matmul kernel gradient, which the tuned conv uses for large convolutions."""
  rng = np.random.default_rng(kernel + stride + dilation)
  x = rng.normal(size=(2, 9, 12, 5))
  with jax.enable_x64(True):
    w = rng.normal(size=(kernel, kernel, 5, 7))
    y, vjp = jax.vjp(lambda w: ops.conv2d(x, w, stride, dilation), w)
    d_out = rng.normal(size=y.shape)
    got = cpu.kernel_grad_by_matmul(x, d_out, kernel, stride, dilation)
    want = vjp(d_out)[0]
    assert got.dtype == np.float64 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * np.abs(want).max())


@pytest.mark.parametrize('features', [(3, 4), (256, 256)])
def test_conv_of_upsampled_input_plain_and_tuned_equal_upsample_then_conv(features):
  """The phase form (plain) and its per-sample kernel gradient (tuned) against convolving the
  nearest-x2-upsampled input, differentiated by JAX."""
  rng = np.random.default_rng(features[0])
  x = rng.normal(size=(2, 4, 7, features[0]))
  w = rng.normal(size=(3, 3, *features))
  upsample = lambda x: jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
  reference = lambda x, w: ops.conv2d(upsample(x), w)
  for form in (ops.conv3x3_of_upsampled_2x, cpu.conv3x3_of_upsampled_2x):
    _assert_same_values_and_gradients(form, reference, (x, w), rng)


@pytest.mark.parametrize('size', [(17, 17), (16, 9)])
def test_tuned_max_pool_equals_plain_max_pool(size):
  rng = np.random.default_rng(size[1])
  x = rng.normal(size=(2, *size, 4))
  _assert_same_values_and_gradients(cpu.max_pool_3x3_s2, ops.max_pool_3x3_s2, (x,), rng)


def _nchw(x):
  return torch.from_numpy(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2))))


def _nhwc(t):
  return np.transpose(t.detach().numpy(), (0, 2, 3, 1))


@pytest.mark.parametrize('size', [(17, 17), (16, 9)])
@pytest.mark.parametrize('values', ['ties', 'nans'])
def test_tuned_max_pool_gradient_follows_torch_on_ties_and_nans(size, values):
  """Ties (small integers): each window's gradient goes to its first maximum; NaNs: a NaN is
  the maximum (PyTorch: the last NaN of the window)."""
  rng = np.random.default_rng(len(values) + size[1])
  x = rng.integers(0, 3, size=(2, *size, 4)).astype(np.float32)
  if values == 'nans':
    x[rng.random(x.shape) < 0.1] = np.nan
  d_out = rng.normal(size=(2, (size[0] + 1) // 2, (size[1] + 1) // 2, 4)).astype(np.float32)
  x_torch = _nchw(x).requires_grad_()
  out_torch = F.max_pool2d(x_torch, 3, 2, 1)
  out_torch.backward(_nchw(d_out))
  out, vjp = jax.vjp(cpu.max_pool_3x3_s2, x)
  np.testing.assert_array_equal(np.asarray(out), _nhwc(out_torch.detach()))
  np.testing.assert_allclose(np.asarray(vjp(d_out)[0]), _nhwc(x_torch.grad), rtol=1e-6,
                             atol=1e-6)


def test_tuned_mean_over_height_equals_plain():
  rng = np.random.default_rng(3)
  _assert_same_values_and_gradients(cpu.mean_over_height, ops.mean_over_height,
                                    (rng.normal(size=(2, 7, 5, 6)),), rng)


def test_tuned_block_output_is_exact_in_values_and_gradients():
  x = np.random.default_rng(5).normal(size=(3, 4, 5, 6)).astype(np.float32)
  # (No subnormals: XLA:CPU flushes them to 0 in every arithmetic op, so a residual stream,
  # the output of an add, never holds one.)
  x.flat[:5] = [np.nan, np.inf, -np.inf, -0.0, np.finfo(np.float32).tiny]
  y, vjp = jax.vjp(cpu.block_output, jnp.asarray(x))
  np.testing.assert_array_equal(np.asarray(y), x)
  assert np.signbit(np.asarray(y).flat[3])  # -0 stays -0
  g = np.random.default_rng(6).normal(size=x.shape).astype(np.float32)
  np.testing.assert_array_equal(np.asarray(vjp(jnp.asarray(g))[0]), g)


def test_select_picks_the_tuned_kernels_on_cpu_only():
  assert kernels.select('auto', 'cpu') is cpu.OPS
  for platform in ('gpu', 'tpu'):
    assert kernels.select('auto', platform) == kernels.ACCELERATOR
  assert kernels.ACCELERATOR == ops.Ops(fla_recomputes_maps=True)
  assert kernels.select('xla', 'cpu') is ops.PLAIN
  assert kernels.select('tuned', 'gpu') is cpu.OPS
  with pytest.raises(ValueError, match=r"model.kernels='cuda'"):
    kernels.select('cuda')


def _custom_vjp_calls(jaxpr):
  """Names of the backward functions of the custom VJPs called anywhere in a jaxpr."""
  names = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == 'custom_vjp_call':
      names.append(eqn.params['bwd'].__name__)
    else:
      for inner in jax.extend.core.jaxprs_in_params(eqn.params):
        names += _custom_vjp_calls(inner)
  return names


def _tiny_flanet(kernels_name, platform):
  config = ml_collections.ConfigDict(dict(num_classes=3, backbone='resnet18', deep_stem=False,
                                          head_features=16, aux_features=8))
  model = build_model(config)
  return model.clone(ops=kernels.select(kernels_name, platform))


@pytest.mark.compiler  # reads the jaxpr's custom_vjp_call equations
@pytest.mark.parametrize('kernels_name,platform,expected', [
    ('auto', 'gpu', ['_full_attention_bwd']), ('auto', 'tpu', ['_full_attention_bwd']),
    ('xla', 'cpu', [])])
def test_training_loss_has_no_custom_vjp_but_the_fla_blocks_off_cpu(kernels_name, platform,
                                                                    expected):
  """The function the train step differentiates: off CPU only the FLA block's hand-written
  backward is custom; with 'xla' nothing is. (Lowered, a custom VJP leaves no trace: the
  jaxpr is where it shows.)"""
  model = _tiny_flanet(kernels_name, platform)
  images = jnp.zeros((1, 32, 32, 3))
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), images, train=False))

  def loss(variables):
    outputs, _ = model.apply(variables, images, train=True, rngs={'dropout': jax.random.key(1)},
                             mutable=['batch_stats'])
    return sum(o.sum() for o in outputs)

  assert _custom_vjp_calls(jax.make_jaxpr(loss)(variables).jaxpr) == expected
  if platform != 'cpu':  # and its gradient lowers for that platform as plain XLA operations
    lowering = {'gpu': 'cuda', 'tpu': 'tpu'}[platform]
    lowered = jax.jit(jax.grad(loss)).trace(variables).lower(lowering_platforms=(lowering,))
    assert 'stablehlo.convolution' in lowered.as_text()
    assert 'custom_call' not in lowered.as_text()  # no library call of one platform


@pytest.mark.compiler
def test_tuned_kernels_are_custom_vjps():
  """The counterpart of the test above: the CPU kernels do show up (the check can fail)."""
  model = _tiny_flanet('tuned', 'cpu')
  images = jnp.zeros((1, 32, 32, 3))
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), images, train=False))
  jaxpr = jax.make_jaxpr(lambda v: model.apply(v, images, train=False))(variables)
  names = set(_custom_vjp_calls(jaxpr.jaxpr))
  assert {'_conv2d_bwd', '_conv3x3_of_upsampled_2x_bwd', '_max_pool_bwd',
          '_full_attention_bwd'} <= names, names


def test_jvp_through_the_whole_model_with_xla_kernels():
  """Forward-mode differentiation works with `kernels='xla'` and agrees with reverse mode:
  <J v, u> = <v, J^T u> for random v, u, in float64 (BatchNorm in training mode)."""
  model = _tiny_flanet('xla', 'cpu')
  rng = np.random.default_rng(9)
  with jax.enable_x64(True):
    model = model.clone(dtype=jnp.float64)
    images = jnp.asarray(rng.normal(size=(2, 24, 32, 3)))
    variables = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64),
                             support.random_init(rng, model, images))

    def main_output(params, images):
      (main, _, _), _ = model.apply({'params': params, 'batch_stats': variables['batch_stats']},
                                    images, train=True, rngs={'dropout': jax.random.key(1)},
                                    mutable=['batch_stats'])
      return main

    primals = (variables['params'], images)
    v = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape)), primals)
    out, jv = jax.jit(lambda p, v: jax.jvp(main_output, p, v))(primals, v)
    u = jnp.asarray(rng.normal(size=out.shape))
    vjp_u = jax.jit(lambda p, u: jax.vjp(main_output, *p)[1](u))(primals, u)
    forward = jnp.vdot(jv, u)
    reverse = sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(v), jax.tree.leaves(vjp_u)))
    assert abs(float(forward)) > 1e-3
    np.testing.assert_allclose(forward, reverse, rtol=1e-9)


# --- Compiler output: these hold for this JAX release's XLA:CPU; revisit on an upgrade. ---


@pytest.mark.compiler
def test_kernel_grad_by_matmul_keeps_one_shifted_copy_of_the_input_at_a_time():
  """Temporary memory: the padded input, one shifted copy and the transposed d_out, not k*k
  shifted copies (the unrolled loop's 9 or more inputs' worth)."""
  x = jax.ShapeDtypeStruct((2, 32, 32, 64), jnp.float32)
  grad = jax.jit(lambda x, d_out: cpu.kernel_grad_by_matmul(x, d_out, 3, 1, 1))
  temp = grad.lower(x, x).compile().memory_analysis().temp_size_in_bytes
  assert temp < 4 * np.prod(x.shape) * 4


@pytest.mark.compiler
@pytest.mark.parametrize('features,kernel,stride,size,matmul', [
    ((64, 16), 1, 1, 8, True), ((64, 16), 1, 2, 8, True),  # 1x1: always
    ((256, 256), 3, 1, 32, True), ((64, 128), 3, 1, 64, True),  # >= 1 GFLOP
    ((256, 256), 3, 1, 8, False), ((64, 64), 3, 1, 64, False),  # below
    ((256, 256), 3, 2, 64, False)])  # strided
def test_tuned_conv_kernel_gradient_is_a_matmul_where_chosen(features, kernel, stride, size,
                                                             matmul):
  """The kernel gradient avoids XLA:CPU's kernel-gradient convolution where chosen."""
  in_features, out_features = features
  x = jnp.ones((2, size, size, in_features))
  w = jnp.ones((kernel, kernel, in_features, out_features))
  d_out = jnp.ones(jax.eval_shape(lambda w: cpu.conv2d(x, w, stride), w).shape)
  kernel_grad = jax.grad(lambda w: jnp.sum(cpu.conv2d(x, w, stride) * d_out))
  hlo = jax.jit(kernel_grad).lower(w).as_text(dialect='hlo')
  assert ('convolution(' not in hlo) == matmul


@pytest.mark.compiler
@pytest.mark.parametrize('kernel', [1, 3])
def test_kernel_grad_flops_match_xla_cost_analysis(kernel):
  x_shape, kernel_shape = (2, 16, 12, 8), (kernel, kernel, 8, 4)
  x, w, d_out = jnp.ones(x_shape), jnp.ones(kernel_shape), jnp.ones((2, 16, 12, 4))
  grad = jax.jit(lambda x, w, d: jax.vjp(lambda w: ops.conv2d(x, w), w)[1](d)[0])
  xla = grad.lower(x, w, d_out).compile().cost_analysis()['flops']
  # XLA counts only the taps that land inside the image: (3H - 2)(3W - 2) of 9HW for 3x3.
  inside = 1.0 if kernel == 1 else (3 * 16 - 2) * (3 * 12 - 2) / (9 * 16 * 12)
  assert cpu.kernel_grad_flops(x_shape, kernel_shape) * inside == pytest.approx(xla)


def _fusion_operand_counts(hlo_text):
  """Number of operands of every fusion in an optimised HLO module's text."""
  calls = re.findall(r'= \S+ fusion\((.*?)\), kind=', hlo_text)
  return [call.count('%') for call in calls]


@pytest.mark.compiler
def test_tuned_residual_stream_is_computed_once_per_block():
  """The compiled training gradient of 8 chained Bottlenecks with the tuned kernels: no fusion
  recomputes earlier blocks' outputs (without `block_output`, XLA:CPU copied every earlier
  block's BN affine, add and ReLU into each later block's fusions)."""

  class Chain(nn.Module):
    @nn.compact
    def __call__(self, x):
      for i in range(8):
        x = resnet.Bottleneck(4, ops=cpu.OPS, name=f'block{i}')(x, train=True)
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
