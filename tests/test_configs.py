"""Every experiment config loads and is consistent (dataset classes, transforms, inference)."""

import importlib
import pathlib

import pytest

from flanet_jax import data, inference
from flanet_jax.data import transforms
from flanet_jax.models import build_model

CONFIGS = sorted(p.stem for p in (pathlib.Path(__file__).parents[1] / 'configs').glob('*.py')
                 if p.stem != '__init__')


def test_all_experiment_configs_are_listed():
  assert {'default', 'demo', 'cityscapes_r101', 'ade20k_r101', 'voc_r101'} <= set(CONFIGS)


@pytest.mark.parametrize('name', CONFIGS)
def test_config_is_consistent(name):
  config = importlib.import_module(f'configs.{name}').get_config()
  data.check_num_classes(config)
  inference.Settings.from_config(config.eval)
  transforms.from_config(config.data)
  build_model(config.model, config.dtype)
  assert config.num_train_steps > 0 and config.batch_size % 8 == 0


def test_paper_crops_and_resize_bases():
  ade = importlib.import_module('configs.ade20k_r101').get_config()
  voc = importlib.import_module('configs.voc_r101').get_config()
  for config in (ade, voc):
    assert tuple(config.data.crop_size) == (520, 520) and config.batch_size == 8
    assert tuple(config.data.base_size) == (2048, 512)
  assert ade.model.num_classes == 150 and voc.model.num_classes == 21
  assert voc.data.train_split == 'trainaug'
