"""The training engine end to end on the synthetic dataset (8 simulated devices; 2 to learn)."""

import json

import flax.linen as nn
import jax
import numpy as np
import pytest
from PIL import Image

from flanet_jax import checkpoint, evaluate, parallel, step, train, weights
from flanet_jax.data import cityscapes, transforms
from flanet_jax.models import build_model
from tests import support

# Colour tells the synthetic classes apart: 60 steps are too few to learn it through hue and
# saturation jitter.
LEARNING = {'num_train_steps': 60, 'log_every_steps': 10, 'checkpoint_every_steps': 30,
            'optimizer.learning_rate': 0.05, 'data.scale_range': (0.75, 1.5),
            'data.photometric': False, 'model.head_features': 32}


def test_short_training_learns_and_eval_mode_reproduces_it(tiny_dataset, tmp_path, pytestconfig):
  """Through the entry point on 2 simulated devices (simulated devices share the host's
  cores, so fewer make the 60 steps cheaper; the tests below train on 8)."""
  config_file = support.write_tiny_config_file(tmp_path / 'learn.py', tiny_dataset, **LEARNING)
  workdir, cache = tmp_path / 'run', pytestconfig.cache.mkdir('jax_compilation_cache')
  run_main = lambda *flags: support.wait(
      support.launch_main(config_file, workdir, 2, *flags, cache=cache))
  run_main()

  losses = [loss for _, loss in support.records(workdir)]
  assert len(losses) == 6 and losses[-1] < 0.6 * losses[0]
  [(step_number, miou)] = support.records(workdir, 'miou')
  # Chance level: a uniform guess over the 19 classes scores an mIoU of about 0.03.
  assert step_number == 60 and miou > 0.25
  assert sorted(int(p.name) for p in (workdir / 'checkpoints').iterdir()) == [30, 60]
  assert list((workdir / 'tensorboard').glob('events.out.tfevents.*'))

  output = run_main('--mode=eval', '--config.eval.num_prediction_images=4')
  assert 'read only' not in output and 'read_only' not in output  # Orbax's notices, muted
  out = workdir / 'eval' / 'step_60'
  summary = json.loads((out / 'results.json').read_text())
  assert summary['miou'] == pytest.approx(miou, abs=1e-9)
  assert 'mIoU' in (out / 'miou_table.txt').read_text()
  pngs = sorted((out / 'predictions').glob('*.png'))
  assert len(pngs) == 4
  assert np.asarray(Image.open(pngs[0])).shape == (40, 72, 3)
  # The evaluation during training showed TensorBoard image | ground truth | prediction of
  # the val images (all 6: eval.num_prediction_images is 8), the same predictions.
  shown = support.tensorboard_images(workdir / 'tensorboard')
  val = sorted(tiny_dataset.glob('leftImg8bit/val/*/*.png'))
  assert sorted(shown) == sorted(f'eval_predictions/{p.name[:-len("_leftImg8bit.png")]}'
                                 for p in val)
  for png in pngs:
    [(shown_step, panel)] = shown[f'eval_predictions/{png.stem}']
    image = next(p for p in val if p.name.startswith(png.stem))
    label = next(tiny_dataset.glob(f'gtFine/val/*/{png.stem}_gtFine_labelIds.png'))
    assert shown_step == 60 and panel.shape == (40, 3 * 72, 3)
    np.testing.assert_array_equal(panel[:, :72], np.asarray(Image.open(image)))
    train_ids = cityscapes.LABEL_TABLE[np.asarray(Image.open(label))]
    np.testing.assert_array_equal(panel[:, 72:144],
                                  evaluate.colourise(train_ids, cityscapes.PALETTE))
    np.testing.assert_array_equal(panel[:, 144:], np.asarray(Image.open(png)))
  # A second evaluation (here on 8 devices) writes beside the first, never over it.
  again = evaluate.evaluate(support.tiny_config(tiny_dataset, **LEARNING), workdir)
  assert again['miou'] == pytest.approx(miou, abs=1e-3)
  assert (workdir / 'eval' / 'step_60.2' / 'results.json').exists()


def _never_initialise(*args, **kwargs):
  raise AssertionError('a resumed run restores its variables; it must not initialise them')


