"""The non-local blocks FLA is compared with in Table 3 of the FLANet paper, NHWC.

Each registered block is a drop-in for `model.attention`: `Block(features, dtype)(x, train)` maps
(B, H, W, C) to the same shape and, like `FullyAttentionalBlock`, is an attention module (with
its own residual and learnable `gamma` where the original has one) followed by a 3x3
conv-BN-ReLU named `fuse`: the conv each original network applies after its attention module
(DANet `conv51`/`conv52`, CCNet `convb`, EMANet `fc1`), so the heads differ only in the attention.

  channel_nl  DANet CAM -> fuse
  spatial_nl  DANet PAM -> fuse
  dual_nl     DANet: PAM -> fuse_pam and CAM -> fuse_cam in parallel, summed
  cs_nl       CAM, then PAM on its output -> fuse
  rcca        CCNet criss-cross attention applied R = 2 times (shared weights) -> fuse
  ema         EMANet EM attention unit (k = 64 bases, T = 3 steps; own residual, no gamma) -> fuse

All are per-sample: a sample's output never depends on the rest of the batch. Query, key and
value projections are 1x1 convs with bias as in the originals; initialisation follows this
project's conventions (layers.py); gamma starts at 0.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from flanet_jax.models.layers import Conv, ConvBN, Dtype, batch_norm
from flanet_jax.models.ops import PLAIN, Ops


def _softmax(energy, axis=-1):
  """Softmax in float32 at least (float64 stays float64)."""
  return jax.nn.softmax(energy.astype(jnp.promote_types(energy.dtype, jnp.float32)), axis=axis).astype(energy.dtype)


def _conv1x1(module, x, features, name):
  """A 1x1 conv with bias, in `module`'s dtype with its ops."""
  return Conv(features, 1, use_bias=True, dtype=module.dtype, ops=module.ops, name=name)(x)


def _gamma(module):
  """DANet/CCNet's residual scale: one scalar, initialised to 0."""
  return module.param('gamma', nn.initializers.zeros, (), jnp.float32).astype(module.dtype)


