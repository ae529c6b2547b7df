"""Converted PyTorch weights (`init_from`) in eval, export and predict; flanet_jax.Segmenter.

One model for every test: a PyTorch FLANet-ResNet18 in the official layout (deep stem, 512
head channels) with random weights, converted by the converter, on the tiny dataset. Its
evaluation and prediction programs are compiled once and shared through the compilation cache.
"""

import json
import re

import jax
import numpy as np
import pytest
import torch
from PIL import Image

import flanet_jax
from flanet_jax import (checkpoint, data, export, optim, parallel, predict, segmenter, step,
                        train, weights)
from flanet_jax.convert import core, torch_reference
from flanet_jax.convert.flanet import flanet_arch
from flanet_jax.data import cityscapes, pipeline
from flanet_jax.evaluate import Evaluator
from flanet_jax.models import build_model
from tests import support

# The tiny config with the official FLANet head (the reference FLANet's fixed widths).
OFFICIAL_HEAD = {'model.deep_stem': True, 'model.head_features': 512, 'model.aux_features': 64}


@pytest.fixture(scope='module')
def converted(tmp_path_factory):
  """(weights directory, converted variables) of a random PyTorch FLANet-ResNet18."""
  torch.manual_seed(0)
  net = support.randomise_batch_norms_(torch_reference.FLANet(num_classes=19, depth=18), 0)
  with torch.no_grad():
    net.fully.gamma.fill_(0.5)  # 0, its init, would bypass the attention
  variables = core.convert(net.state_dict(), flanet_arch(18)).variables
  path = tmp_path_factory.mktemp('weights') / 'flanet_r18'
  checkpoint.save_variables(path, variables)
  return path, variables


def _config(tiny_dataset, weights_dir, **overrides):
  return support.tiny_config(tiny_dataset, init_from=str(weights_dir), **OFFICIAL_HEAD,
                             **overrides)


def _cache(pytestconfig):
  return pytestconfig.cache.mkdir('jax_compilation_cache')


def test_converted_weights_evaluate_from_the_cli_as_in_python(converted, tiny_dataset, tmp_path,
                                                               pytestconfig):
  weights_dir, variables = converted
  config_file = support.write_tiny_config_file(
      tmp_path / 'config.py', tiny_dataset, init_from=str(weights_dir), **OFFICIAL_HEAD)
  workdir = tmp_path / 'work'  # no training checkpoint: the weights come from init_from
  output = support.wait(support.launch_main(config_file, workdir, 8, '--mode=eval',
                                            cache=_cache(pytestconfig)))
  assert f'converted weights {weights_dir}' in output
  summary = json.loads((workdir / 'eval' / 'init_from_flanet_r18' / 'results.json').read_text())
  assert summary['init_from'] == str(weights_dir) and summary['step'] is None

  config = _config(tiny_dataset, weights_dir)
  mesh = parallel.make_mesh()
  evaluator = Evaluator(config, build_model(config.model), mesh)
  result = evaluator.run(jax.device_put(variables, parallel.replicated(mesh)))
  np.testing.assert_array_equal(summary['confusion'], result['confusion'])
  assert summary['miou'] == pytest.approx(result['miou'], abs=1e-12)
  assert (result['confusion'].sum(axis=0) > 0).sum() >= 3  # not one class everywhere

  config.eval.export_split = 'val'
  out = export.export(config, workdir)
  assert out == workdir / 'export' / 'val_init_from_flanet_r18'
  assert len(list((out / 'labelIds').iterdir())) == len(evaluator.source)


def _save_rgba(image, path, rng):
  alpha = rng.integers(0, 256, image.shape[:2], dtype=np.uint8)
  Image.fromarray(np.dstack([image, alpha]), 'RGBA').save(path)


def _photos(source, folder, rng):
  """Val images as photos of several modes and sizes: {file name: the RGB a reader sees}."""
  images = [np.asarray(Image.open(source.samples[i].image).convert('RGB')) for i in range(6)]
  folder.mkdir()
  Image.fromarray(images[0]).save(folder / 'a_rgb.png')
  _save_rgba(images[1], folder / 'b_rgba.png', rng)
  Image.fromarray(images[2]).convert('L').save(folder / 'c_gray.png')
  Image.fromarray(images[3]).quantize(64).save(folder / 'd_palette.png')
  Image.fromarray(images[4]).save(folder / 'e.jpg', quality=90)
  Image.fromarray(images[5][3:36, 10:60]).save(folder / 'f_small.png')  # 33 x 50
  (folder / 'notes.txt').write_text('not an image: skipped')
  return {p.name: np.asarray(Image.open(p).convert('RGB'))
          for p in sorted(folder.iterdir()) if p.suffix != '.txt'}


def _never_called(*args, **kwargs):
  raise AssertionError('the inputs are checked first')


def _train_checkpoint(config, variables, workdir, step_number):
  tx, _ = optim.make_optimizer(config.optimizer, config.num_train_steps, variables['params'])
  state = step.create_train_state(variables, tx, config.seed)
  mngr = checkpoint.manager(workdir, keep=1)
  checkpoint.save(mngr, step_number, state, pipeline.iterator(train.train_dataset(config), 0))
  mngr.wait_until_finished()


