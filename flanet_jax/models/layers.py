"""Building blocks shared by every model, with PyTorch-equivalent semantics.

The port must reproduce the original PyTorch numerics, so:
- convolutions use explicit symmetric padding (PyTorch's `padding=p`), never 'SAME', whose
  asymmetric padding of strided convs shifts the sampling grid;
- convolution kernels use Kaiming normal with gain 1 (`kaiming_normal_(w, a=1)`): std 1/sqrt(fan_in);
- Linear layers and conv biases use PyTorch's default uniform(±1/sqrt(fan_in));
- BatchNorm uses eps 1e-5 and PyTorch momentum 0.1 (Flax momentum 0.9);
- bilinear resizing follows `align_corners=True` (FLANet) or `False` (HRNet's fuse layers).
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from flanet_jax.models.ops import PLAIN, Ops

Dtype = Any

conv_kernel_init = nn.initializers.variance_scaling(1.0, 'fan_in', 'normal')
# PyTorch's kaiming_uniform_(a=sqrt(5)) default for Linear/conv weights: bound 1/sqrt(fan_in).
torch_default_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, 'fan_in', 'uniform')

BN_MOMENTUM = 0.9  # PyTorch momentum 0.1: running = 0.9 * running + 0.1 * batch.
BN_EPSILON = 1e-5


def torch_default_bias_init(fan_in: int):
  """PyTorch's default bias init for Linear and Conv: uniform(±1/sqrt(fan_in))."""
  bound = 1.0 / np.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def rematerialised(block, remat: bool):
  """`block` (a module class called as `block(...)(x, train)`), wrapped in `nn.remat` if
  `remat`: its activations are recomputed in the backward pass instead of stored, and only its
  input is kept. `train` is static. Parameter names and values are unchanged."""
  return nn.remat(block, static_argnums=(2,)) if remat else block  # (self, x, train)


class Conv(nn.Module):
  """2-D convolution (NHWC, HWIO kernel) with PyTorch's symmetric padding.

  Padding is `dilation * (kernel_size - 1) // 2` on every side, as PyTorch's `padding=p`.
  `upsample_2x`: the input is first upsampled x2 (nearest), as `nn.Upsample(scale_factor=2)`
  before the conv; computed by `ops.conv3x3_of_upsampled_2x`, the kernel is the same 3x3 one.
  Parameters are `kernel` and optionally `bias` directly under this module, so converted
  PyTorch weights map one to one. `groups` > 1 gives grouped/depthwise convolution.
  `ops` computes it (models/ops.py: the plain XLA convolution unless a backend's is injected).
  """
  features: int
  kernel_size: int = 3
  strides: int = 1
  dilation: int = 1
  groups: int = 1
  use_bias: bool = False
  upsample_2x: bool = False  # convolve the nearest-x2 upsampled input (3x3, stride 1 only)
  dtype: Dtype = jnp.float32
  ops: Ops = PLAIN

  @nn.compact
  def __call__(self, x):
    k, in_features = self.kernel_size, x.shape[-1]
    fan_in = in_features // self.groups * k * k
    kernel = self.param('kernel', conv_kernel_init,
                        (k, k, in_features // self.groups, self.features), jnp.float32)
    x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    if self.upsample_2x:
      if (k, self.strides, self.dilation, self.groups) != (3, 1, 1, 1):
        raise ValueError('upsample_2x needs a 3x3 kernel, stride 1, dilation 1 and groups 1; '
                         f'got kernel_size={k}, strides={self.strides}, '
                         f'dilation={self.dilation}, groups={self.groups}')
      y = self.ops.conv3x3_of_upsampled_2x(x, kernel)
    else:
      y = self.ops.conv2d(x, kernel, self.strides, self.dilation, self.groups)
    if self.use_bias:
      bias = self.param('bias', torch_default_bias_init(fan_in), (self.features,), jnp.float32)
      y = y + bias.astype(self.dtype)
    return y


def batch_norm(train: bool, dtype: Dtype = jnp.float32, name: str | None = None):
  """BatchNorm with PyTorch's eps and momentum.

  Under `jax.jit` with a batch sharded over a mesh, statistics are over the global batch
  (cross-replica / synchronised BN). Running variance uses the biased batch variance, where
  PyTorch stores the unbiased one; the two differ by n/(n-1) with n the pixels per channel.
  The variance is computed in two passes, not as E[x^2] - E[x]^2, which loses precision
  when |mean| >> std.
  """
  return nn.BatchNorm(
      use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
      use_fast_variance=False, dtype=dtype, name=name)


class ConvBN(nn.Module):
  """Conv (no bias) -> BatchNorm -> optional ReLU."""
  features: int
  kernel_size: int = 3
  strides: int = 1
  dilation: int = 1
  relu: bool = True
  upsample_2x: bool = False  # nearest x2 upsampling before the conv (see Conv)
  dtype: Dtype = jnp.float32
  ops: Ops = PLAIN

  @nn.compact
  def __call__(self, x, train: bool):
    x = Conv(self.features, self.kernel_size, self.strides, self.dilation,
             upsample_2x=self.upsample_2x, dtype=self.dtype, ops=self.ops, name='conv')(x)
    x = batch_norm(train, self.dtype, name='bn')(x)
    return nn.relu(x) if self.relu else x


def _align_corners_matrix(in_size: int, out_size: int) -> np.ndarray:
  """(out, in) linear-interpolation weights with align_corners=True sampling."""
  if out_size == 1 or in_size == 1:
    src = np.zeros(out_size)
  else:
    src = np.arange(out_size) * (in_size - 1) / (out_size - 1)
  return _linear_weights(src, in_size)


def _half_pixel_matrix(in_size: int, out_size: int) -> np.ndarray:
  """(out, in) weights with align_corners=False: pixel centres, source clamped at 0 (PyTorch)."""
  src = np.maximum((np.arange(out_size) + 0.5) * in_size / out_size - 0.5, 0.0)
  return _linear_weights(src, in_size)


def _linear_weights(src: np.ndarray, in_size: int) -> np.ndarray:
  lo = np.clip(np.floor(src).astype(np.int64), 0, in_size - 1)
  hi = np.minimum(lo + 1, in_size - 1)
  frac = src - lo
  weights = np.zeros((len(src), in_size), np.float64)
  np.add.at(weights, (np.arange(len(src)), lo), 1.0 - frac)
  np.add.at(weights, (np.arange(len(src)), hi), frac)
  return weights


def resize_bilinear(x, size: Sequence[int], align_corners: bool = True):
  """Bilinear resize of NHWC `x` to `size` = (H, W), PyTorch `F.interpolate(size=...)` semantics.

  Separable: two small dense interpolation matrices applied with einsum, which maps to matmuls
  on accelerators and is exact to float rounding.
  """
  out_h, out_w = size
  in_h, in_w = x.shape[1], x.shape[2]
  if (in_h, in_w) == (out_h, out_w):
    return x
  matrix = _align_corners_matrix if align_corners else _half_pixel_matrix
  wh = jnp.asarray(matrix(in_h, out_h), x.dtype)
  ww = jnp.asarray(matrix(in_w, out_w), x.dtype)
  x = jnp.einsum('oh,bhwc->bowc', wh, x)
  return jnp.einsum('pw,bowc->bopc', ww, x)
