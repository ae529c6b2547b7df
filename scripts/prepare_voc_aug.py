"""Writes the VOC 2012 `trainaug` split from SBD: SegmentationClassAug/*.png and trainaug.txt.

  python scripts/prepare_voc_aug.py data/VOCdevkit/VOC2012 data/benchmark_RELEASE/dataset

VOC2012 is the folder with JPEGImages/ and ImageSets/; the SBD folder holds cls/*.mat,
train.txt and val.txt. Nothing is overwritten, and on bad input nothing is written.
Then train with --config.data.train_split=trainaug (configs/voc_r101.py does).
"""

import argparse
import sys

from flanet_jax.data import voc_aug


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('voc_root', help='the VOC2012 folder')
  parser.add_argument('sbd_root', help='SBD benchmark_RELEASE/dataset folder')
  args = parser.parse_args(argv)
  try:
    ids = voc_aug.prepare(args.voc_root, args.sbd_root)
  except (FileExistsError, FileNotFoundError, ValueError) as error:
    print(f'error: {error}', file=sys.stderr)
    return 1
  print(f'Wrote {len(ids)} labels to {args.voc_root}/SegmentationClassAug and the trainaug list')
  return 0


if __name__ == '__main__':
  sys.exit(main())
