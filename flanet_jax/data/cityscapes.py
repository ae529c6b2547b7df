"""Cityscapes in its standard on-disk layout.

  {root}/leftImg8bit/{split}/{city}/{name}_leftImg8bit.png
  {root}/gtFine/{split}/{city}/{name}_gtFine_labelIds.png      (train, val; not read for test)

Labels are stored as labelIds; they are mapped to the 19 trainIds (others -> 255, ignored)
with the table of the official `cityscapesscripts` package. The `test` split is unlabelled
(its public gtFine files are dummies): it is for the test-server export.
"""

import pathlib

import numpy as np
from cityscapesscripts.helpers import labels as cs_labels

from flanet_jax import errors
from flanet_jax.data.source import Sample, SegmentationSource, label_table, require_dir
from flanet_jax.labels import IGNORE_INDEX

_TRAIN_LABELS = sorted((l for l in cs_labels.labels if 0 <= l.trainId < IGNORE_INDEX),
                       key=lambda l: l.trainId)
CLASS_NAMES = tuple(l.name for l in _TRAIN_LABELS)
PALETTE = np.array([l.color for l in _TRAIN_LABELS], np.uint8)  # trainId -> RGB
TRAIN_ID_TO_LABEL_ID = np.array([l.id for l in _TRAIN_LABELS], np.uint8)
SUBMISSION_IDS = TRAIN_ID_TO_LABEL_ID  # the test server reads labelIds
# Every labelId of the dataset (0..33) is valid; those without a trainId are ignored.
LABEL_TABLE = label_table({l.id: l.trainId if 0 <= l.trainId < IGNORE_INDEX else IGNORE_INDEX
                           for l in cs_labels.labels if l.id >= 0})
UNLABELLED_SPLITS = ('test',)
IMAGE_SUFFIX = '_leftImg8bit.png'
LABEL_SUFFIX = '_gtFine_labelIds.png'


def _stems(directory: pathlib.Path, suffix: str) -> dict[str, pathlib.Path]:
  """{'city/name': path} of the files `*/*{suffix}` under directory."""
  return {f'{p.parent.name}/{p.name[:-len(suffix)]}': p
          for p in sorted(directory.glob(f'*/*{suffix}'))}


def list_samples(root: str, split: str) -> list[Sample]:
  """Sorted samples of a split; every image must have its label and every label its image."""
  root_path = pathlib.Path(root)
  require_dir(root_path, 'Cityscapes')
  image_dir = root_path / 'leftImg8bit' / split
  require_dir(image_dir, f'Cityscapes {split!r} split')
  images = _stems(image_dir, IMAGE_SUFFIX)
  if split in UNLABELLED_SPLITS:
    return [Sample(p.name[:-len(IMAGE_SUFFIX)], p, None) for p in images.values()]
  label_dir = root_path / 'gtFine' / split
  require_dir(label_dir, f'Cityscapes {split!r} labels')
  labels = _stems(label_dir, LABEL_SUFFIX)
  for stem, image in images.items():
    if stem not in labels:
      raise errors.UserFileNotFoundError(f'Image {image} has no label: expected '
                                         f'{label_dir / (stem + LABEL_SUFFIX)}')
  for stem, label in labels.items():
    if stem not in images:
      raise errors.UserFileNotFoundError(f'Label {label} has no image: expected '
                                         f'{image_dir / (stem + IMAGE_SUFFIX)}')
  return [Sample(p.name[:-len(IMAGE_SUFFIX)], p, labels[stem]) for stem, p in images.items()]


class CityscapesSource(SegmentationSource):
  """Cityscapes `split` (train, val, test) under `root`; labels as trainIds."""

  def __init__(self, root: str, split: str):
    super().__init__(list_samples(root, split), LABEL_TABLE,
                     f'{pathlib.Path(root) / "leftImg8bit" / split}/*/*{IMAGE_SUFFIX}')
