"""MetricWriter: TensorBoard images, from process 0 only."""

import jax
import numpy as np

from flanet_jax.reporting import MetricWriter
from tests import support


def test_images_reach_tensorboard_unchanged(tmp_path):
  rng = np.random.default_rng(0)
  first, second = (rng.integers(0, 256, (5, 7, 3), dtype=np.uint8) for _ in range(2))
  writer = MetricWriter(tmp_path)
  writer.image(3, 'eval_predictions/a', first)
  writer.image(6, 'eval_predictions/a', second)
  writer.close()
  [(step_a, read_a), (step_b, read_b)] = support.tensorboard_images(tmp_path / 'tensorboard')[
      'eval_predictions/a']
  assert (step_a, step_b) == (3, 6)
  np.testing.assert_array_equal(read_a, first)
  np.testing.assert_array_equal(read_b, second)


def test_other_processes_write_nothing(tmp_path, monkeypatch):
  monkeypatch.setattr(jax, 'process_index', lambda: 1)
  writer = MetricWriter(tmp_path)
  writer.image(1, 'eval_predictions/a', np.zeros((2, 2, 3), np.uint8))
  writer.write(1, {'loss': 1.0})
  writer.close()
  assert not list(tmp_path.iterdir())
