"""Building blocks shared by every model, with PyTorch-equivalent semantics.

The port must reproduce the original PyTorch numerics, so:
- convolutions use explicit symmetric padding (PyTorch's `padding=p`), never 'SAME', whose
  asymmetric padding of strided convs shifts the sampling grid;
- convolution kernels use Kaiming normal with gain 1 (`kaiming_normal_(w, a=1)`): std 1/sqrt(fan_in);
- Linear layers and conv biases use PyTorch's default uniform(±1/sqrt(fan_in));
- BatchNorm uses eps 1e-5 and PyTorch momentum 0.1 (Flax momentum 0.9);
- bilinear resizing follows `align_corners=True` (FLANet) or `False` (HRNet's fuse layers).
"""

import functools
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


def _conv(x, kernel, strides: int, dilation: int, groups: int):
  pad = dilation * (kernel.shape[0] - 1) // 2
  return jax.lax.conv_general_dilated(
      x, kernel, window_strides=(strides, strides), padding=((pad, pad), (pad, pad)),
      rhs_dilation=(dilation, dilation), dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
      feature_group_count=groups)


def _conv_on_platform(x, kernel, strides: int, dilation: int, groups: int):
  """`_conv`, except a 1x1 one (groups 1) on CPU: a matmul over the channels, and so its input
  gradient too. XLA:CPU ran ResNet's 1x1 convolutions up to 2x slower as convolutions
  (scripts/bench_conv1x1.py); other platforms keep XLA's convolution."""
  xla = lambda x, kernel: _conv(x, kernel, strides, dilation, groups)
  if kernel.shape[:2] != (1, 1) or groups != 1:
    return xla(x, kernel)
  matmul = lambda x, kernel: jnp.einsum('bhwc,co->bhwo', x[:, ::strides, ::strides], kernel[0, 0])
  return jax.lax.platform_dependent(x, kernel, cpu=matmul, default=xla)


def _kernel_grad_by_matmul(x, d_out, kernel_size: int, strides: int, dilation: int):
  """dL/dkernel of `_conv` (groups 1) as one matmul per kernel tap.

  d_kernel[i,j,ci,co] = sum_{b,y,x} x_pad[b, y*s + i*d, x*s + j*d, ci] d_out[b,y,x,co].
  XLA:CPU lowers the kernel-gradient convolution to a slow path (3-10x slower than the forward
  convolution for ResNet's 1x1 convolutions and wide 3x3 ones); as matmuls they run at about
  the speed of the forward pass. For k > 1, d_out is transposed once to (Co, pixels), so each
  tap's matmul reads (M, K) @ (K, N): contracting both operands over their leading pixel axis
  ran 10-20% slower at most of our 3x3 shapes. (The same for 1x1 kernels made FLANet-R101's
  CPU train step 7% slower, so those keep the transposed-operand matmul; BENCHMARKS.md.)
  """
  k, pad = kernel_size, dilation * (kernel_size - 1) // 2
  batch, out_h, out_w, out_features = d_out.shape
  in_features = x.shape[3]
  accumulate = jnp.promote_types(x.dtype, jnp.float32)
  # Everything below is made from x once d_out exists: without the barrier XLA may hoist the
  # padded and shifted copies of x into the forward pass and keep them until the backward.
  # (XLA:CPU drops barriers before scheduling; still, without them here and in
  # conv3x3_of_upsampled_2x, FLANet-R101's step at 2x256x256 compiled to 15 MB more temp.)
  x, d_out = jax.lax.optimization_barrier((x, d_out))
  if k == 1:  # (Co, N) @ (N, Ci)
    d_kernel = jnp.matmul(d_out.reshape(-1, out_features).T,
                          x[:, ::strides, ::strides].reshape(-1, in_features),
                          preferred_element_type=accumulate)[None]
  else:
    if strides != 1:
      raise ValueError('the per-tap kernel gradient of a k > 1 kernel needs stride 1')
    x = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    d_out_t = d_out.reshape(batch, -1, out_features).transpose(0, 2, 1)  # (B, Co, pixels)
    offsets = jnp.asarray([(i * dilation, j * dilation) for i in range(k) for j in range(k)])

    def tap_grad_per_sample(offset):  # (B, Co, Ci)
      tap = jax.lax.dynamic_slice(x, (0, *offset, 0), (batch, out_h, out_w, in_features))
      return jnp.einsum('bon,bni->boi', d_out_t, tap.reshape(batch, -1, in_features),
                        preferred_element_type=accumulate)
    # A loop over the taps, so one shifted copy of x exists at a time (unrolled, XLA:CPU made
    # all k*k copies first: 265 against 125 MB for the FLA block's training pass). Per sample,
    # so that the loop holds no sum over a sharded batch: XLA:CPU's collectives can deadlock
    # inside loops (8 simulated devices did); the batch is summed once, after it.
    d_kernel = jax.lax.map(tap_grad_per_sample, offsets).sum(axis=1)
  return d_kernel.transpose(0, 2, 1).reshape(k, k, in_features, out_features).astype(x.dtype)


