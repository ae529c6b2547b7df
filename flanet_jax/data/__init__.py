"""Dataset registry: `config.data.name` -> source class, class names and colour palette."""

import dataclasses
import pathlib
from typing import Callable

import jax
import numpy as np

from flanet_jax import errors
from flanet_jax.data import ade20k, cityscapes, synthetic, voc
from flanet_jax.data.source import SegmentationSource


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  source: Callable  # (root, split) -> random-access source of {'image', 'label'}
  class_names: tuple
  palette: np.ndarray  # (num_classes, 3) uint8 RGB
  submission_ids: np.ndarray  # (num_classes,) uint8: class -> value in exported PNGs


DATASETS = {
    'cityscapes': DatasetInfo(cityscapes.CityscapesSource, cityscapes.CLASS_NAMES,
                              cityscapes.PALETTE, cityscapes.SUBMISSION_IDS),
    'ade20k': DatasetInfo(ade20k.ADE20KSource, ade20k.CLASS_NAMES, ade20k.PALETTE,
                          ade20k.SUBMISSION_IDS),
    'voc': DatasetInfo(voc.VOCSource, voc.CLASS_NAMES, voc.PALETTE, voc.SUBMISSION_IDS),
}


def dataset_info(name: str) -> DatasetInfo:
  if name not in DATASETS:
    raise errors.UserValueError(f'Unknown data.name {name!r}; choose one of {sorted(DATASETS)}')
  return DATASETS[name]


def prepare(data_config) -> None:
  """Writes the synthetic dataset at data.root when asked to and absent."""
  root = pathlib.Path(data_config.root)
  if not data_config.generate_if_missing or root.exists():
    return
  if jax.process_count() > 1:
    raise errors.UserFileNotFoundError(f'{root} does not exist; write it once before a '
                                       'multi-process run with scripts/make_synthetic_dataset.py')
  print(f'Writing the synthetic dataset to {root} ...')
  synthetic.write_dataset(str(root))


def source(data_config, split: str):
  """The split's source; 'a+b' joins splits, e.g. Cityscapes 'train+val' for test-server runs."""
  make = dataset_info(data_config.name).source
  parts = [make(data_config.root, name) for name in split.split('+')]
  if len(parts) == 1:
    return parts[0]
  if len({part.labelled for part in parts}) > 1:
    raise errors.UserValueError(f'data split {split!r} joins labelled and unlabelled splits')
  return SegmentationSource([s for part in parts for s in part.samples], parts[0].table, split)


def check_num_classes(config) -> None:
  """The model must predict exactly the dataset's classes."""
  names = dataset_info(config.data.name).class_names
  if config.model.num_classes != len(names):
    raise errors.UserValueError(f'data.name={config.data.name!r} has {len(names)} classes, but '
                                f'model.num_classes={config.model.num_classes}')
