"""The FLA block against an independent float64 NumPy formulation of the released model.

The released block, for one sample x of shape (H, W, C): row priors are a Linear (C -> C, with
bias) of x averaged over the width, column priors a second Linear of x averaged over the height.
For every column, A_h = softmax_k(sum_h x[h,w,c] row_prior[h,k]); for every row,
A_w = softmax_k(sum_w x[h,w,c] col_prior[w,k]); no scaling and no projections of x, whose values
are attended: O_h[h,w,c] = sum_k A_h[w,c,k] x[h,w,k], likewise O_w. The block returns
ReLU(BN(conv3x3(gamma * (O_h + O_w) + x))) with one scalar gamma.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flanet_jax import kernels
from flanet_jax.models.fla import FullyAttentionalBlock, full_attention
from flanet_jax.models.layers import ConvBN
from tests import support


def numpy_fla_attention(x, w_row, b_row, w_col, b_col, gamma):
  """gamma * (O_h + O_w) + x for ONE sample x of shape (H, W, C), loops over rows/columns."""
  height, width, _ = x.shape
  row_prior = x.mean(axis=1) @ w_row + b_row  # (H, C): Linear over the width-pooled rows
  col_prior = x.mean(axis=0) @ w_col + b_col  # (W, C)
  out = np.zeros_like(x)
  for w in range(width):  # one C x C relation per column, priors of the rows
    column = x[:, w, :]  # (H, C)
    attn = support.softmax64(column.T @ row_prior)  # (C, C): sum_h x[h,w,c] r[h,k]
    out[:, w, :] += column @ attn.T  # O_h[h,w,c] = sum_k A[c,k] x[h,w,k]
  for h in range(height):  # one C x C relation per row, priors of the columns
    row = x[h, :, :]  # (W, C)
    attn = support.softmax64(row.T @ col_prior)
    out[h, :, :] += row @ attn.T
  return gamma * out + x


def _numpy_conv3x3_bn_relu(x, kernel, bn_params, bn_stats):
  """Eval-mode conv3x3 (pad 1, no bias) -> BN -> ReLU for (H, W, C) in float64."""
  height, width, _ = x.shape
  padded = np.pad(x, ((1, 1), (1, 1), (0, 0)))
  y = np.zeros((height, width, kernel.shape[-1]))
  for dy in range(3):
    for dx in range(3):
      y += padded[dy:dy + height, dx:dx + width, :] @ kernel[dy, dx]
  scale = bn_params['scale'] / np.sqrt(bn_stats['var'] + 1e-5)
  return np.maximum((y - bn_stats['mean']) * scale + bn_params['bias'], 0.0)


def _to64(tree):
  return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


@pytest.mark.parametrize('height,width,chunk_size', [(12, 12, None), (9, 14, None), (9, 14, 4)])
def test_fla_block_matches_numpy_reference(height, width, chunk_size):
  rng = np.random.default_rng(height * 100 + width)
  channels = 16
  x = rng.normal(size=(1, height, width, channels)).astype(np.float32)
  block = FullyAttentionalBlock(channels, chunk_size=chunk_size)
  variables = support.random_init(rng, block, x)
  got = np.asarray(block.apply(variables, x, train=False), np.float64)

  p, s = _to64(variables['params']), _to64(variables['batch_stats'])
  attended = numpy_fla_attention(
      x[0].astype(np.float64), p['row_prior']['kernel'], p['row_prior']['bias'],
      p['col_prior']['kernel'], p['col_prior']['bias'], p['gamma'])
  want = _numpy_conv3x3_bn_relu(attended, p['fuse']['conv']['kernel'], p['fuse']['bn'],
                                s['fuse']['bn'])
  assert np.abs(want).max() > 0.1  # the comparison is not between two near-zero tensors
  rel_err = np.linalg.norm(got[0] - want) / np.linalg.norm(want)
  assert rel_err <= 1e-5, rel_err


def test_fla_is_per_sample():
  """Sample i's output never depends on sample j (the original's `repeat` breaks this)."""
  rng = np.random.default_rng(1)
  x = rng.normal(size=(3, 10, 7, 8)).astype(np.float32)
  block = FullyAttentionalBlock(8)
  variables = support.random_init(rng, block, x)
  base = np.asarray(block.apply(variables, x, train=False))

  changed = x.copy()
  changed[2] = rng.normal(size=changed[2].shape)
  out = np.asarray(block.apply(variables, changed, train=False))
  np.testing.assert_array_equal(out[:2], base[:2])
  assert np.abs(out[2] - base[2]).max() > 1e-3
  for i in range(3):
    single = np.asarray(block.apply(variables, x[i:i + 1], train=False))
    np.testing.assert_allclose(single[0], base[i], rtol=1e-5, atol=1e-5)


def test_gamma_zero_is_conv_bn_relu():
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.normal(size=(2, 6, 11, 8)), jnp.float32)
  block = FullyAttentionalBlock(8)
  variables = support.random_init(rng, block, x)
  variables['params']['gamma'] = jnp.zeros(())
  got = block.apply(variables, x, train=False)
  fuse = {'params': variables['params']['fuse'], 'batch_stats': variables['batch_stats']['fuse']}
  want = ConvBN(8, 3).apply(fuse, x, train=False)
  np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


@pytest.mark.compiler
def test_fla_attention_flops_match_paper():
  """8*C^2*H*W FLOPs at C=512, 96x96 (the paper's 19.37 GFLOPs), the 3x3 conv excluded."""
  channels, size = 512, 96
  x = jax.ShapeDtypeStruct((1, size, size, channels), jnp.float32)
  weight = jax.ShapeDtypeStruct((channels, channels), jnp.float32)
  bias = jax.ShapeDtypeStruct((channels,), jnp.float32)

  def attention(x, w_row, b_row, w_col, b_col):
    return full_attention(x, x.mean(axis=2) @ w_row + b_row, x.mean(axis=1) @ w_col + b_col)

  cost = jax.jit(attention).lower(x, weight, bias, weight, bias).compile().cost_analysis()
  expected = 8 * channels**2 * size * size
  assert abs(cost['flops'] - expected) / expected < 0.05, (cost['flops'], expected)


def _autodiff_attention(x, row_prior, col_prior):
  """The released block's attention (module docstring) written plainly, for JAX's autodiff."""
  attn_h = jax.nn.softmax(jnp.einsum('bhwc,bhk->bwck', x, row_prior), axis=-1)
  attn_w = jax.nn.softmax(jnp.einsum('bhwc,bwk->bhck', x, col_prior), axis=-1)
  return (jnp.einsum('bwck,bhwk->bhwc', attn_h, x) +
          jnp.einsum('bhck,bhwk->bhwc', attn_w, x))


@pytest.mark.parametrize('chunk_size,recompute_maps', [(None, True), (1, True), (3, True),
                                                       (7, True), (None, False), (3, False)])
def test_attention_gradient_matches_autodiff_in_float64(chunk_size, recompute_maps):
  """The hand-written backward (plain and chunked, with a remainder chunk) is the gradient,
  and so is JAX's differentiation of the chunked forward pass (recompute_maps=False)."""
  rng = np.random.default_rng(chunk_size or 0)
  x, row_prior, col_prior, d_out = (rng.normal(size=s) for s in
                                    ((2, 7, 10, 6), (2, 7, 6), (2, 10, 6), (2, 7, 10, 6)))
  with jax.enable_x64(True):
    want_out, want_vjp = jax.vjp(_autodiff_attention, x, row_prior, col_prior)
    got_out, got_vjp = jax.vjp(lambda *a: full_attention(*a, chunk_size, recompute_maps),
                               x, row_prior, col_prior)
    assert got_out.dtype == jnp.float64
    np.testing.assert_allclose(got_out, want_out, rtol=1e-12, atol=1e-12)
    for got, want in zip(got_vjp(d_out), want_vjp(d_out)):
      assert np.abs(want).max() > 0.1
      np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-11)