def kernel_grad_flops(x_shape, kernel_shape) -> int:
  """FLOPs of a stride-1 convolution's kernel gradient (multiply-add = 2), counting the
  zero-padded border as the matmul form computes it (XLA's cost analysis leaves it out)."""
  batch, height, width, _ = x_shape
  k, _, in_features, out_features = kernel_shape
  return 2 * k * k * batch * height * width * in_features * out_features


def _use_matmul_kernel_grad(x, kernel, strides: int, groups: int) -> bool:
  """Where the matmul form is faster on CPU (scripts/bench_conv_kernel_grad.py): 1x1
  convolutions, and stride-1 ones whose kernel gradient costs >= 1 GFLOP, where the matmuls won
  on both CPUs measured (below it they disagree; strided ones keep XLA's). Grouped
  convolutions keep XLA's."""
  if groups != 1:
    return False
  return kernel.shape[0] == 1 or (strides == 1 and
                                  kernel_grad_flops(x.shape, kernel.shape) >= 1e9)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def conv2d(x, kernel, strides: int = 1, dilation: int = 1, groups: int = 1):
  """NHWC x HWIO convolution with PyTorch's symmetric padding `dilation * (k - 1) // 2`.

  XLA's convolution, its input gradient and its kernel gradient, except on CPU where XLA:CPU
  is slow: 1x1 convolutions are matmuls (`_conv_on_platform`), and the kernel gradient of
  those and of stride-1 ones of >= 1 GFLOP is one matmul per tap (`_kernel_grad_by_matmul`).
  Same values either way, to float rounding.
  """
  return _conv_on_platform(x, kernel, strides, dilation, groups)


def _conv2d_fwd(x, kernel, strides, dilation, groups):
  return _conv_on_platform(x, kernel, strides, dilation, groups), (x, kernel)


def _conv2d_bwd(strides, dilation, groups, residuals, d_out):
  x, kernel = residuals
  conv = lambda x, kernel: _conv_on_platform(x, kernel, strides, dilation, groups)
  # The convolution is linear in each argument: transposing it skips the linearisation a VJP
  # traces (R101's train step traced ~20% faster; BENCHMARKS.md "Trace time").
  dx = jax.linear_transpose(lambda x: conv(x, kernel), x)(d_out)[0]
  xla_kernel_grad = lambda x, d_out: jax.linear_transpose(
      lambda k: _conv(x, k, strides, dilation, groups), kernel)(d_out)[0]
  if not _use_matmul_kernel_grad(x, kernel, strides, groups):
    return dx, xla_kernel_grad(x, d_out)
  matmul_kernel_grad = lambda x, d_out: _kernel_grad_by_matmul(x, d_out, kernel.shape[0],
                                                               strides, dilation)
  d_kernel = jax.lax.platform_dependent(x, d_out, cpu=matmul_kernel_grad,
                                        default=xla_kernel_grad)
  return dx, d_kernel


conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)


# An output row 2a + s of a 3x3 conv (padding 1) of the nearest-x2-upsampled input reads input
# rows a-1, a, a (s = 0) or a, a, a+1 (s = 1): per phase s, 2 input taps i (offsets -1, 0 for
# s = 0; 0, +1 for s = 1), whose weights are sums of 3x3 taps. (s, i) -> the 3x3 taps summed:
_PHASE_TAPS = {(0, 0): (0,), (0, 1): (1, 2), (1, 0): (0, 1), (1, 1): (2,)}


def _phase_taps(kernel):
  """{(phase, tap): kernel taps summed} along axis 0 (3 taps) for a nearest-x2-upsampled input."""
  return {key: functools.reduce(jnp.add, [kernel[r] for r in taps])
          for key, taps in _PHASE_TAPS.items()}


def _phase_kernel(kernel):
  """(3, 3, Ci, Co) -> (2, 2, Ci, 4 * Co): the four phases' 2x2 kernels stacked on the output
  channels, phase (s, t) at channels [(2s + t) Co, (2s + t + 1) Co)."""
  in_features, out_features = kernel.shape[2:]
  rows = _phase_taps(kernel)  # (s, i) -> (3, Ci, Co) column taps
  cols = {key: _phase_taps(taps) for key, taps in rows.items()}  # (t, j) -> (Ci, Co)
  phase_kernel = jnp.stack([
      jnp.stack([
          jnp.stack([cols[s, i][t, j] for s in (0, 1) for t in (0, 1)], axis=1)  # (Ci, 4, Co)
          for j in (0, 1)]) for i in (0, 1)])
  return phase_kernel.reshape(2, 2, in_features, 4 * out_features)


