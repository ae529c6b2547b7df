"""Converts a PyTorch checkpoint (.pth) into a flanet_jax variables checkpoint (Orbax).

  python scripts/convert_torch_weights.py resnet101-imagenet.pth weights/resnet101_deep \
      --arch resnet101_deep

Strict: any missing, unexpected (bar the ImageNet classifier of a backbone, which is dropped
and listed) or wrongly shaped key aborts with the full list, and nothing is written. DST must
not exist.
Use the result with `init_from` in a training config, or `flanet_jax.pretrained.init_from`.
"""

import argparse
import os
import sys

from flanet_jax import checkpoint
from flanet_jax.convert import ARCHS, ConversionError, convert_file


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('src', help='PyTorch checkpoint (.pth)')
  parser.add_argument('dst', help='output directory (must not exist)')
  parser.add_argument('--arch', required=True, choices=sorted(ARCHS),
                      help='; '.join(f'{a.name}: {a.description}' for a in ARCHS.values()))
  parser.add_argument('--naming', default=None,
                      help='key naming of the checkpoint (default: detected), e.g. official, csail')
  args = parser.parse_args(argv)
  try:
    if os.path.exists(args.dst):  # fail before the slow part
      raise FileExistsError(f'{os.path.abspath(args.dst)} already exists; refusing to overwrite it')
    conversion = convert_file(args.src, args.arch, args.naming)
    checkpoint.save_variables(args.dst, conversion.variables)
  except (ConversionError, FileExistsError, FileNotFoundError, ValueError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  print(f'{args.src} -> {os.path.abspath(args.dst)}')
  print(conversion.summary())
  return 0


if __name__ == '__main__':
  sys.exit(main())