def test_chunked_block_matches_plain_block_outputs_and_gradients():
  """Training mode, gamma != 0, fresh random inputs: same outputs, BN statistics and grads."""
  rng = np.random.default_rng(11)
  x = jnp.asarray(rng.normal(size=(2, 10, 13, 16)), jnp.float32)
  cotangent = jnp.asarray(rng.normal(size=(2, 10, 13, 16)), jnp.float32)
  variables = support.random_init(rng, FullyAttentionalBlock(16), x)

  def run(chunk_size):  # with the hand-written backward pass, as 'auto' off CPU
    block = FullyAttentionalBlock(16, chunk_size=chunk_size, ops=kernels.ACCELERATOR)

    def loss(params, x):
      y, updates = block.apply({'params': params, 'batch_stats': variables['batch_stats']}, x,
                               train=True, mutable=['batch_stats'])
      return jnp.sum(y * cotangent), (y, updates)

    return jax.jit(jax.grad(loss, argnums=(0, 1), has_aux=True))(variables['params'], x)

  (plain_grads, (plain_y, plain_stats)), (chunk_grads, (chunk_y, chunk_stats)) = run(None), run(4)
  np.testing.assert_allclose(chunk_y, plain_y, rtol=1e-5, atol=1e-5)
  for got, want in zip(jax.tree.leaves((chunk_grads, chunk_stats)),
                       jax.tree.leaves((plain_grads, plain_stats))):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
  assert np.abs(plain_grads[0]['gamma']) > 1e-3  # the attention branch is in play


def _temp_bytes(fn, *args):
  return jax.jit(fn).lower(*args).compile().memory_analysis().temp_size_in_bytes


@pytest.mark.compiler
def test_chunked_block_memory_is_bounded():
  """XLA's compile-time peak temporary memory of the block at FLANet's size (96x96x512, fp32):
  the plain form holds two 96x512x512 fp32 maps (one per branch); chunks of 8 rows hold 8."""
  x = jax.ShapeDtypeStruct((1, 96, 96, 512), jnp.float32)
  temp = {}
  for chunk_size in (None, 8):
    block = FullyAttentionalBlock(512, chunk_size=chunk_size)
    variables = jax.eval_shape(lambda: block.init(jax.random.key(0), jnp.zeros((1, 4, 4, 512)),
                                                  train=False))
    temp[chunk_size] = _temp_bytes(lambda v, x: block.apply(v, x, train=False), variables, x)
  assert temp[None] >= 2 * 96 * 512 * 512 * 4, temp  # the maps really are materialised
  assert temp[8] <= 60e6, temp
