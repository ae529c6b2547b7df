"""Every experiment config (with each of its `:arg`s): loads through the entry point's flag,
is consistent, traces its own paper-size train step, and its recipe trains for real.

Compiling one train step of ResNet-101 or HRNet-W48 on a CPU is too slow to do for some
twenty configs. So the test has three layers:
- one train step is traced (`jax.eval_shape`, nothing compiled) at paper batch and crop size
  for each recipe and each model of the configs: every shape, key and name;
- every config equals one of the three dataset recipes (cityscapes_r101, ade20k_r101,
  voc_r101) apart from its model and `init_from` (asserted); each recipe trains one real
  step and evaluates, end to end, on a tiny dataset in its real layout, with a small model
  and tiny sizes through overrides;
- every backbone and attention block trains for real in test_models.py,
  test_flanet_backbones.py and test_nonlocal_blocks.py.
"""

import importlib
import json
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from absl import flags
from ml_collections import config_flags

from configs import backbones, default, table2, table3
from flanet_jax import data, inference, step, train
from flanet_jax.convert.registry import get_arch
from flanet_jax.data import transforms, voc_aug
from flanet_jax.models import build_model
from flanet_jax.models.flanet import ATTENTION_BLOCKS
from tests import layouts, support

REPO = support.REPO
MODULES = sorted(p.stem for p in (REPO / 'configs').glob('*.py')
                 if p.stem not in ('__init__', 'backbones'))
# (module, arg): every experiment a researcher can run.
EXPERIMENTS = [(m, arg) for m in MODULES
               for arg in getattr(importlib.import_module(f'configs.{m}'), 'ARGS', [None])]
RECIPES = {'cityscapes': 'cityscapes_r101', 'ade20k': 'ade20k_r101', 'voc': 'voc_r101'}
MODEL_KEYS = {'model.backbone', 'model.deep_stem', 'model.attention', 'init_from'}


def _config(module: str, arg: str | None = None):
  """The config as `--config configs/MODULE.py[:ARG]` gives it to flanet_jax.main."""
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', flag_values=flag_values)
  path = str(REPO / 'configs' / f'{module}.py') + (f':{arg}' if arg else '')
  flag_values(['main', f'--config={path}'])
  return flag_values.config


def _flat(config) -> dict:
  flat = {}
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      flat.update({f'{key}.{k}': v for k, v in _flat(value).items()})
    else:
      flat[key] = value
  return flat


def test_every_paper_experiment_has_a_config():
  names = {f'{m}:{a}' if a else m for m, a in EXPERIMENTS}
  assert {'cityscapes_r101', 'cityscapes_hrnet48', 'ade20k_r101', 'ade20k_hrnet48', 'voc_r101',
          'voc_hrnet48'} <= names  # Tables 1, 4, 5
  assert set(table2.ARGS) == {f'{b}-{a}' for b in ('shufflenet_v2', 'resnet18', 'resnet50',
                                                   'resnet101') for a in ('fla', 'none')}
  assert set(table3.ARGS) == set(ATTENTION_BLOCKS)  # FLA, every non-local block, none


@pytest.mark.parametrize('module', ['table2', 'table3'])
def test_configs_with_args_name_the_choices_when_the_arg_is_wrong(module):
  with pytest.raises(ValueError, match=f'configs/{module}.py needs .*resnet'
                     if module == 'table2' else f'configs/{module}.py needs .*rcca'):
    importlib.import_module(f'configs.{module}').get_config('resnet34-fla')


@pytest.mark.parametrize('module,arg', EXPERIMENTS)
def test_config_is_consistent(module, arg):
  config = _config(module, arg)
  assert set(_flat(config)) == set(_flat(default.get_config()))  # no new or lost keys
  data.check_num_classes(config)
  inference.Settings.from_config(config.eval)
  transforms.from_config(config.data)
  assert config.num_train_steps > 0 and config.batch_size % 8 == 0
  if module in ('default', 'demo'):
    return
  recipe = _flat(_config(RECIPES[config.data.name]))
  differing = {k for k, v in _flat(config).items() if recipe[k] != v}
  assert differing <= MODEL_KEYS, f'{module}:{arg} departs from {RECIPES[config.data.name]}'
  if config.model.backbone in backbones.IMAGENET_WEIGHTS:
    assert config.init_from == 'weights/' + backbones.IMAGENET_WEIGHTS[config.model.backbone][1]


