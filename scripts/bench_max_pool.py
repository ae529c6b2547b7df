"""The stem max-pool's gradient: XLA's own against layers.max_pool_3x3_s2's.

XLA differentiates a max-pool into a select-and-scatter, which XLA:CPU lowers to a
reduce-window carrying four index arrays; layers.max_pool_3x3_s2's forward pass keeps which
of the nine strided taps holds each window's maximum, and its backward pass puts d_out there
(element-wise passes; the gradient to each window's first maximum in both). Shapes of the
stems: ResNet's deep stem (128 channels) at the benchmarks' 256x256 batch 2 and at the paper's
768x768 crop, batch 1 per device; ShuffleNetV2's (24).
Timed round-robin, medians of --repeats. Usage:
  python scripts/bench_max_pool.py [--repeats 10]   (prints a Markdown table)
"""

import argparse
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from bench_timing import (print_ratio_header, print_ratio_rows,  # noqa: E402  (scripts/ on path)
                          round_robin_medians)
from flanet_jax.models import layers  # noqa: E402

SHAPES = [(2, 128, 128, 128), (1, 384, 384, 128), (2, 256, 256, 24)]  # pool inputs, NHWC


def cases(pool, x, d_out):
  """Jitted (backward alone, ReLU -> pool forward and backward) of `pool`."""
  backward = jax.jit(lambda x, d: jax.vjp(pool, x)[1](d)[0])
  both = jax.jit(jax.grad(lambda x, d: jnp.vdot(pool(jax.nn.relu(x)), d)))
  return {'backward': lambda: backward(x, d_out), 'forward+backward': lambda: both(x, d_out)}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--repeats', type=int, default=10)
  args = parser.parse_args()
  print_ratio_header('input (NHWC)', 'XLA', 'ours')
  for shape in SHAPES:
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    d_out = jnp.asarray(rng.normal(size=layers._max_pool(x).shape), jnp.float32)
    runs = {}
    for name, pool in (('xla', layers._max_pool), ('ours', layers.max_pool_3x3_s2)):
      runs.update({(name, p): f for p, f in cases(pool, x, d_out).items()})
    print_ratio_rows('×'.join(map(str, shape)), round_robin_medians(runs, args.repeats), 'xla',
                     'ours', ('backward', 'forward+backward'))


if __name__ == '__main__':
  main()
