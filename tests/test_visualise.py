"""`--mode visualise`: panels of image, ground truth, prediction and the attention's output."""

import functools

import jax
import numpy as np
import pytest
from PIL import Image

from flanet_jax import parallel, visualise, weights
from flanet_jax.data.transforms import normalize
from flanet_jax.models import build_model
from flanet_jax.models.flanet import ATTENTION_BLOCKS
from tests import support


def _random_checkpoint(monkeypatch):
  """weights.load -> step 7 with random variables (gammas non-zero: the attention shows)."""
  monkeypatch.setattr(weights, 'load', lambda config, workdir, model, mesh: weights.Weights(
      support.replicated_random_variables(model, mesh), step=7))


def _recorded_panels(monkeypatch) -> list[dict]:
  """The arrays each panel is drawn from, recorded as visualise draws it."""
  panels, draw = [], visualise.draw_panel

  def record(path, image, label, class_map, heatmap, palette, attention):
    panels.append(dict(path=path, image=image, label=label, class_map=class_map,
                       heatmap=heatmap))
    draw(path, image, label, class_map, heatmap, palette, attention)

  monkeypatch.setattr(visualise, 'draw_panel', record)
  return panels


@functools.partial(jax.jit, static_argnums=0)
def _independent_outputs(model, variables, image):
  """(class map, channel mean of the attention block's output), the block applied on its own
  to the head's features (the output of head_conv2, the block's input)."""
  main, _, _ = model.apply(variables, image, train=False)
  _, state = model.apply(variables, image, train=False,
                         capture_intermediates=lambda m, name: m.path == ('head_conv2',))
  (features,) = state['intermediates']['head_conv2']['__call__']
  block = ATTENTION_BLOCKS[model.attention](model.head_features)
  block_variables = {kind: tree['attention'] for kind, tree in variables.items()}
  attended = block.apply(block_variables, features, train=False)
  return main.argmax(axis=-1)[0], attended.mean(axis=-1)[0], features.mean(axis=-1)[0]


@pytest.mark.parametrize('attention', ['fla', 'channel_nl'])
def test_panels_show_the_attention_blocks_output(attention, tiny_dataset, tmp_path, monkeypatch):
  config = support.tiny_config(tiny_dataset, **{'model.attention': attention,
                                                'visualise.num_images': 2})
  _random_checkpoint(monkeypatch)
  panels = _recorded_panels(monkeypatch)
  out = visualise.visualise(config, tmp_path)

  assert out == tmp_path / 'visualise' / 'step_7'
  assert sorted(p.name for p in out.iterdir()) == sorted(f'{p["path"].stem}.png' for p in panels)
  assert len(panels) == 2
  model = build_model(config.model)
  variables = support.replicated_random_variables(model, parallel.make_mesh())
  for panel in panels:
    drawn = np.asarray(Image.open(panel['path']))
    assert drawn.ndim == 3 and drawn.shape[1] > 3 * drawn.shape[0]  # four panels in a row
    assert panel['image'].shape == (40, 72, 3) and panel['label'].shape == (40, 72)
    class_map, heatmap, input_mean = jax.device_get(_independent_outputs(
        model, variables, normalize(panel['image'])[None]))
    np.testing.assert_array_equal(panel['class_map'], class_map)
    assert panel['heatmap'].shape == (5, 9)  # stride 8
    np.testing.assert_allclose(panel['heatmap'], heatmap, rtol=1e-5, atol=1e-6)
    # The block's input would not pass: the attention changes it far beyond the tolerance.
    assert np.abs(heatmap - input_mean).max() > 1e-4
    assert np.ptp(heatmap) > 1e-3

  if attention == 'fla':  # a second run writes beside the first
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    assert visualise.visualise(config, tmp_path) == tmp_path / 'visualise' / 'step_7.2'
    assert first == {p.name: p.read_bytes() for p in out.iterdir()}


@pytest.mark.parametrize('key, value, message', [
    ('model.attention', 'none', "model.attention='none' has no block"),
    ('visualise.num_images', 0, 'visualise.num_images must be >= 1, got 0')])
def test_bad_settings_are_refused(key, value, message, tiny_dataset, tmp_path):
  config = support.tiny_config(tiny_dataset, **{key: value})
  with pytest.raises(ValueError, match=message):
    visualise.visualise(config, tmp_path)
  assert not (tmp_path / 'visualise').exists()


def test_visualise_mode_of_the_entry_point(tiny_dataset, tmp_path):
  config_file = support.write_tiny_config_file(tmp_path / 'none.py', tiny_dataset,
                                               **{'model.attention': 'none'})
  output = support.fails(support.launch_main(config_file, tmp_path / 'work', 1,
                                             '--mode=visualise'))
  assert "model.attention='none' has no block" in output
  assert not (tmp_path / 'work').exists()
