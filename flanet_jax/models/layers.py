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


class Conv(nn.Module):
  """2-D convolution (NHWC, HWIO kernel) with PyTorch's symmetric padding.

  Padding is `dilation * (kernel_size - 1) // 2` on every side, as PyTorch's `padding=p`.
  Parameters are `kernel` and optionally `bias` directly under this module, so converted
  PyTorch weights map one to one. `groups` > 1 gives grouped/depthwise convolution.
  """
  features: int
  kernel_size: int = 3
  strides: int = 1
  dilation: int = 1
  groups: int = 1
  use_bias: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    k, in_features = self.kernel_size, x.shape[-1]
    fan_in = in_features // self.groups * k * k
    kernel = self.param('kernel', conv_kernel_init,
                        (k, k, in_features // self.groups, self.features), jnp.float32)
    pad = self.dilation * (k - 1) // 2
    y = jax.lax.conv_general_dilated(
        x.astype(self.dtype), kernel.astype(self.dtype),
        window_strides=(self.strides, self.strides),
        padding=((pad, pad), (pad, pad)),
        rhs_dilation=(self.dilation, self.dilation),
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
        feature_group_count=self.groups)
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
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    x = Conv(self.features, self.kernel_size, self.strides, self.dilation,
             dtype=self.dtype, name='conv')(x)
    x = batch_norm(train, self.dtype, name='bn')(x)
    return nn.relu(x) if self.relu else x


def max_pool_3x3_s2(x):
  """PyTorch `MaxPool2d(3, 2, 1)`: padding counts as -inf."""
  return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))


def upsample_nearest_2x(x):
  """PyTorch `nn.Upsample(scale_factor=2)` (mode='nearest') for NHWC."""
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


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
