"""Writes a small synthetic dataset in the Cityscapes layout (used by the demo and tests).

  python scripts/make_synthetic_dataset.py DIR [--num_train 48 --num_val 12 --height 96 --width 192]
"""

import argparse

from flanet_jax.data import synthetic


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('root', help='output directory (must not exist)')
  parser.add_argument('--num_train', type=int, default=48)
  parser.add_argument('--num_val', type=int, default=12)
  parser.add_argument('--height', type=int, default=96)
  parser.add_argument('--width', type=int, default=192)
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args()
  path = synthetic.write_dataset(args.root, args.num_train, args.num_val, args.height,
                                 args.width, args.seed)
  print(f'Wrote {args.num_train} train and {args.num_val} val images to {path}')


if __name__ == '__main__':
  main()
