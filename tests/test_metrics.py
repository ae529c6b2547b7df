"""mIoU against a hand-computed example; evaluation counts every image exactly once."""

import jax.numpy as jnp
import numpy as np
import pytest

from flanet_jax import metrics, parallel
from flanet_jax.data import cityscapes
from flanet_jax.evaluate import Evaluator
from flanet_jax.models import build_model
from tests import support
from tests.test_export import ColourModel


def test_miou_hand_computed():
  labels = jnp.array([[0, 0, 1, 1, 2, 255],
                      [0, 0, 1, 1, 2, 2]])
  predictions = jnp.array([[0, 1, 1, 1, 0, 2],
                           [0, 0, 1, 2, 2, 2]])
  confusion = np.asarray(metrics.confusion_matrix(predictions, labels, num_classes=4))
  # [true, predicted]; the 255 pixel is not counted.
  np.testing.assert_array_equal(confusion, [[3, 1, 0, 0], [0, 3, 1, 0], [1, 0, 2, 0],
                                            [0, 0, 0, 0]])
  result = metrics.scores(confusion)
  # IoU = TP / (TP + FP + FN): class 0: 3/(3+1+1), class 1: 3/(3+1+1), class 2: 2/(2+1+1);
  # class 3 never occurs and is left out of the mean.
  np.testing.assert_allclose(result['iou'][:3], [0.6, 0.6, 0.5])
  assert np.isnan(result['iou'][3])
  assert result['miou'] == pytest.approx((0.6 + 0.6 + 0.5) / 3)
  assert result['pixel_accuracy'] == pytest.approx(8 / 11)
  assert result['num_pixels'] == 11
  table = metrics.format_table(result, ['a', 'b', 'c', 'd'])
  assert '56.67' in table and 'n/a' in table


@pytest.mark.parametrize('eval_batch_size', [8, 16])
def test_evaluator_counts_every_pixel_once_with_uneven_batches(tiny_dataset, eval_batch_size):
  # 6 val images: one padded batch of 8 rows, or one of 16 (10 padding rows over 8 devices).
  config = support.tiny_config(tiny_dataset, **{'data.eval_batch_size': eval_batch_size})
  model = build_model(config.model)
  mesh = parallel.make_mesh()
  variables = support.replicated_random_variables(model, mesh)
  evaluator = Evaluator(config, model, mesh)
  seen = []
  result = evaluator.run(variables, lambda indices, maps: seen.extend(indices))

  source = cityscapes.CityscapesSource(str(tiny_dataset), 'val')
  label_counts = np.zeros(19, np.int64)
  for i in range(len(source)):
    label = source[i]['label']
    label_counts += np.bincount(label[label != 255], minlength=19)
  np.testing.assert_array_equal(result['confusion'].sum(axis=1), label_counts)
  assert result['num_pixels'] == label_counts.sum() > 0
  assert sorted(seen) == list(range(len(source)))


def test_evaluator_scores_the_same_with_worker_processes(tiny_dataset):
  config = support.tiny_config(tiny_dataset)
  evaluator = Evaluator(config, ColourModel(), parallel.make_mesh())  # a real, imperfect mIoU
  passes = []
  for workers in (0, 2):
    config.data.workers = workers  # read by each pass: one Evaluator, compiled once
    maps = {}
    result = evaluator.run({}, lambda indices, class_maps: maps.update(zip(indices, class_maps)))
    passes.append((result, maps))
  (serial, serial_maps), (in_workers, worker_maps) = passes
  assert sorted(serial_maps) == sorted(worker_maps) == list(range(6))
  for index, class_map in serial_maps.items():
    np.testing.assert_array_equal(worker_maps[index], class_map)
  np.testing.assert_array_equal(in_workers['confusion'], serial['confusion'])
  assert in_workers['miou'] == serial['miou'] > 0.2