def _interleave_phases(y):
  """(B, H + 1, W + 1, 4 Co) phase outputs -> (B, 2H, 2W, Co): phase (s, t) of output pixel
  (a, b) sits at y[a + s, b + t], and becomes pixel (2a + s, 2b + t)."""
  batch, height, width = y.shape[0], y.shape[1] - 1, y.shape[2] - 1
  y = y.reshape(batch, height + 1, width + 1, 2, 2, -1)
  phases = [jnp.stack([y[:, s:s + height, t:t + width, s, t] for t in (0, 1)], axis=3)
            for s in (0, 1)]
  return jnp.stack(phases, axis=2).reshape(batch, 2 * height, 2 * width, -1)


def _pad1(x):
  return jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))


def _conv3x3_of_upsampled_2x(x, kernel):
  return _interleave_phases(_conv(_pad1(x), _phase_kernel(kernel), 1, 1, 1))


@jax.custom_vjp
def conv3x3_of_upsampled_2x(x, kernel):
  """A 3x3 conv (HWIO kernel, padding 1) of x upsampled x2 (nearest), without upsampling x.

  Each of the four output phases (even/odd row, even/odd column) is a 2x2 convolution of x
  with summed taps, computed as one 2x2 convolution of x padded by 1 with the phases stacked
  along the output channels: 16 taps at x's resolution instead of 9 at twice it, 2.25x fewer
  FLOPs. Same values to float rounding. The kernel gradient is summed back to the 3x3 taps per
  sample, before the sum over the batch: with the batch sharded, the cross-device sum is then
  of the 3x3 kernel's size, not of the 16/9 larger phase kernel's.
  """
  return _conv3x3_of_upsampled_2x(x, kernel)


def _conv3x3_of_upsampled_2x_fwd(x, kernel):
  return _conv3x3_of_upsampled_2x(x, kernel), (x, kernel)


def _conv3x3_of_upsampled_2x_bwd(residuals, d_out):
  x, kernel = residuals
  dx = jax.linear_transpose(lambda x: _conv3x3_of_upsampled_2x(x, kernel), x)(d_out)[0]
  # As in _kernel_grad_by_matmul: the shifted copies of x are made in the backward pass.
  x, d_out = jax.lax.optimization_barrier((x, d_out))
  x_pad, (height, width) = _pad1(x), x.shape[1:3]
  phase_shape = jax.ShapeDtypeStruct((x.shape[0], height + 1, width + 1, 4 * kernel.shape[3]),
                                     d_out.dtype)
  d_phases = jax.linear_transpose(_interleave_phases, phase_shape)(d_out)[0]
  accumulate = jnp.promote_types(x.dtype, jnp.float32)
  out_features = kernel.shape[3]
  per_sample = {(i, j): jnp.einsum(  # (B, Ci, 4 Co): the phase kernel's tap (i, j), per sample
      'bhwc,bhwo->bco', x_pad[:, i:i + height + 1, j:j + width + 1], d_phases,
      preferred_element_type=accumulate) for i in (0, 1) for j in (0, 1)}

  def tap_grad(r, c):  # the 3x3 tap (r, c): every phase tap it was summed into
    terms = [per_sample[i, j][..., (2 * s + t) * out_features:(2 * s + t + 1) * out_features]
             for (s, i), rows in _PHASE_TAPS.items() if r in rows
             for (t, j), cols in _PHASE_TAPS.items() if c in cols]
    return functools.reduce(jnp.add, terms).sum(axis=0)

  d_kernel = jnp.stack([jnp.stack([tap_grad(r, c) for c in range(3)]) for r in range(3)])
  return dx, d_kernel.astype(kernel.dtype)


conv3x3_of_upsampled_2x.defvjp(_conv3x3_of_upsampled_2x_fwd, _conv3x3_of_upsampled_2x_bwd)


def rematerialised(block, remat: bool):
  """`block` (a module class called as `block(...)(x, train)`), wrapped in `nn.remat` if
  `remat`: its activations are recomputed in the backward pass instead of stored, and only its
  input is kept. `train` is static. Parameter names and values are unchanged."""
  return nn.remat(block, static_argnums=(2,)) if remat else block  # (self, x, train)


class Conv(nn.Module):
  """2-D convolution (NHWC, HWIO kernel) with PyTorch's symmetric padding.

  Padding is `dilation * (kernel_size - 1) // 2` on every side, as PyTorch's `padding=p`.
  `upsample_2x`: the input is first upsampled x2 (nearest), as `nn.Upsample(scale_factor=2)`
  before the conv; computed by `conv3x3_of_upsampled_2x`, the kernel is the same 3x3 one.
  Parameters are `kernel` and optionally `bias` directly under this module, so converted
  PyTorch weights map one to one. `groups` > 1 gives grouped/depthwise convolution.
  """
  features: int
  kernel_size: int = 3
  strides: int = 1
  dilation: int = 1
  groups: int = 1
  use_bias: bool = False
  upsample_2x: bool = False  # convolve the nearest-x2 upsampled input (3x3, stride 1 only)
  dtype: Dtype = jnp.float32

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
      y = conv3x3_of_upsampled_2x(x, kernel)
    else:
      y = conv2d(x, kernel, self.strides, self.dilation, self.groups)
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