def test_paper_numbers_of_the_configs():
  cityscapes, ade, voc = (_config(RECIPES[n]) for n in ('cityscapes', 'ade20k', 'voc'))
  for config in (cityscapes, ade, voc):
    assert (config.batch_size, config.optimizer.learning_rate, config.optimizer.momentum,
            config.optimizer.weight_decay, config.optimizer.poly_power) == (8, 0.01, 0.9, 5e-4,
                                                                           0.9)
    assert tuple(config.data.scale_range) == (0.5, 2.0) and config.data.flip
  assert cityscapes.num_train_steps == 240 * 2975 // 8
  assert tuple(cityscapes.data.crop_size) == (768, 768)
  for config in (ade, voc):
    assert tuple(config.data.crop_size) == (520, 520)
    assert tuple(config.data.base_size) == (2048, 512)
  assert ade.model.num_classes == 150 and voc.model.num_classes == 21
  assert voc.data.train_split == 'trainaug'
  assert _config('table3', 'fla').model.backbone == 'resnet50'


@pytest.mark.parametrize('backbone', sorted(backbones.IMAGENET_WEIGHTS))
def test_imagenet_weights_of_each_backbone_fit_its_model(backbone):
  """The converter arch a config points `init_from` at yields exactly the model's backbone."""
  config = backbones.use_backbone(_config('cityscapes_r101'), backbone)
  model = build_model(config.model)
  variables = jax.eval_shape(lambda: step.init_variables(model, 0))
  want = {(c, *(k.key for k in path)): leaf.shape
          for c in variables for path, leaf in
          jax.tree_util.tree_flatten_with_path(variables[c]['backbone'])[0]}
  template = get_arch(backbones.IMAGENET_WEIGHTS[backbone][1]).template({})
  assert {k: v.shape for k, v in template.items()} == want


def _traced_experiments():
  """default, demo, each recipe, and every experiment with a model no earlier one has: the
  others equal a traced one in recipe (test_config_is_consistent) and model (e.g. an HRNet-W48
  config of each dataset), so their traces would repeat one."""
  chosen, models = [('default', None), ('demo', None)], set()  # these follow no recipe
  for module, arg in sorted(EXPERIMENTS, key=lambda e: e[0] not in RECIPES.values()):
    if module in ('default', 'demo'):
      continue
    config = _flat(_config(module, arg))
    model = tuple(config[k] for k in sorted(MODEL_KEYS - {'init_from'}))
    if module in RECIPES.values() or model not in models:
      chosen.append((module, arg))
      models.add(model)
  return chosen


@pytest.mark.parametrize('module,arg', _traced_experiments())
def test_config_traces_its_paper_size_train_step(module, arg):
  config = _config(module, arg)
  state, new_state, metrics = support.abstract_train_step(config)
  assert jax.tree.structure(new_state) == jax.tree.structure(state)
  assert all(a.shape == b.shape and a.dtype == b.dtype
             for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(new_state)))
  assert metrics['loss'].shape == () and metrics['loss'].dtype == jnp.float32
  classifier = state.params['out_main']['classifier']['kernel']
  assert classifier.shape[-1] == config.model.num_classes


def _tiny_dataset(name: str, tmp_path: pathlib.Path, cityscapes_root) -> str:
  if name == 'cityscapes':
    return str(cityscapes_root)
  if name == 'ade20k':
    return str(layouts.write_ade20k(tmp_path, num_train=8, num_val=4))
  voc_root = layouts.write_voc(tmp_path)
  sbd = layouts.write_sbd(tmp_path, voc_root, ['2009_000001'], ['2009_000002'])
  voc_aug.prepare(str(voc_root), str(sbd))  # the recipe trains on trainaug
  return str(voc_root)


def _tiny_overrides(config, root: str):
  """Small model and sizes; everything else (loss, optimizer, augmentation, eval mode and
  scales, splits) stays the recipe's."""
  config.batch_size, config.num_train_steps, config.init_from = 8, 1, ''
  config.model.update(backbone='resnet18', deep_stem=False, head_features=16, aux_features=8)
  config.data.update(root=root, crop_size=(32, 32), base_size=(), workers=0)
  config.eval.update(crop_size=(24, 24), stride=(16, 16), size_divisor=8)
  return config


@pytest.mark.parametrize('dataset', sorted(RECIPES))
def test_recipe_trains_one_step_and_evaluates_at_tiny_size(dataset, tmp_path, tiny_dataset):
  config = _config(RECIPES[dataset])
  config = _tiny_overrides(config, _tiny_dataset(dataset, tmp_path, tiny_dataset))
  result = train.train_and_evaluate(config, tmp_path / 'workdir')
  assert len(result['iou']) == config.model.num_classes and 0.0 <= result['miou'] <= 1.0
  records = [json.loads(line) for line in (tmp_path / 'workdir' / 'metrics.jsonl').open()]
  losses = [r['loss'] for r in records if 'loss' in r]
  assert len(losses) == 1 and np.isfinite(losses[0])