def test_interrupted_and_resumed_run_matches_uninterrupted_run(tiny_dataset, tmp_path,
                                                                monkeypatch):
  config = support.tiny_config(tiny_dataset, log_every_steps=1, checkpoint_every_steps=3)
  assert config.model.dropout_rate > 0  # resume must also continue the dropout RNG stream
  train.train_and_evaluate(config, tmp_path / 'straight')

  config.stop_at_step = 3
  train.train_and_evaluate(config, tmp_path / 'resumed')
  assert [s for s, _ in support.records(tmp_path / 'resumed')] == [1, 2, 3]
  config.stop_at_step = 0
  monkeypatch.setattr(step, 'initial_variables', _never_initialise)
  train.train_and_evaluate(config, tmp_path / 'resumed')

  straight, resumed = support.records(tmp_path / 'straight'), support.records(tmp_path / 'resumed')
  assert [s for s, _ in straight] == list(range(1, 7))
  assert resumed == straight  # identical, bit for bit


def test_nonfinite_loss_stops_training_and_keeps_last_good_checkpoint(tiny_dataset, tmp_path,
                                                                     monkeypatch):
  config = support.tiny_config(tiny_dataset, stop_at_step=3, checkpoint_every_steps=3,
                               log_every_steps=3)
  train.train_and_evaluate(config, tmp_path)
  config.stop_at_step = 0
  # Every training image from step 4 on is NaN (through the data, not the config, so the
  # compiled train step of the first run is reused); the loss is first read at step 6.
  monkeypatch.setattr(transforms, 'normalize', lambda image: np.full(image.shape, np.nan,
                                                                     np.float32))
  with pytest.raises(FloatingPointError, match=r'Non-finite loss by step 6.*step 3'):
    train.train_and_evaluate(config, tmp_path)
  mngr = checkpoint.manager(tmp_path, keep=3, read_only=True)
  assert mngr.all_steps() == [3]
  _, variables = weights.restore_variables(config, tmp_path, build_model(config.model),
                                            parallel.make_mesh())
  assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(variables))


def test_missing_data_root_is_a_clear_error(tmp_path):
  config = support.tiny_config(tmp_path / 'no_such_dataset')
  with pytest.raises(FileNotFoundError, match='no_such_dataset'):
    train.train_and_evaluate(config, tmp_path / 'work')


def test_eval_without_checkpoint_is_a_clear_error(tiny_dataset, tmp_path):
  with pytest.raises(FileNotFoundError, match='No checkpoint'):
    evaluate.evaluate(support.tiny_config(tiny_dataset), tmp_path)


def test_init_from_fills_the_backbone_of_a_fresh_run(tiny_dataset, tmp_path):
  config = support.tiny_config(tiny_dataset)
  model, mesh = build_model(config.model), parallel.make_mesh()
  donor = jax.device_get(step.initial_variables(model, 123))
  checkpoint.save_variables(tmp_path / 'backbone', {
      'params': donor['params']['backbone'], 'batch_stats': donor['batch_stats']['backbone']})
  config.init_from = str(tmp_path / 'backbone')
  state, _, _ = train.initial_state(config, model, mesh)
  fresh, _, _ = train.initial_state(config, model, mesh, load_pretrained=False)

  same = lambda a, b: all(np.array_equal(x, y) for x, y in
                          zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  assert same(state.params['backbone'], donor['params']['backbone'])
  assert same(state.batch_stats['backbone'], donor['batch_stats']['backbone'])
  assert same(state.params['out_main'], fresh.params['out_main'])  # the head keeps its init
  assert not same(fresh.params['backbone'], donor['params']['backbone'])

  config.init_from = str(tmp_path / 'not_converted_yet')
  with pytest.raises(FileNotFoundError, match='not_converted_yet.*flanet-jax-convert'):
    train.initial_state(config, model, mesh)


class _ConvBNDense(nn.Module):
  """Random (conv, dense) and constant (BatchNorm) initialisers, quick to compile."""

  @nn.compact
  def __call__(self, x, train: bool):
    x = nn.BatchNorm(use_running_average=not train)(nn.Conv(8, (3, 3))(x))
    return nn.Dense(5)(x)


def test_initial_variables_are_the_models_init_placed_as_asked():
  model, mesh = _ConvBNDense(), parallel.make_mesh()
  reference = jax.jit(step.init_variables, static_argnums=0)
  kernels = []
  for seed in (0, 7):
    variables = step.initial_variables(model, seed, parallel.replicated(mesh))
    want = reference(model, seed)
    assert jax.tree.structure(variables) == jax.tree.structure(want)
    for got, expected in zip(jax.tree.leaves(variables), jax.tree.leaves(want)):
      assert got.sharding == parallel.replicated(mesh)
      # Compiled unoptimised on CPU: the same values to float32 rounding.
      np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-9)
    kernels.append(np.asarray(variables['params']['Conv_0']['kernel']))
  assert np.abs(kernels[0] - kernels[1]).min() > 0  # the seed reaches the initialisers
