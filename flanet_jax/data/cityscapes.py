"""Cityscapes in its standard on-disk layout, as a grain random-access data source.

  {root}/leftImg8bit/{split}/{city}/{name}_leftImg8bit.png
  {root}/gtFine/{split}/{city}/{name}_gtFine_labelIds.png

Labels are stored as labelIds; they are mapped to the 19 trainIds (others -> 255, ignored)
with the table of the official `cityscapesscripts` package.
"""

import pathlib

import numpy as np
from cityscapesscripts.helpers import labels as cs_labels

from flanet_jax.data import image_io

IGNORE_INDEX = 255
_TRAIN_LABELS = sorted((l for l in cs_labels.labels if 0 <= l.trainId < IGNORE_INDEX),
                       key=lambda l: l.trainId)
CLASS_NAMES = tuple(l.name for l in _TRAIN_LABELS)
PALETTE = np.array([l.color for l in _TRAIN_LABELS], np.uint8)  # trainId -> RGB
TRAIN_ID_TO_LABEL_ID = np.array([l.id for l in _TRAIN_LABELS], np.uint8)


def _label_id_to_train_id_table() -> np.ndarray:
  table = np.full(256, IGNORE_INDEX, np.uint8)
  for label in cs_labels.labels:
    if 0 <= label.id < 256 and 0 <= label.trainId < IGNORE_INDEX:
      table[label.id] = label.trainId
  return table


LABEL_ID_TO_TRAIN_ID = _label_id_to_train_id_table()
IMAGE_SUFFIX = '_leftImg8bit.png'
LABEL_SUFFIX = '_gtFine_labelIds.png'


def image_label_pairs(root: str, split: str) -> list[tuple[pathlib.Path, pathlib.Path]]:
  """Sorted (image, label) paths of a split; every image must have its label."""
  root_path = pathlib.Path(root)
  image_dir = root_path / 'leftImg8bit' / split
  label_dir = root_path / 'gtFine' / split
  for directory in (root_path, image_dir, label_dir):
    if not directory.is_dir():
      raise FileNotFoundError(f'Cityscapes directory not found: {directory}')
  images = sorted(image_dir.glob(f'*/*{IMAGE_SUFFIX}'))
  if not images:
    raise FileNotFoundError(f'No *{IMAGE_SUFFIX} images in {image_dir}')
  pairs = []
  for image in images:
    stem = image.name[:-len(IMAGE_SUFFIX)]
    label = label_dir / image.parent.name / f'{stem}{LABEL_SUFFIX}'
    if not label.is_file():
      raise FileNotFoundError(f'Image {image} has no label: expected {label}')
    pairs.append((image, label))
  return pairs


class CityscapesSource:
  """Random access to {'image': uint8 (H, W, 3), 'label': uint8 (H, W) trainIds}."""

  def __init__(self, root: str, split: str):
    self.pairs = image_label_pairs(root, split)

  def __len__(self) -> int:
    return len(self.pairs)

  def __getitem__(self, index: int) -> dict:
    image_path, label_path = self.pairs[index]
    image = image_io.read_rgb(image_path)
    label_ids = image_io.read_label(label_path)
    if label_ids.shape != image.shape[:2]:
      raise ValueError(f'Label {label_path} has size {label_ids.shape}, '
                       f'image {image_path} has {image.shape[:2]}')
    return {'image': image, 'label': LABEL_ID_TO_TRAIN_ID[label_ids]}

  def image_size(self, index: int) -> tuple[int, int]:
    """(height, width) from the file header, without decoding the pixels."""
    return image_io.image_size(self.pairs[index][0])

  def name(self, index: int) -> str:
    return self.pairs[index][0].name[:-len(IMAGE_SUFFIX)]
