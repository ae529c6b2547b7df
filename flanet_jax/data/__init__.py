"""Dataset registry: `config.data.name` -> source class, class names and colour palette."""

import dataclasses
import pathlib
from typing import Callable

import jax
import numpy as np

from flanet_jax.data import ade20k, cityscapes, synthetic, voc


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
    raise ValueError(f'Unknown data.name {name!r}; choose one of {sorted(DATASETS)}')
  return DATASETS[name]


def prepare(data_config) -> None:
  """Writes the synthetic dataset at data.root when asked to and absent."""
  root = pathlib.Path(data_config.root)
  if not data_config.generate_if_missing or root.exists():
    return
  if jax.process_count() > 1:
    raise FileNotFoundError(f'{root} does not exist; write it once before a multi-process run '
                            'with scripts/make_synthetic_dataset.py')
  print(f'Writing the synthetic dataset to {root} ...')
  synthetic.write_dataset(str(root))


def source(data_config, split: str):
  return dataset_info(data_config.name).source(data_config.root, split)


def check_num_classes(config) -> None:
  """The model must predict exactly the dataset's classes."""
  names = dataset_info(config.data.name).class_names
  if config.model.num_classes != len(names):
    raise ValueError(f'data.name={config.data.name!r} has {len(names)} classes, but '
                     f'model.num_classes={config.model.num_classes}')
