"""The Fully Attentional (FLA) block of FLANet (Song et al., AAAI 2022).

With x of shape (B, H, W, C):
  row prior   r = Linear(mean_w x)          (B, H, C)   -- official `conv1`
  col prior   q = Linear(mean_h x)          (B, W, C)   -- official `conv2`
  A_h[b,w,c,k] = softmax_k sum_h x[b,h,w,c] r[b,h,k]     one C×C map per column
  A_w[b,h,c,k] = softmax_k sum_w x[b,h,w,c] q[b,w,k]     one C×C map per row
  O_h[b,h,w,c] = sum_k A_h[b,w,c,k] x[b,h,w,k];  O_w likewise with A_w
  y = ReLU(BN(Conv3x3(gamma * (O_h + O_w) + x)))

The original tiles the pooled priors across the batch with `repeat`, pairing sample i with the
priors of another sample when B > 1. This block is per-sample and equals the original at B = 1.

Computation (`full_attention`): with `recompute_maps`, the two branches have a hand-written
backward pass (`jax.custom_vjp`) that recomputes the C×C maps instead of storing them, with the
softmax normalisation applied to the (H, W, C) outputs rather than to the C×C maps; without it,
JAX differentiates the forward pass (storing the maps). With `chunk_size` set, rows and columns
are processed `chunk_size` at a time in a loop, forward and backward, so only chunk_size C×C maps
exist at once (B·chunk_size·C²·4 bytes instead of B·(H+W)·C²·4); results are the same as
without chunks up to float rounding.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from flanet_jax.models.layers import ConvBN, Dtype, torch_default_bias_init, torch_default_kernel_init
from flanet_jax.models.ops import PLAIN, Ops

# einsum subscripts of one branch. 'rows': one map per row h, contracting over the width with
# the column priors (A_w); 'cols': one map per column w, contracting over the height with the
# row priors (A_h). `line` is the axis of x the maps are indexed by.
_BRANCHES = {
    'rows': dict(line=1, energy='bhwc,bwk->bhck', out='bhck,bhwk->bhwc', d_attn='bhwc,bhwk->bhck',
                 dx_value='bhck,bhwc->bhwk', dx_energy='bhck,bwk->bhwc', d_prior='bhwc,bhck->bwk'),
    'cols': dict(line=2, energy='bhwc,bhk->bwck', out='bwck,bhwk->bhwc', d_attn='bhwc,bhwk->bwck',
                 dx_value='bwck,bhwc->bhwk', dx_energy='bwck,bhk->bhwc', d_prior='bhwc,bwck->bhk'),
}


def _accumulation_dtype(dtype):
  """float32 for bfloat16/float16/float32 compute, float64 for float64."""
  return jnp.promote_types(dtype, jnp.float32)


def _exp_energy(x, prior, spec):
  """Unnormalised softmax numerator P = exp(E - max E) and its row sums l, at least float32."""
  energy = jnp.einsum(spec['energy'], x, prior).astype(_accumulation_dtype(x.dtype))
  # The shift only keeps exp finite; it cancels in the softmax, so it carries no gradient.
  p = jnp.exp(energy - jax.lax.stop_gradient(energy.max(axis=-1, keepdims=True)))
  return p, p.sum(axis=-1)


def _line_sum(l, spec):
  """Row sums l (B, lines, C) broadcast against an x-shaped (B, H, W, C) array."""
  return jnp.expand_dims(l, 3 - spec['line'])


def _branch_forward(x, prior, spec):
  """O = sum_k softmax_k(E) x for one chunk of lines; normalised after the product."""
  p, l = _exp_energy(x, prior, spec)
  out = jnp.einsum(spec['out'], p.astype(x.dtype), x)
  return (out.astype(l.dtype) / _line_sum(l, spec)).astype(x.dtype)


def _branch_backward(x, prior, d_out, spec):
  """(dx, d_prior) of one chunk of lines: recomputes the maps, then the softmax backward."""
  p, l = _exp_energy(x, prior, spec)
  attn = p / l[..., None]
  acc = p.dtype
  d_attn = jnp.einsum(spec['d_attn'], d_out, x, preferred_element_type=acc)
  d_energy = attn * (d_attn - jnp.sum(attn * d_attn, axis=-1, keepdims=True))
  attn, d_energy = attn.astype(x.dtype), d_energy.astype(x.dtype)
  dx = (jnp.einsum(spec['dx_value'], attn, d_out, preferred_element_type=acc) +
        jnp.einsum(spec['dx_energy'], d_energy, prior, preferred_element_type=acc))
  d_prior = jnp.einsum(spec['d_prior'], x, d_energy, preferred_element_type=acc)
  return dx, d_prior


def _chunks(length: int, chunk_size: int | None):
  """(number of full chunks, chunk length, remainder) covering `length` lines."""
  if chunk_size is None or chunk_size >= length:
    return 0, length, length
  return length // chunk_size, chunk_size, length % chunk_size


def _slice_lines(a, axis, start, size):
  return jax.lax.dynamic_slice_in_dim(a, start, size, axis)


def _update_lines(a, update, axis, start):
  return jax.lax.dynamic_update_slice_in_dim(a, update, start, axis)


def _branch_loop(acc, x, spec, chunk_size, body):
  """acc = body(acc, x_chunk, start, size) for consecutive chunks of lines of x (axis `line`).

  Every map of a chunk uses the whole prior (a row's map contracts over all columns), so only
  x is sliced: `fori_loop` over the full chunks, then the remainder as one static chunk.
  """
  axis = spec['line']
  count, size, rest = _chunks(x.shape[axis], chunk_size)

  def step(i, acc):
    start = i * size
    return body(acc, _slice_lines(x, axis, start, size), start, size)

  if count:
    acc = jax.lax.fori_loop(0, count, step, acc)
  if rest:
    start = count * size
    acc = body(acc, jax.lax.slice_in_dim(x, start, start + rest, axis=axis), start, rest)
  return acc


def _attention_forward(x, row_prior, col_prior, chunk_size):
  out = jnp.zeros_like(x)
  for name, prior in (('rows', col_prior), ('cols', row_prior)):
    spec = _BRANCHES[name]

    def body(out, x_chunk, start, size, spec=spec, prior=prior):
      axis = spec['line']
      chunk = _slice_lines(out, axis, start, size) + _branch_forward(x_chunk, prior, spec)
      return _update_lines(out, chunk, axis, start)

    out = _branch_loop(out, x, spec, chunk_size, body)
  return out


def _attention_backward(x, row_prior, col_prior, d_out, chunk_size):
  acc = _accumulation_dtype(x.dtype)
  dx = jnp.zeros(x.shape, acc)
  d_priors = {}
  for name, prior in (('rows', col_prior), ('cols', row_prior)):
    spec = _BRANCHES[name]

    def body(carry, x_chunk, start, size, spec=spec, prior=prior):
      dx, d_prior = carry
      axis = spec['line']
      dx_chunk, d_prior_chunk = _branch_backward(
          x_chunk, prior, _slice_lines(d_out, axis, start, size), spec)
      dx = _update_lines(dx, _slice_lines(dx, axis, start, size) + dx_chunk, axis, start)
      return dx, d_prior + d_prior_chunk

    dx, d_priors[name] = _branch_loop((dx, jnp.zeros(prior.shape, acc)), x, spec, chunk_size,
                                      body)
  return (dx.astype(x.dtype), d_priors['cols'].astype(row_prior.dtype),
          d_priors['rows'].astype(col_prior.dtype))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _full_attention(x, row_prior, col_prior, chunk_size):
  return _attention_forward(x, row_prior, col_prior, chunk_size)


def _full_attention_fwd(x, row_prior, col_prior, chunk_size):
  return _attention_forward(x, row_prior, col_prior, chunk_size), (x, row_prior, col_prior)


def _full_attention_bwd(chunk_size, residuals, d_out):
  return _attention_backward(*residuals, d_out, chunk_size)


_full_attention.defvjp(_full_attention_fwd, _full_attention_bwd)


def full_attention(x, row_prior, col_prior, chunk_size: int | None = None,
                   recompute_maps: bool = True):
  """O_h + O_w for x (B, H, W, C), row priors (B, H, C) and column priors (B, W, C).

  `chunk_size`: None computes every C×C map at once; an integer computes at most that many
  rows (and columns) at a time, so memory holds B·chunk_size C×C maps instead of B·(H+W).
  `recompute_maps`: the hand-written backward pass, which recomputes the maps; False lets JAX
  differentiate the forward pass, which stores them (and supports forward-mode `jax.jvp`).
  """
  if chunk_size is not None and chunk_size < 1:
    raise ValueError(f'chunk_size must be None or >= 1, got {chunk_size}')
  if recompute_maps:
    return _full_attention(x, row_prior, col_prior, chunk_size)
  return _attention_forward(x, row_prior, col_prior, chunk_size)


class FullyAttentionalBlock(nn.Module):
  """`chunk_size`: compute the row/column attention that many rows (columns) at a time
  (memory B·chunk_size·C² instead of B·(H+W)·C², same results); None: all at once.
  `ops.fla_recomputes_maps` selects the hand-written backward pass (`full_attention`)."""
  features: int
  dtype: Dtype = jnp.float32
  chunk_size: int | None = None
  ops: Ops = PLAIN

  def _prior(self, pooled, name):
    """Linear C->C with PyTorch's default init."""
    return nn.Dense(self.features, dtype=self.dtype, name=name,
                    kernel_init=torch_default_kernel_init,
                    bias_init=torch_default_bias_init(pooled.shape[-1]))(pooled)

  @nn.compact
  def __call__(self, x, train: bool):
    x = x.astype(self.dtype)
    row_prior = self._prior(x.mean(axis=2), 'row_prior')  # (B, H, C)
    col_prior = self._prior(self.ops.mean_over_height(x), 'col_prior')  # (B, W, C)

    gamma = self.param('gamma', nn.initializers.zeros, (), jnp.float32)
    attended = full_attention(x, row_prior, col_prior, self.chunk_size,
                              self.ops.fla_recomputes_maps)
    y = gamma.astype(self.dtype) * attended + x
    return ConvBN(self.features, 3, dtype=self.dtype, ops=self.ops, name='fuse')(y, train)
