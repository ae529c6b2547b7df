"""The output modules' nearest-x2 upsampling + 3x3 conv, forward and backward, two ways.

  upsampled   the official form: upsample, then the 3x3 conv (XLA's autodiff)
  phases      layers.conv3x3_of_upsampled_2x: four 2x2 convolutions at the input resolution
              (one phase convolution), its kernel gradient summed back to the 3x3 taps
Shapes of FLANet-R101's output modules at the benchmarks' batch 2, 256x256 (32x32 features):
the main one (2560 -> 512) and the two auxiliary ones (512 and 1024 -> 64); `main-768`: the
main one at the paper's 768x768 crop, one image per device. Timed round-robin, medians of
--repeats. Usage:
  python scripts/bench_upsampled_conv.py [--repeats 5] [--shapes main,aux1,aux2]
      [--forms upsampled,phases]   (prints a Markdown table)
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

SHAPES = {'main': (2, 32, 32, 2560, 512), 'aux1': (2, 32, 32, 512, 64),  # B, H, W, Ci, Co
          'aux2': (2, 32, 32, 1024, 64), 'main-768': (1, 96, 96, 2560, 512)}


def upsampled(x, kernel):
  return layers._conv(jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2), kernel, 1, 1, 1)


FORMS = {'upsampled': upsampled, 'phases': layers.conv3x3_of_upsampled_2x}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--shapes', default='main,aux1,aux2', help=f'of {", ".join(SHAPES)}')
  parser.add_argument('--forms', default=','.join(FORMS), help=f'of {", ".join(FORMS)}')
  args = parser.parse_args()
  forms = {name: FORMS[name] for name in args.forms.split(',')}
  print('| B×H×W, C in → out | pass | ' + ' | '.join(f'{name} (ms)' for name in forms) + ' |')
  print('| --- | --- |' + ' ---: |' * len(forms))
  for shape in args.shapes.split(','):
    batch, height, width, in_features, out_features = SHAPES[shape]
    rng = np.random.default_rng(in_features)
    x = jnp.asarray(rng.normal(size=(batch, height, width, in_features)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(3, 3, in_features, out_features)) * 0.02, jnp.float32)
    d_out = jnp.asarray(rng.normal(size=(batch, 2 * height, 2 * width, out_features)),
                        jnp.float32)
    runs = {}
    for name, form in forms.items():
      forward = jax.jit(form)
      backward = jax.jit(lambda x, k, d, form=form: jax.vjp(form, x, k)[1](d))
      runs[name, 'forward'] = lambda forward=forward: forward(x, kernel)
      runs[name, 'backward'] = lambda backward=backward: backward(x, kernel, d_out)
    times = round_robin_medians(runs, args.repeats)
    for kind in ('forward', 'backward'):
      cells = ' | '.join(f'{times[name, kind] * 1e3:.0f}' for name in forms)
      print(f'| {batch}×{height}×{width}, {in_features} → {out_features} | {kind} | {cells} |',
            flush=True)


if __name__ == '__main__':
  main()