def test_predict_writes_maps_of_any_image_into_a_new_folder(converted, tiny_dataset, tmp_path,
                                                            pytestconfig, monkeypatch):
  weights_dir, variables = converted
  config = _config(tiny_dataset, weights_dir)
  source = data.source(config.data, 'val')
  photos = _photos(source, tmp_path / 'photos', np.random.default_rng(0))
  workdir = tmp_path / 'work'
  _train_checkpoint(config, variables, workdir, 5)  # it wins over init_from
  config_file = support.write_tiny_config_file(
      tmp_path / 'config.py', tiny_dataset, init_from=str(weights_dir), **OFFICIAL_HEAD)
  support.wait(support.launch_main(config_file, workdir, 8, '--mode=predict',
                                   f'--config.predict.input={tmp_path / "photos"}',
                                   cache=_cache(pytestconfig)))
  out = workdir / 'predict' / 'step_5'
  assert sorted(p.name for p in out.iterdir()) == ['classes', 'colour', 'legend.png', 'overlay']
  names = [name.rsplit('.', 1)[0] + '.png' for name in photos]
  assert sorted(p.name for p in (out / 'classes').iterdir()) == sorted(names)
  assert Image.open(out / 'legend.png').size[1] > 19 * 15

  # The CLI's maps are Segmenter.predict's, and its colours and overlay follow from them.
  seg = flanet_jax.Segmenter.from_checkpoint(weights_dir, config)
  class_maps = seg.predict_batch(list(photos.values()))
  for (name, photo), file_name, class_map in zip(photos.items(), names, class_maps):
    assert class_map.shape == photo.shape[:2], name
    np.testing.assert_array_equal(np.asarray(Image.open(out / 'classes' / file_name)), class_map,
                                  err_msg=name)
    colours = cityscapes.PALETTE[class_map]
    np.testing.assert_array_equal(np.asarray(Image.open(out / 'colour' / file_name)), colours)
    blend = np.asarray(Image.open(out / 'overlay' / file_name)).astype(np.float32)
    np.testing.assert_allclose(blend, 0.5 * photo + 0.5 * colours, atol=0.5 + 1e-6)
  assert len(np.unique(np.concatenate([m.ravel() for m in class_maps]))) >= 3

  # ... and the evaluator's (its own reading, batching and cropping) for the val images that
  # the photos show unchanged (RGB, RGBA).
  mesh = parallel.make_mesh()
  evaluator = Evaluator(config, build_model(config.model), mesh)
  (indices, canvas_maps), = evaluator.predictions(
      jax.device_put(variables, parallel.replicated(mesh)))
  assert indices == list(range(6))
  np.testing.assert_array_equal(class_maps[0], canvas_maps[0])
  np.testing.assert_array_equal(class_maps[1], canvas_maps[1])

  scores = seg.logits(photos['a_rgb.png'])
  assert scores.shape == (40, 72, 19) and scores.dtype == np.float32
  np.testing.assert_array_equal(scores.argmax(-1), class_maps[0])

  # A second run (a glob this time) writes beside the first.
  config.predict.input = str(tmp_path / 'photos' / '*.png')
  again = predict.predict(config, workdir)
  assert again == workdir / 'predict' / 'step_5.2'
  assert {p.name: p.read_bytes() for p in (again / 'classes').iterdir()} == {
      name: (out / 'classes' / name).read_bytes() for name in names if name != 'e.png'}
  from_workdir = flanet_jax.Segmenter.from_checkpoint(workdir, config)
  np.testing.assert_array_equal(from_workdir.predict(tmp_path / 'photos' / 'f_small.png'),
                                class_maps[-1])

  # An unreadable image stops the run before the weights are loaded, nothing written.
  broken = tmp_path / 'photos' / 'b_rgba.png'
  broken.write_bytes(broken.read_bytes()[:300])
  before = sorted((workdir / 'predict').iterdir())
  monkeypatch.setattr(weights, 'load', _never_called)
  with pytest.raises(ValueError, match=re.escape(str(broken))) as error:
    predict.predict(config, workdir)
  assert '\n' not in str(error.value)
  assert sorted((workdir / 'predict').iterdir()) == before


def test_bad_inputs_and_partial_weights_are_named(converted, tiny_dataset, tmp_path):
  with pytest.raises(ValueError, match='predict.input is empty'):
    predict.input_paths('')
  with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / 'nowhere'))):
    predict.input_paths(str(tmp_path / 'nowhere'))
  (tmp_path / 'empty').mkdir()
  (tmp_path / 'empty' / 'notes.txt').write_text('not an image')
  for pattern in (tmp_path / 'empty', tmp_path / 'empty' / '*.jpg'):
    with pytest.raises(FileNotFoundError, match=re.escape(f'{pattern}\' matches no image')):
      predict.input_paths(str(pattern))
  paths = [tmp_path / 'x' / 'a.jpg', tmp_path / 'x' / 'a.png', tmp_path / 'y' / 'b.png']
  assert [str(n) for n in predict.output_names(paths)] == ['x/a.jpg.png', 'x/a.png.png',
                                                           'y/b.png.png']
  assert [str(n) for n in predict.output_names(paths[1:])] == ['x/a.png', 'y/b.png']
  with pytest.raises(ValueError, match='uint8 .H, W, 3.'):
    segmenter.as_rgb(np.zeros((4, 4, 3), np.float32))

  # Backbone weights alone are no model to evaluate: the head would stay random.
  weights_dir, variables = converted
  backbone = tmp_path / 'backbone_only'
  checkpoint.save_variables(backbone, {c: variables[c]['backbone'] for c in variables})
  config = _config(tiny_dataset, backbone)
  with pytest.raises(ValueError, match=re.escape(
      f"No checkpoint in {tmp_path / 'work' / 'checkpoints'}, and init_from='{backbone}' covers "
      'only part of the model (nothing for attention, ')):
    weights.load(config, tmp_path / 'work', build_model(config.model), parallel.make_mesh())
