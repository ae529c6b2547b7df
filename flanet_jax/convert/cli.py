"""Converts a PyTorch checkpoint (.pth) into a flanet_jax variables checkpoint (Orbax).

  flanet-jax-convert resnet101-imagenet.pth weights/resnet101_deep --arch resnet101_deep

Strict: any missing, unexpected (bar the ImageNet classifier of a backbone, which is dropped
and listed) or wrongly shaped key aborts with the full list, and nothing is written. DST must
not exist.
Use the result with `init_from` in a training config, or `flanet_jax.pretrained.init_from`.
"""

import argparse
import os
import sys

from flanet_jax import checkpoint, errors
from flanet_jax.convert import ARCHS, convert_file


class _ArgumentParser(argparse.ArgumentParser):
  """Command-line mistakes as a UserError (one `error:` line, status 1), like flanet-jax."""

  def error(self, message):
    raise errors.UserError(f'{message} (see {self.prog} --help)')


def _parser() -> argparse.ArgumentParser:
  parser = _ArgumentParser(prog='flanet-jax-convert', description=__doc__.split('\n\n')[0])
  parser.add_argument('src', help='PyTorch checkpoint (.pth)')
  parser.add_argument('dst', help='output directory (must not exist)')
  parser.add_argument('--arch', required=True, choices=sorted(ARCHS),
                      help='; '.join(f'{a.name}: {a.description}' for a in ARCHS.values()))
  parser.add_argument('--naming', default=None,
                      help='key naming of the checkpoint (default: detected), e.g. official, csail')
  parser.add_argument('--verbose', action='store_true',
                      help='on an error in the input, show its traceback too')
  return parser


def main(argv=None) -> None:
  """Converts; raises a UserError (a ConversionError lists every offending key) on bad input."""
  args = _parser().parse_args(argv)
  if os.path.exists(args.dst):  # fail before the slow part
    raise errors.UserFileExistsError(f'{os.path.abspath(args.dst)} already exists; refusing to '
                                     'overwrite it')
  conversion = convert_file(args.src, args.arch, args.naming)
  checkpoint.save_variables(args.dst, conversion.variables)
  print(f'{args.src} -> {os.path.abspath(args.dst)}')
  print(conversion.summary())


def run(argv=None) -> None:
  """The `flanet-jax-convert` command: `main`, a UserError as `error: ...` and status 1."""
  argv = sys.argv[1:] if argv is None else argv
  try:
    main(argv)
  except errors.UserError as error:
    errors.exit_with(error, verbose='--verbose' in argv)


if __name__ == '__main__':
  run()