def _divided_by_runtime_ones(x):
  # Element-wise, so each device computes its own (one element of a sharded x would be sent
  # to every device).
  v = jax.lax.stop_gradient(x)
  one = (v == v).astype(x.dtype) + (v != v).astype(x.dtype)  # 1 for every v, NaN included
  return x / one


def materialised(x):
  """x, unchanged, computed once: XLA:CPU may not recompute it inside later fusions.

  XLA:CPU's loop fusion copies cheap element-wise producers into every consumer, so a residual
  stream (each block's BN affine, add and ReLU) was recomputed inside every later block's
  fusions: work quadratic in depth, about 2 s of FLANet-R101's 13 s CPU train step. Its fusion
  pass does not copy an 'expensive' producer (a float divide is one) into several users, so on
  CPU x is divided by 1s computed at run time (a constant 1 would be simplified away). Dividing
  by 1 is exact there: values and gradients are the same bit for bit (subnormals become 0, as
  in every XLA:CPU arithmetic op, the add that makes a residual stream included). Other
  platforms get x itself (their fusion passes weigh costs; a TPU divide need not be exact).
  """
  return jax.lax.platform_dependent(x, cpu=_divided_by_runtime_ones, default=lambda x: x)


class ConvBN(nn.Module):
  """Conv (no bias) -> BatchNorm -> optional ReLU."""
  features: int
  kernel_size: int = 3
  strides: int = 1
  dilation: int = 1
  relu: bool = True
  upsample_2x: bool = False  # nearest x2 upsampling before the conv (see Conv)
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    x = Conv(self.features, self.kernel_size, self.strides, self.dilation,
             upsample_2x=self.upsample_2x, dtype=self.dtype, name='conv')(x)
    x = batch_norm(train, self.dtype, name='bn')(x)
    return nn.relu(x) if self.relu else x


def _max_pool(x):
  return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))


def _pad_for_pool(x):
  return jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-jnp.inf)


def _pool_taps(x_pad):
  """The nine taps (3x3 window, stride 2) of the padded input, each the size of the output."""
  batch, height, width, channels = x_pad.shape
  out_h, out_w = (height - 1) // 2, (width - 1) // 2
  return [jax.lax.slice(x_pad, (0, i, j, 0), (batch, i + 2 * out_h - 1, j + 2 * out_w - 1,
                                              channels), (1, 2, 2, 1))
          for i in range(3) for j in range(3)]


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _max_pool_first_max_grad(x, shape):
  del shape
  return _max_pool(x)


def max_pool_3x3_s2(x):
  """PyTorch `MaxPool2d(3, 2, 1)`: padding counts as -inf. The gradient goes to the first
  maximum of each window in row-major order (a NaN: the last NaN), as PyTorch's does."""
  return _max_pool_first_max_grad(x, x.shape)


def _max_pool_fwd(x, shape):
  """The maximum and which tap holds it, PyTorch's rule. The tap index is kept rather than
  found again in the backward pass by comparing x with the maximum: XLA may recompute cheap
  producers of x there, and the comparing version lost gradient in the 8-device step."""
  del shape
  taps = _pool_taps(_pad_for_pool(x))
  pooled, argmax = taps[0], jnp.zeros(taps[0].shape, jnp.int8)
  for t, tap in enumerate(taps[1:], start=1):
    better = (tap > pooled) | jnp.isnan(tap)
    pooled, argmax = jnp.where(better, tap, pooled), jnp.where(better, jnp.int8(t), argmax)
  return pooled, argmax


def _max_pool_bwd(shape, argmax, d_out):
  """Each tap's share of d_out put back where the tap was read (the transpose of the tap
  slicing: one fused element-wise pass). XLA's own select-and-scatter gradient took 3-7x
  longer on CPU (4 index iotas and a 5-output reduce-window; scripts/bench_max_pool.py)."""
  batch, height, width, channels = shape
  zero = jnp.zeros((), d_out.dtype)
  shares = [jnp.where(argmax == t, d_out, zero) for t in range(9)]
  padded = jax.ShapeDtypeStruct((batch, height + 2, width + 2, channels), d_out.dtype)
  dx_pad, = jax.linear_transpose(_pool_taps, padded)(shares)
  return (dx_pad[:, 1:height + 1, 1:width + 1],)


_max_pool_first_max_grad.defvjp(_max_pool_fwd, _max_pool_bwd)


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
