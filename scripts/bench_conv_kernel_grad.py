"""The conv kernel gradient on CPU: XLA's own against layers.py's per-tap matmuls.

`layers.conv2d` computes the kernel gradient of 1x1 convolutions, and of stride-1 ones whose
gradient costs >= 1 GFLOP, as one matmul per kernel tap (`_kernel_grad_by_matmul`); this script
measures both forms over the 3x3 shapes of our backbones (batch 2; 64-192 channels: stems,
HRNet branches; 256-512: ResNet layer3/4 and the head) so the threshold can be checked.
Both forms are compiled and timed alternately, medians of --repeats. Usage:
  python scripts/bench_conv_kernel_grad.py [--repeats 5]   (prints a Markdown table)
"""

import argparse
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from bench_timing import round_robin_medians  # noqa: E402  (scripts/ is on sys.path)
from flanet_jax.models import layers  # noqa: E402

# (spatial size, input channels, output channels) of 3x3 stride-1 convolutions, batch 2.
SHAPES = [(32, 64, 64), (32, 128, 128), (32, 192, 192), (32, 256, 256), (32, 512, 512),
          (64, 48, 48), (64, 64, 64), (64, 64, 128), (64, 96, 96), (64, 128, 128),
          (128, 32, 32), (128, 64, 64), (128, 64, 128), (128, 96, 96)]


def kernel_grads(size, in_features, out_features):
  """(XLA's kernel gradient, the per-tap matmul one), jitted, and their inputs."""
  rng = np.random.default_rng(size + in_features)
  x = jnp.asarray(rng.normal(size=(2, size, size, in_features)), jnp.float32)
  d_out = jnp.asarray(rng.normal(size=(2, size, size, out_features)), jnp.float32)
  kernel = jnp.zeros((3, 3, in_features, out_features))
  xla = jax.jit(lambda x, d: jax.vjp(lambda k: layers._conv(x, k, 1, 1, 1), kernel)[1](d)[0])
  matmul = jax.jit(lambda x, d: layers._kernel_grad_by_matmul(x, d, 3, 1, 1))
  return xla, matmul, (x, d_out)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--repeats', type=int, default=5)
  args = parser.parse_args()
  print('| H = W | C in -> out | kernel-gradient GFLOP | XLA (ms) | matmuls (ms) | XLA / matmuls '
        '| layers.py uses |')
  print('| ---: | --- | ---: | ---: | ---: | ---: | --- |')
  for size, in_features, out_features in SHAPES:
    xla, matmul, inputs = kernel_grads(size, in_features, out_features)
    times = round_robin_medians({'xla': lambda: xla(*inputs), 'matmul': lambda: matmul(*inputs)},
                                args.repeats)
    t_xla, t_matmul = times['xla'], times['matmul']
    kernel = jnp.zeros((3, 3, in_features, out_features))
    chosen = layers._use_matmul_kernel_grad(inputs[0], kernel, 1, 1)
    gflop = layers.kernel_grad_flops(inputs[0].shape, kernel.shape) / 1e9
    print(f'| {size} | {in_features} -> {out_features} | {gflop:.2f} | {t_xla * 1e3:.1f} | '
          f'{t_matmul * 1e3:.1f} | {t_xla / t_matmul:.2f} | {"matmuls" if chosen else "XLA"} |',
          flush=True)


if __name__ == '__main__':
  main()
