"""A grain random-access source over listed image/label files, shared by every dataset.

Datasets list their files at construction (names only, fast even for ADE20K); pixels are
decoded and checked when an example is read, so a bad file is reported by name when it is
first used rather than by a slow scan at start-up.
"""

import dataclasses
import pathlib
from typing import Sequence

import numpy as np

from flanet_jax import errors
from flanet_jax.data import image_io
from flanet_jax.labels import IGNORE_INDEX

INVALID = -1  # marks stored label values a dataset cannot contain


@dataclasses.dataclass(frozen=True)
class Sample:
  name: str  # the image file name without its suffix (used for output files)
  image: pathlib.Path
  label: pathlib.Path | None  # None in unlabelled (test) splits


def label_table(valid_values: dict[int, int]) -> np.ndarray:
  """int16 lookup over stored values 0..255: train id, 255 (ignored) or INVALID."""
  table = np.full(256, INVALID, np.int16)
  table[IGNORE_INDEX] = IGNORE_INDEX
  for stored, train_id in valid_values.items():
    table[stored] = train_id
  return table


def map_label(stored: np.ndarray, table: np.ndarray, path: pathlib.Path) -> np.ndarray:
  """Stored values -> uint8 train ids; a value the dataset cannot contain is an error."""
  mapped = table[stored]
  if (mapped == INVALID).any():
    bad = np.unique(stored[mapped == INVALID])
    raise errors.UserValueError(f'Label {path} has values {bad[:10].tolist()} outside the '
                                f'dataset\'s range (valid: '
                                f'{np.flatnonzero(table != INVALID).tolist()})')
  return mapped.astype(np.uint8)


def require_dir(path: pathlib.Path, what: str) -> None:
  if not path.is_dir():
    raise errors.UserFileNotFoundError(f'{what} directory not found: {path}')


class SegmentationSource:
  """Random access to {'image': uint8 (H, W, 3), 'label': uint8 (H, W)}; no 'label' if unlabelled.

  `table` maps the stored label values to train ids (made by `label_table`).
  """

  def __init__(self, samples: Sequence[Sample], table: np.ndarray, where: str):
    if not samples:
      raise errors.UserFileNotFoundError(f'Empty split: no images in {where}')
    self.samples = list(samples)
    self.table = table
    self.labelled = self.samples[0].label is not None

  def __len__(self) -> int:
    return len(self.samples)

  def __getitem__(self, index: int) -> dict:
    sample = self.samples[index]
    image = image_io.read_rgb(sample.image)
    if sample.label is None:
      return {'image': image}
    stored = image_io.read_label(sample.label)
    if stored.shape != image.shape[:2]:
      raise errors.UserValueError(f'Label {sample.label} has size {stored.shape}, '
                                  f'image {sample.image} has {image.shape[:2]}')
    return {'image': image, 'label': map_label(stored, self.table, sample.label)}

  def image_size(self, index: int) -> tuple[int, int]:
    """(height, width) from the file header, without decoding the pixels."""
    return image_io.image_size(self.samples[index].image)

  def name(self, index: int) -> str:
    return self.samples[index].name
