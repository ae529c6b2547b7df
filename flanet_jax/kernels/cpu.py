"""Implementations of the models' operations (models/ops.py) tuned for XLA:CPU.

Each computes the plain operation's values and gradients (to float rounding) in a form that
XLA:CPU runs faster or with less memory; BENCHMARKS.md has the measurements behind each. They
are used where `config.model.kernels` selects them (`flanet_jax.kernels.select`): on CPU by
default, and never needed elsewhere.
"""

import functools

import jax
import jax.numpy as jnp

from flanet_jax.models import ops


def _conv_forward(x, kernel, strides: int, dilation: int, groups: int):
  """The convolution; a 1x1 one (groups 1) as a matmul over the channels, which XLA:CPU runs
  faster than its convolution (and so is its input gradient, the transposed matmul)."""
  if kernel.shape[:2] != (1, 1) or groups != 1:
    return ops.conv2d(x, kernel, strides, dilation, groups)
  return jnp.einsum('bhwc,co->bhwo', x[:, ::strides, ::strides], kernel[0, 0])


def kernel_grad_by_matmul(x, d_out, kernel_size: int, strides: int, dilation: int):
  """dL/dkernel of a convolution (groups 1) as one matmul per kernel tap.

  d_kernel[i,j,ci,co] = sum_{b,y,x} x_pad[b, y*s + i*d, x*s + j*d, ci] d_out[b,y,x,co].
  XLA:CPU lowers the kernel-gradient convolution to a slow path; as matmuls it runs at about
  the speed of the forward pass. For k > 1, d_out is transposed once to (Co, pixels), so that
  each tap's matmul reads its operands in (M, K) @ (K, N) order, the faster one on CPU.
  """
  k, pad = kernel_size, dilation * (kernel_size - 1) // 2
  batch, out_h, out_w, out_features = d_out.shape
  in_features = x.shape[3]
  accumulate = jnp.promote_types(x.dtype, jnp.float32)
  # Everything below is made from x once d_out exists: without the barrier XLA may hoist the
  # padded and shifted copies of x into the forward pass and keep them until the backward.
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
    # A loop over the taps, so that one shifted copy of x exists at a time (unrolled, XLA:CPU
    # makes all k*k copies first). Per sample, so that the loop holds no sum over a sharded
    # batch (XLA:CPU's collectives can deadlock inside loops); the batch is summed after it.
    d_kernel = jax.lax.map(tap_grad_per_sample, offsets).sum(axis=1)
  return d_kernel.transpose(0, 2, 1).reshape(k, k, in_features, out_features).astype(x.dtype)


def kernel_grad_flops(x_shape, kernel_shape) -> int:
  """FLOPs of a stride-1 convolution's kernel gradient (multiply-add = 2), counting the
  zero-padded border as the matmul form computes it."""
  batch, height, width, _ = x_shape
  k, _, in_features, out_features = kernel_shape
  return 2 * k * k * batch * height * width * in_features * out_features


# Below this size, XLA:CPU's own kernel gradient of a stride-1 k > 1 convolution is as fast as
# the matmuls on some CPUs and faster on others; above it the matmuls won on every CPU measured.
MATMUL_KERNEL_GRAD_MIN_FLOPS = 1e9


def _use_matmul_kernel_grad(x, kernel, strides: int, groups: int) -> bool:
  """1x1 convolutions, and stride-1 ones of a large kernel gradient; strided k > 1 and grouped
  convolutions keep XLA's."""
  if groups != 1:
    return False
  return kernel.shape[0] == 1 or (
      strides == 1 and kernel_grad_flops(x.shape, kernel.shape) >= MATMUL_KERNEL_GRAD_MIN_FLOPS)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def conv2d(x, kernel, strides: int = 1, dilation: int = 1, groups: int = 1):
  """`ops.conv2d`: 1x1 convolutions as matmuls; the kernel gradient of those and of large
  stride-1 ones one matmul per tap (`kernel_grad_by_matmul`)."""
  return _conv_forward(x, kernel, strides, dilation, groups)


def _conv2d_fwd(x, kernel, strides, dilation, groups):
  return _conv_forward(x, kernel, strides, dilation, groups), (x, kernel)


def _conv2d_bwd(strides, dilation, groups, residuals, d_out):
  x, kernel = residuals
  # The convolution is linear in each argument: transposing it skips the linearisation that
  # a VJP traces, which makes a deep network's train step trace faster.
  dx = jax.linear_transpose(
      lambda x: _conv_forward(x, kernel, strides, dilation, groups), x)(d_out)[0]
  if _use_matmul_kernel_grad(x, kernel, strides, groups):
    d_kernel = kernel_grad_by_matmul(x, d_out, kernel.shape[0], strides, dilation)
  else:
    d_kernel = jax.linear_transpose(
        lambda k: ops.conv2d(x, k, strides, dilation, groups), kernel)(d_out)[0]
  return dx, d_kernel


conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)


@jax.custom_vjp
def conv3x3_of_upsampled_2x(x, kernel):
  """`ops.conv3x3_of_upsampled_2x` with its kernel gradient summed back to the 3x3 taps per
  sample, before the sum over the batch: with the batch sharded, the cross-device sum is then
  of the 3x3 kernel's size, not of the 16/9 larger phase kernel's."""
  return ops.conv3x3_of_upsampled_2x(x, kernel)


