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
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from flanet_jax.models.layers import ConvBN, Dtype, torch_default_bias_init, torch_default_kernel_init


def _softmax(energy):
  """Softmax over the last axis in float32 at least (float64 stays float64)."""
  return jax.nn.softmax(energy.astype(jnp.promote_types(energy.dtype, jnp.float32)), axis=-1).astype(energy.dtype)


def full_attention(x, row_prior, col_prior):
  """O_h + O_w for x (B, H, W, C), row priors (B, H, C) and column priors (B, W, C)."""
  attn_h = _softmax(jnp.einsum('bhwc,bhk->bwck', x, row_prior))  # (B, W, C, C)
  attn_w = _softmax(jnp.einsum('bhwc,bwk->bhck', x, col_prior))  # (B, H, C, C)
  out_h = jnp.einsum('bwck,bhwk->bhwc', attn_h, x)
  out_w = jnp.einsum('bhck,bhwk->bhwc', attn_w, x)
  return out_h + out_w


class FullyAttentionalBlock(nn.Module):
  features: int
  dtype: Dtype = jnp.float32

  def _prior(self, pooled, name):
    """Linear C->C with PyTorch's default init."""
    return nn.Dense(self.features, dtype=self.dtype, name=name,
                    kernel_init=torch_default_kernel_init,
                    bias_init=torch_default_bias_init(pooled.shape[-1]))(pooled)

  @nn.compact
  def __call__(self, x, train: bool):
    x = x.astype(self.dtype)
    row_prior = self._prior(x.mean(axis=2), 'row_prior')  # (B, H, C)
    col_prior = self._prior(x.mean(axis=1), 'col_prior')  # (B, W, C)

    gamma = self.param('gamma', nn.initializers.zeros, (), jnp.float32)
    y = gamma.astype(self.dtype) * full_attention(x, row_prior, col_prior) + x
    return ConvBN(self.features, 3, dtype=self.dtype, name='fuse')(y, train)
