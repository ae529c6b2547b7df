"""PASCAL VOC 2012 segmentation: 21 classes (background + 20), 255 = boundary/ignored.

`data.root` is the `VOC2012` folder itself (VOCdevkit/VOC2012, as in mmsegmentation):

  {root}/JPEGImages/{id}.jpg
  {root}/SegmentationClass/{id}.png          palette PNGs: the indices are the classes
  {root}/ImageSets/Segmentation/{split}.txt  one id per line: train, val, trainval, (test)
  {root}/SegmentationClassAug/{id}.png       grayscale; written by scripts/prepare_voc_aug.py
  {root}/ImageSets/Segmentation/trainaug.txt   with SBD: 10,582 ids on the real data

Split `trainaug` reads its labels from SegmentationClassAug; `test` is unlabelled.
Class names and palette as in mmsegmentation (the standard VOC colour map).
"""

import pathlib

import numpy as np

from flanet_jax import errors
from flanet_jax.data.source import Sample, SegmentationSource, label_table, require_dir

FOLDER = 'VOC2012'
CLASS_NAMES = ('background', 'aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car',
               'cat', 'chair', 'cow', 'diningtable', 'dog', 'horse', 'motorbike', 'person',
               'pottedplant', 'sheep', 'sofa', 'train', 'tvmonitor')
PALETTE = np.array([
    (0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0), (0, 0, 128), (128, 0, 128),
    (0, 128, 128), (128, 128, 128), (64, 0, 0), (192, 0, 0), (64, 128, 0), (192, 128, 0),
    (64, 0, 128), (192, 0, 128), (64, 128, 128), (192, 128, 128), (0, 64, 0), (128, 64, 0),
    (0, 192, 0), (128, 192, 0), (0, 64, 128),
], np.uint8)
NUM_CLASSES = len(CLASS_NAMES)
LABEL_TABLE = label_table({v: v for v in range(NUM_CLASSES)})
SUBMISSION_IDS = np.arange(NUM_CLASSES, dtype=np.uint8)
UNLABELLED_SPLITS = ('test',)
AUG_SPLIT = 'trainaug'


def split_file(root: pathlib.Path, split: str) -> pathlib.Path:
  return root / 'ImageSets' / 'Segmentation' / f'{split}.txt'


def label_dir(root: pathlib.Path, split: str) -> pathlib.Path:
  return root / ('SegmentationClassAug' if split == AUG_SPLIT else 'SegmentationClass')


def read_ids(path: pathlib.Path) -> list[str]:
  if not path.is_file():
    raise errors.UserFileNotFoundError(f'VOC split list not found: {path}')
  return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _check_files(image: pathlib.Path, label: pathlib.Path | None, listed_in: pathlib.Path):
  has_image, has_label = image.is_file(), label is None or label.is_file()
  if has_image and has_label:
    return
  if has_image:
    raise errors.UserFileNotFoundError(f'Image {image} has no label: expected {label} '
                                       f'({listed_in})')
  if has_label and label is not None:
    raise errors.UserFileNotFoundError(f'Label {label} has no image: expected {image} '
                                       f'({listed_in})')
  raise errors.UserFileNotFoundError(f'{listed_in} lists {image.stem!r}, but {image} does not '
                                     'exist')


def list_samples(root: str, split: str) -> list[Sample]:
  """The samples of a split list, in its order; every listed id needs its image and label."""
  root_path = pathlib.Path(root)
  if (root_path / FOLDER).is_dir() and not (root_path / 'JPEGImages').is_dir():
    raise errors.UserFileNotFoundError(f'{root_path} holds {FOLDER}: set data.root to '
                                       f'{root_path / FOLDER}')
  require_dir(root_path, 'PASCAL VOC')
  listed_in = split_file(root_path, split)
  labels = None if split in UNLABELLED_SPLITS else label_dir(root_path, split)
  samples = []
  for image_id in read_ids(listed_in):
    image = root_path / 'JPEGImages' / f'{image_id}.jpg'
    label = None if labels is None else labels / f'{image_id}.png'
    _check_files(image, label, listed_in)
    samples.append(Sample(image_id, image, label))
  return samples


class VOCSource(SegmentationSource):
  """VOC 2012 `split` (train, val, trainval, trainaug, test) under `root` (the VOC2012 folder)."""

  def __init__(self, root: str, split: str):
    samples = list_samples(root, split)  # validates root and split first
    super().__init__(samples, LABEL_TABLE, str(split_file(pathlib.Path(root), split)))
