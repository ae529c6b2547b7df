"""The operations a backend may replace, in their plain form, and the set the models call.

Every model module takes `ops: Ops` and calls these through it, so a backend can substitute
faster implementations of the same functions at one point (`flanet_jax.kernels.select`, from
`config.model.kernels`) without touching the models. The plain forms below are XLA operations
with PyTorch's semantics, differentiated by JAX; a replacement must compute the same values
and gradients (tests/test_kernels.py checks the project's own).
"""

import dataclasses
import functools
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp


def conv2d(x, kernel, strides: int = 1, dilation: int = 1, groups: int = 1):
  """NHWC x HWIO convolution with PyTorch's symmetric padding `dilation * (k - 1) // 2`.

  Explicit symmetric padding, never 'SAME': 'SAME' pads a strided convolution asymmetrically,
  which shifts the sampling grid against PyTorch's.
  """
  pad = dilation * (kernel.shape[0] - 1) // 2
  return jax.lax.conv_general_dilated(
      x, kernel, window_strides=(strides, strides), padding=((pad, pad), (pad, pad)),
      rhs_dilation=(dilation, dilation), dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
      feature_group_count=groups)


# An output row 2a + s of a 3x3 conv (padding 1) of the nearest-x2-upsampled input reads input
# rows a-1, a, a (s = 0) or a, a, a+1 (s = 1): per phase s, 2 input taps i (offsets -1, 0 for
# s = 0; 0, +1 for s = 1), whose weights are sums of 3x3 taps. (s, i) -> the 3x3 taps summed:
PHASE_TAPS = {(0, 0): (0,), (0, 1): (1, 2), (1, 0): (0, 1), (1, 1): (2,)}


def _phase_taps(kernel):
  """{(phase, tap): kernel taps summed} along axis 0 (3 taps) for a nearest-x2-upsampled input."""
  return {key: functools.reduce(jnp.add, [kernel[r] for r in taps])
          for key, taps in PHASE_TAPS.items()}


def phase_kernel(kernel):
  """(3, 3, Ci, Co) -> (2, 2, Ci, 4 * Co): the four phases' 2x2 kernels stacked on the output
  channels, phase (s, t) at channels [(2s + t) Co, (2s + t + 1) Co)."""
  in_features, out_features = kernel.shape[2:]
  rows = _phase_taps(kernel)  # (s, i) -> (3, Ci, Co) column taps
  cols = {key: _phase_taps(taps) for key, taps in rows.items()}  # (t, j) -> (Ci, Co)
  stacked = jnp.stack([
      jnp.stack([
          jnp.stack([cols[s, i][t, j] for s in (0, 1) for t in (0, 1)], axis=1)  # (Ci, 4, Co)
          for j in (0, 1)]) for i in (0, 1)])
  return stacked.reshape(2, 2, in_features, 4 * out_features)


def interleave_phases(y):
  """(B, H + 1, W + 1, 4 Co) phase outputs -> (B, 2H, 2W, Co): phase (s, t) of output pixel
  (a, b) sits at y[a + s, b + t], and becomes pixel (2a + s, 2b + t)."""
  batch, height, width = y.shape[0], y.shape[1] - 1, y.shape[2] - 1
  y = y.reshape(batch, height + 1, width + 1, 2, 2, -1)
  phases = [jnp.stack([y[:, s:s + height, t:t + width, s, t] for t in (0, 1)], axis=3)
            for s in (0, 1)]
  return jnp.stack(phases, axis=2).reshape(batch, 2 * height, 2 * width, -1)


def pad1(x):
  return jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))


def conv3x3_of_upsampled_2x(x, kernel):
  """A 3x3 conv (HWIO kernel, padding 1) of x upsampled x2 (nearest), without upsampling x.

  Each of the four output phases (even/odd row, even/odd column) is a 2x2 convolution of x
  with summed taps, computed as one 2x2 convolution of x padded by 1 with the phases stacked
  along the output channels: the same values with 2.25x fewer FLOPs on every platform (16 taps
  at x's resolution instead of 9 at twice it), which is why even the plain form uses it.
  """
  return interleave_phases(conv2d(pad1(x), phase_kernel(kernel)))


def max_pool_3x3_s2(x):
  """PyTorch `MaxPool2d(3, 2, 1)`: the padding counts as -inf."""
  return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))


def mean_over_height(x):
  """(B, H, W, C) -> (B, W, C): the FLA block's column pooling."""
  return x.mean(axis=1)


def block_output(x):
  """A residual block's output, which the following blocks read: a backend may make sure it
  is computed once rather than recomputed inside its readers. Plain: x itself."""
  return x


@dataclasses.dataclass(frozen=True)
class Ops:
  """The replaceable operations. `fla_recomputes_maps`: the FLA block uses its hand-written
  backward pass, which recomputes the C x C attention maps instead of storing them (fla.py);
  False differentiates its forward pass with JAX, so that `jax.jvp` works too."""
  conv2d: Callable = conv2d
  conv3x3_of_upsampled_2x: Callable = conv3x3_of_upsampled_2x
  max_pool_3x3_s2: Callable = max_pool_3x3_s2
  mean_over_height: Callable = mean_over_height
  block_output: Callable = block_output
  fla_recomputes_maps: bool = False


PLAIN = Ops()
