"""FLA block memory and time: all C x C maps at once against rows/columns in chunks.

The block at FLANet's size (1x96x96x512), fp32 and bf16 compute, for chunk sizes None (all at
once) and --chunks. Memory: XLA's compile-time peak temporary bytes (`memory_analysis()`),
compiled without XLA:CPU's YNNPACK library fusions, whose internal buffers the analysis does
not report (as benchmarks/bench_attention.py), of the forward pass (eval) and of the training
pass (forward + backward, train-mode BN, gradients of input and parameters). Time: CPU
seconds of the training pass, median of --repeats rounds, each round timing every variant
once. Usage:
  python benchmarks/bench_fla_memory.py [--chunks 8,16,32] [--repeats 3]   (prints a Markdown table)
"""

import argparse
import functools

import jax
import jax.numpy as jnp
import numpy as np

from measure import NO_LIBRARY_FUSIONS, round_robin_medians  # benchmarks/ is on sys.path
from flanet_jax import kernels
from flanet_jax.models.fla import FullyAttentionalBlock

SHAPE = (1, 96, 96, 512)


def programs(chunk_size, dtype):
  """(forward, training pass) of the block, jitted, and its variables (gamma 0.5)."""
  # The hand-written backward pass, as model.kernels='auto' runs on every platform.
  block = FullyAttentionalBlock(SHAPE[-1], dtype=dtype, chunk_size=chunk_size,
                                ops=kernels.select('auto'))
  variables = block.init(jax.random.key(0), jnp.zeros((1, 4, 4, SHAPE[-1])), train=False)
  variables['params']['gamma'] = jnp.asarray(0.5)

  def forward(variables, x):
    return block.apply(variables, x, train=False)

  def training(params, x):
    def loss(params, x):
      y, _ = block.apply({'params': params, 'batch_stats': variables['batch_stats']}, x,
                         train=True, mutable=['batch_stats'])
      return jnp.sum(y.astype(jnp.float32) ** 2)
    return jax.grad(loss, argnums=(0, 1))(params, x)

  return forward, training, variables


def temp_mb(fn, *args):
  compiled = jax.jit(fn).lower(*args).compile(NO_LIBRARY_FUSIONS)
  return compiled.memory_analysis().temp_size_in_bytes / 1e6


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--chunks', default='8,16,32')
  parser.add_argument('--repeats', type=int, default=3)
  args = parser.parse_args()
  chunks = [None] + [int(c) for c in args.chunks.split(',')]
  x = np.random.default_rng(0).normal(size=SHAPE).astype(np.float32)
  rows, timed = {}, {}
  for dtype in (jnp.float32, jnp.bfloat16):
    for chunk in chunks:
      forward, training, variables = programs(chunk, dtype)
      rows[dtype, chunk] = (temp_mb(forward, variables, x),
                            temp_mb(training, variables['params'], x))
      timed[dtype, chunk] = functools.partial(jax.jit(training), variables['params'], x)
  times = round_robin_medians(timed, args.repeats)

  print('| Compute | `fla_chunk_size` | Forward temp (MB) | Forward+backward temp (MB) | '
        'Forward+backward time (s) |')
  print('| --- | --- | ---: | ---: | ---: |')
  for (dtype, chunk), (fwd, train) in rows.items():
    print(f'| {jnp.dtype(dtype).name} | {chunk or "0 (all at once)"} | {fwd:.1f} | {train:.1f} | '
          f'{times[dtype, chunk]:.2f} |')


if __name__ == '__main__':
  main()
