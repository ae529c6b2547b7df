"""Multi-scale + flip + sliding windows with a real (tiny) FLANet, sharded over 8 devices."""

import functools

import jax
import numpy as np
import pytest

from flanet_jax import data, inference, parallel, step
from flanet_jax.evaluate import Evaluator
from flanet_jax.models import build_model
from tests import layouts, support


@pytest.fixture(scope='module')
def ade_root(tmp_path_factory):
  return layouts.write_ade20k(tmp_path_factory.mktemp('ade'), num_train=1, num_val=3)


def test_sharded_ms_flip_slide_evaluation_of_mixed_sizes(ade_root):
  config = support.tiny_config(ade_root, **{
      'data.name': 'ade20k', 'model.num_classes': 150, 'eval.mode': 'slide',
      'eval.crop_size': (16, 16), 'eval.stride': (10, 10), 'eval.multi_scale': True,
      'eval.scales': (0.75, 1.0), 'eval.flip': True, 'eval.size_divisor': 8})
  model, mesh = build_model(config.model), parallel.make_mesh()
  def zero_classifier_bias(variables):  # else it decides every pixel
    variables['params']['out_main']['classifier']['bias'] *= 0

  variables = support.replicated_random_variables(model, mesh, zero_classifier_bias)
  evaluator = Evaluator(config, model, mesh)
  (indices, maps), = list(evaluator.predictions(variables))  # 3 images + 5 padding rows
  assert indices == [0, 1, 2] and maps.shape == (3, 40, 48)  # 36 x 44 rounded up to 8

  # The same batch on one device without shard_map gives the same classes.
  batch = next(data.pipeline.eval_batches(evaluator.source, global_batch=8, process_index=0,
                                          process_count=1, size_divisor=8))[0]
  settings = inference.Settings.from_config(config.eval)
  unsharded = jax.jit(functools.partial(step.eval_step, model=model, settings=settings))(
      jax.device_get(variables), batch['image'], batch['size'])
  np.testing.assert_array_equal(maps, np.asarray(unsharded)[:3])
  assert len(np.unique(maps)) > 3  # not a constant prediction

  # Scoring counts each labelled pixel of the three images exactly once.
  result = evaluator.run(variables)
  counts = np.zeros(150, np.int64)
  for i in range(3):
    label = evaluator.source[i]['label']
    counts += np.bincount(label[label != 255], minlength=150)
  np.testing.assert_array_equal(result['confusion'].sum(axis=1), counts)