class PositionAttention(nn.Module):
  """DANet position attention `PAM_Module` (Fu et al., CVPR 2019; github.com/junfu1115/DANet).

  q, k = 1x1 convs C -> C/8, v = 1x1 conv C -> C; A = softmax_m(q_n . k_m) over all H*W positions;
  out_n = gamma * sum_m A[n, m] v_m + x_n.
  """
  dtype: Dtype = jnp.float32
  ops: Ops = PLAIN

  @nn.compact
  def __call__(self, x):
    batch, height, width, channels = x.shape
    query = _conv1x1(self, x, channels // 8, 'query').reshape(batch, height * width, -1)
    key = _conv1x1(self, x, channels // 8, 'key').reshape(batch, height * width, -1)
    value = _conv1x1(self, x, channels, 'value').reshape(batch, height * width, channels)
    attention = _softmax(jnp.einsum('bnk,bmk->bnm', query, key))  # (B, N, N)
    out = jnp.einsum('bnm,bmc->bnc', attention, value).reshape(x.shape)
    return _gamma(self) * out + x


class ChannelAttention(nn.Module):
  """DANet channel attention `CAM_Module` (Fu et al., CVPR 2019; github.com/junfu1115/DANet).

  E = X^T X over positions (C x C); A = softmax(max_row(E) - E), i.e. softmax(-E) with the
  original's shift for stability; out = gamma * (A applied to the channels of x) + x.
  No parameters besides gamma.
  """
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    batch, height, width, channels = x.shape
    flat = x.reshape(batch, height * width, channels)
    energy = jnp.einsum('bnc,bnd->bcd', flat, flat)  # (B, C, C)
    attention = _softmax(energy.max(axis=-1, keepdims=True) - energy)
    out = jnp.einsum('bcd,bnd->bnc', attention, flat).reshape(x.shape)
    return _gamma(self) * out + x


class CrissCrossAttention(nn.Module):
  """CCNet `CrissCrossAttention` (Huang et al., ICCV 2019; github.com/speedinghzl/CCNet).

  Each position attends to the H + W - 1 positions of its row and column: q, k = 1x1 convs
  C -> C/8, v = 1x1 conv C -> C, one softmax over the column energies and the row energies
  together, where the centre, present in both, is excluded from the column part by -inf (the
  pure-PyTorch version's `INF` diagonal); out = gamma * (column + row aggregation) + x.
  """
  dtype: Dtype = jnp.float32
  ops: Ops = PLAIN

  @nn.compact
  def __call__(self, x):
    height, channels = x.shape[1], x.shape[-1]
    query = _conv1x1(self, x, channels // 8, 'query')
    key = _conv1x1(self, x, channels // 8, 'key')
    value = _conv1x1(self, x, channels, 'value')
    energy_col = jnp.einsum('bhwk,bgwk->bhwg', query, key)  # position (h, w) vs (g, w)
    centre = jnp.eye(height, dtype=bool)[:, None, :]  # (h, 1, g): g == h
    energy_col = jnp.where(centre, -jnp.inf, energy_col)
    energy_row = jnp.einsum('bhwk,bhvk->bhwv', query, key)  # position (h, w) vs (h, v)
    attention = _softmax(jnp.concatenate([energy_col, energy_row], axis=-1))
    attn_col, attn_row = attention[..., :height], attention[..., height:]
    out = (jnp.einsum('bhwg,bgwc->bhwc', attn_col, value) +
           jnp.einsum('bhwv,bhvc->bhwc', attn_row, value))
    return _gamma(self) * out + x


def _l2_normalize(bases):
  """EMANet's `_l2norm` over the channel axis (axis -2 of (..., C, K))."""
  return bases / (1e-6 + jnp.linalg.norm(bases, axis=-2, keepdims=True))


class EMAUnit(nn.Module):
  """EMANet `EMAU` (Li et al., ICCV 2019; github.com/XiaLiPKU/EMANet), k bases, T EM steps.

  x' = conv1(x) (1x1 with bias). From the bases mu (C x k), T times:
    E-step z = softmax_k(x'^T mu) (N x k);  M-step mu = l2norm_C(x' z / (1e-6 + sum_n z)).
  y = ReLU(mu z^T) reshaped to (H, W, C); out = ReLU(BN(conv2(y)) + x) (conv2 1x1, no bias).
  As the official code, the EM steps run without gradient (`torch.no_grad`), so conv1 gets no
  gradient at all (the authors found this slightly better; EMANet issue #14), and there is no gamma.
  The bases live in `batch_stats` (they are a buffer, not learned): initialised N(0, 2/k) and
  l2-normalised; each training step moves them to 0.9 * mu + 0.1 * batch mean of the final mu
  (`train.py`, EM_MOM = 0.9), without renormalising.
  """
  num_bases: int = 64
  num_steps: int = 3
  momentum: float = 0.9
  dtype: Dtype = jnp.float32
  ops: Ops = PLAIN

  @nn.compact
  def __call__(self, x, train: bool):
    batch, height, width, channels = x.shape
    bases = self.variable(
        'batch_stats', 'bases',
        lambda: _l2_normalize(math.sqrt(2.0 / self.num_bases) * jax.random.normal(
            self.make_rng('params'), (channels, self.num_bases), jnp.float32)))

    feats = _conv1x1(self, x, channels, 'conv1')
    # EM in float32: the normalisations and the softmax are sensitive to rounding.
    flat = jax.lax.stop_gradient(feats).astype(jnp.float32).reshape(batch, -1, channels)
    mu = jnp.broadcast_to(bases.value, (batch, channels, self.num_bases))
    for _ in range(self.num_steps):
      z = jax.nn.softmax(jnp.einsum('bnc,bck->bnk', flat, mu), axis=-1)
      z_normalized = z / (1e-6 + z.sum(axis=1, keepdims=True))
      mu = _l2_normalize(jnp.einsum('bnc,bnk->bck', flat, z_normalized))

    if train and not self.is_initializing():
      bases.value = self.momentum * bases.value + (1 - self.momentum) * mu.mean(axis=0)

    y = nn.relu(jnp.einsum('bck,bnk->bnc', mu, z)).reshape(x.shape).astype(self.dtype)
    y = Conv(channels, 1, dtype=self.dtype, ops=self.ops, name='conv2')(y)
    y = batch_norm(train, self.dtype, 'bn2')(y)
    return nn.relu(y + x)


class _Block(nn.Module):
  features: int
  dtype: Dtype = jnp.float32
  ops: Ops = PLAIN

  def _fuse(self, x, train, name='fuse'):
    return ConvBN(self.features, 3, dtype=self.dtype, ops=self.ops, name=name)(x, train)


class ChannelNonLocal(_Block):
  """`channel_nl`: CAM -> conv3x3-BN-ReLU."""

  @nn.compact
  def __call__(self, x, train: bool):
    x = ChannelAttention(self.dtype, name='cam')(x.astype(self.dtype))
    return self._fuse(x, train)


class SpatialNonLocal(_Block):
  """`spatial_nl`: PAM -> conv3x3-BN-ReLU."""

  @nn.compact
  def __call__(self, x, train: bool):
    x = PositionAttention(self.dtype, self.ops, name='pam')(x.astype(self.dtype))
    return self._fuse(x, train)


class DualNonLocal(_Block):
  """`dual_nl`: DANet's head, PAM and CAM in parallel, each with its conv3x3-BN-ReLU, summed."""

  @nn.compact
  def __call__(self, x, train: bool):
    x = x.astype(self.dtype)
    spatial = PositionAttention(self.dtype, self.ops, name='pam')(x)
    channel = ChannelAttention(self.dtype, name='cam')(x)
    return self._fuse(spatial, train, 'fuse_pam') + self._fuse(channel, train, 'fuse_cam')


class ChannelSpatialNonLocal(_Block):
  """`cs_nl`: CAM, then PAM on its output, then conv3x3-BN-ReLU. The paper's sequential
  variant of Dual NL (no released code); the order is the one its name gives."""

  @nn.compact
  def __call__(self, x, train: bool):
    x = ChannelAttention(self.dtype, name='cam')(x.astype(self.dtype))
    x = PositionAttention(self.dtype, self.ops, name='pam')(x)
    return self._fuse(x, train)


class RecurrentCrissCross(_Block):
  """`rcca`: CCNet's RCCA, one criss-cross module applied `recurrence` times (shared weights),
  then conv3x3-BN-ReLU (CCNet's `convb`). R = 2 reaches every position."""
  recurrence: int = 2

  @nn.compact
  def __call__(self, x, train: bool):
    x = x.astype(self.dtype)
    attention = CrissCrossAttention(self.dtype, self.ops, name='cca')
    for _ in range(self.recurrence):
      x = attention(x)
    return self._fuse(x, train)


class ExpectationMaximization(_Block):
  """`ema`: EMANet's EMAU (its own residual and ReLU, no gamma) -> conv3x3-BN-ReLU."""

  @nn.compact
  def __call__(self, x, train: bool):
    x = EMAUnit(dtype=self.dtype, ops=self.ops, name='emau')(x.astype(self.dtype), train)
    return self._fuse(x, train)


NONLOCAL_BLOCKS = {
    'channel_nl': ChannelNonLocal,
    'spatial_nl': SpatialNonLocal,
    'dual_nl': DualNonLocal,
    'cs_nl': ChannelSpatialNonLocal,
    'rcca': RecurrentCrissCross,
    'ema': ExpectationMaximization,
}
