"""1x1 convolutions on CPU: XLA's convolution against the matmul `layers.conv2d` uses there.

Forward pass and input gradient (the kernel gradient is a matmul either way) at FLANet-R101's
1x1 shapes at the benchmarks' batch 2, 256x256: layer1 at 64x64, layer2-4 at 32x32 (output
stride 8), the strided downsample of layer2 included. Timed round-robin, medians of --repeats.
Usage:
  python scripts/bench_conv1x1.py [--repeats 7]   (prints a Markdown table)
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

SHAPES = [  # (input H = W, C in, C out, stride): R101's 1x1 convs, batch 2 at 256x256
    (64, 128, 64, 1), (64, 64, 256, 1), (64, 256, 64, 1), (64, 256, 128, 1), (64, 256, 512, 2),
    (32, 128, 512, 1), (32, 512, 128, 1), (32, 1024, 256, 1), (32, 256, 1024, 1),
    (32, 2048, 512, 1), (32, 512, 2048, 1)]


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--repeats', type=int, default=7)
  args = parser.parse_args()
  print_ratio_header('input, C in → out, stride', 'XLA conv', 'matmul')
  for size, in_features, out_features, stride in SHAPES:
    rng = np.random.default_rng(size + in_features + out_features)
    x = jnp.asarray(rng.normal(size=(2, size, size, in_features)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(1, 1, in_features, out_features)) * 0.05, jnp.float32)
    runs = {}
    for name, conv in (('xla', layers._conv), ('matmul', layers._conv_on_platform)):
      forward = jax.jit(lambda x, k, conv=conv: conv(x, k, stride, 1, 1))
      d_out = jnp.asarray(rng.normal(size=forward(x, kernel).shape), jnp.float32)
      input_grad = jax.jit(lambda k, d, conv=conv: jax.linear_transpose(
          lambda x: conv(x, k, stride, 1, 1), x)(d)[0])
      runs[name, 'forward'] = lambda f=forward: f(x, kernel)
      runs[name, 'input gradient'] = lambda f=input_grad, d=d_out: f(kernel, d)
    print_ratio_rows(f'2×{size}×{size}, {in_features} → {out_features}, {stride}',
                     round_robin_medians(runs, args.repeats), 'xla', 'matmul',
                     ('forward', 'input gradient'))


if __name__ == '__main__':
  main()