def _conv3x3_of_upsampled_2x_fwd(x, kernel):
  return ops.conv3x3_of_upsampled_2x(x, kernel), (x, kernel)


def _conv3x3_of_upsampled_2x_bwd(residuals, d_out):
  x, kernel = residuals
  dx = jax.linear_transpose(lambda x: ops.conv3x3_of_upsampled_2x(x, kernel), x)(d_out)[0]
  # As in kernel_grad_by_matmul: the shifted copies of x are made in the backward pass.
  x, d_out = jax.lax.optimization_barrier((x, d_out))
  x_pad, (height, width) = ops.pad1(x), x.shape[1:3]
  phase_shape = jax.ShapeDtypeStruct((x.shape[0], height + 1, width + 1, 4 * kernel.shape[3]),
                                     d_out.dtype)
  d_phases = jax.linear_transpose(ops.interleave_phases, phase_shape)(d_out)[0]
  accumulate = jnp.promote_types(x.dtype, jnp.float32)
  out_features = kernel.shape[3]
  per_sample = {(i, j): jnp.einsum(  # (B, Ci, 4 Co): the phase kernel's tap (i, j), per sample
      'bhwc,bhwo->bco', x_pad[:, i:i + height + 1, j:j + width + 1], d_phases,
      preferred_element_type=accumulate) for i in (0, 1) for j in (0, 1)}

  def tap_grad(r, c):  # the 3x3 tap (r, c): every phase tap it was summed into
    terms = [per_sample[i, j][..., (2 * s + t) * out_features:(2 * s + t + 1) * out_features]
             for (s, i), rows in ops.PHASE_TAPS.items() if r in rows
             for (t, j), cols in ops.PHASE_TAPS.items() if c in cols]
    return functools.reduce(jnp.add, terms).sum(axis=0)

  d_kernel = jnp.stack([jnp.stack([tap_grad(r, c) for c in range(3)]) for r in range(3)])
  return dx, d_kernel.astype(kernel.dtype)


conv3x3_of_upsampled_2x.defvjp(_conv3x3_of_upsampled_2x_fwd, _conv3x3_of_upsampled_2x_bwd)


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
  return ops.max_pool_3x3_s2(x)


def max_pool_3x3_s2(x):
  """`ops.max_pool_3x3_s2` whose gradient goes to the first maximum of each window in
  row-major order (a NaN: the last NaN), as PyTorch's does, without XLA's select-and-scatter,
  which XLA:CPU runs slowly."""
  return _max_pool_first_max_grad(x, x.shape)


def _max_pool_fwd(x, shape):
  """The maximum and which tap holds it, PyTorch's rule. The tap index is kept rather than
  found again in the backward pass by comparing x with the maximum: XLA may recompute cheap
  producers of x there, a value an ulp off would then match no tap and lose its gradient."""
  del shape
  taps = _pool_taps(jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-jnp.inf))
  pooled, argmax = taps[0], jnp.zeros(taps[0].shape, jnp.int8)
  for t, tap in enumerate(taps[1:], start=1):
    better = (tap > pooled) | jnp.isnan(tap)
    pooled, argmax = jnp.where(better, tap, pooled), jnp.where(better, jnp.int8(t), argmax)
  return pooled, argmax


def _max_pool_bwd(shape, argmax, d_out):
  """Each tap's share of d_out put back where the tap was read: the transpose of the tap
  slicing, one fused element-wise pass."""
  batch, height, width, channels = shape
  zero = jnp.zeros((), d_out.dtype)
  shares = [jnp.where(argmax == t, d_out, zero) for t in range(9)]
  padded = jax.ShapeDtypeStruct((batch, height + 2, width + 2, channels), d_out.dtype)
  dx_pad, = jax.linear_transpose(_pool_taps, padded)(shares)
  return (dx_pad[:, 1:height + 1, 1:width + 1],)


_max_pool_first_max_grad.defvjp(_max_pool_fwd, _max_pool_bwd)


def mean_over_height(x):
  """`ops.mean_over_height` as a contraction: XLA:CPU reduces the middle axis of NHWC much
  more slowly than it contracts it."""
  height_mean = jnp.full((x.shape[1],), 1.0 / x.shape[1], x.dtype)
  return jnp.einsum('bhwc,h->bwc', x, height_mean)


def block_output(x):
  """x, computed once: XLA:CPU's loop fusion copies cheap element-wise producers into every
  consumer, so a residual stream (each block's BN affine, add and ReLU) was recomputed inside
  every later block's fusions, work quadratic in depth. Its fusion pass does not duplicate an
  'expensive' producer (a float divide is one), so x is divided by 1s computed at run time (a
  constant 1 would be simplified away). Dividing by 1 is exact: values and gradients are the
  same bit for bit (subnormals become 0, as in every XLA:CPU arithmetic op)."""
  # Element-wise, so each device computes its own ones (one element of a sharded x would be
  # sent to every device).
  v = jax.lax.stop_gradient(x)
  one = (v == v).astype(x.dtype) + (v != v).astype(x.dtype)  # 1 for every v, NaN included
  return x / one


OPS = ops.Ops(conv2d=conv2d, conv3x3_of_upsampled_2x=conv3x3_of_upsampled_2x,
              max_pool_3x3_s2=max_pool_3x3_s2, mean_over_height=mean_over_height,
              block_output=block_output, fla_recomputes_maps=True)
