"""Data parallelism: 8 devices compute what 1 device computes (cross-replica BN).

In float64 the two agree to float32 rounding of the parameters, which shows the computation is
the same: BatchNorm statistics are over the global batch. In float32 the gradients of a deep
BN network at initialisation are themselves only accurate to ~0.5% (cancelling sums in BN's
backward pass: the one-device float32 step's worst parameter update is 0.6% off the float64
one's, the eight-device step's 0.7%, in other layers), so there the 8-device step is held to
the accuracy of the 1-device float32 step against the float64 one: its worst update error at
most twice the 1-device step's, loss and BN statistics to 1e-5.
"""

import functools

import jax
import numpy as np
import pytest

from flanet_jax import optim, parallel, step
from flanet_jax.models import build_model
from tests import support


def _run_on(devices, model, config, variables, batch):
  """(new state, metrics) of one train step with the batch sharded over `devices`."""
  mesh = parallel.make_mesh(devices)
  replicated, sharded = parallel.replicated(mesh), parallel.batch_sharding(mesh)
  tx, schedule = optim.make_optimizer(config.optimizer, config.num_train_steps,
                                      variables['params'])
  state = jax.device_put(step.create_train_state(variables, tx, config.seed), replicated)
  train_step = jax.jit(functools.partial(step.train_step, model=model, tx=tx,
                                         schedule=schedule, loss_config=config.loss),
                       in_shardings=(replicated, sharded), out_shardings=(replicated, replicated))
  return jax.device_get(train_step(state, jax.device_put(batch, sharded)))


def _leaf_errors(actual, desired):
  """{leaf: ||a - b||} and {leaf: ||b||}."""
  diff, norm = {}, {}
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(actual), jax.tree.leaves(desired)):
    name = jax.tree_util.keystr(path)
    diff[name] = np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64))
    norm[name] = np.linalg.norm(np.asarray(b, np.float64))
  return diff, norm


def _assert_close(actual, desired, rtol, rms_atol=0.0):
  """Per leaf ||a - b|| <= rtol ||b|| + rms_atol sqrt(size) (BN biases start at 0)."""
  diff, norm = _leaf_errors(actual, desired)
  sizes = {jax.tree_util.keystr(p): np.size(x)
           for p, x in jax.tree_util.tree_leaves_with_path(desired)}
  bad = {k: (diff[k], norm[k]) for k in diff
         if diff[k] > rtol * norm[k] + rms_atol * np.sqrt(sizes[k])}
  assert not bad, bad


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """One train step in float64 on 1 and on 8 devices and in float32 on 1 and on 8, same batch
  and init."""
  config = support.tiny_config(tmp_path_factory.mktemp('unused'), batch_size=8)
  config.model.dropout_rate = 0.0  # float64 draws other dropout masks than float32
  config.optimizer.learning_rate = 1.0  # updates far above the params' float32 rounding
  rng = np.random.default_rng(0)
  batch = {'image': rng.normal(size=(8, 32, 40, 3)).astype(np.float32),
           'label': rng.integers(0, 19, size=(8, 32, 40)).astype(np.int32)}
  batch['label'][:, :3] = 255
  variables = jax.device_get(step.initial_variables(build_model(config.model), 0))
  variables['params']['attention']['gamma'] = np.float32(0.5)  # every parameter in play
  results = {}
  for dtype, count in [('float64', 1), ('float64', 8), ('float32', 1), ('float32', 8)]:
    with jax.enable_x64(dtype == 'float64'):
      model = build_model(config.model, dtype)
      results[dtype, count] = _run_on(jax.devices()[:count], model, config, variables, batch)
  return variables, results


def _update(state, variables):
  """What one SGD step added to the parameters: -lr (gradient + weight decay) at step 1."""
  return jax.tree.map(np.subtract, state.params, variables['params'])


def test_eight_devices_match_one_device_in_float64(runs):
  assert jax.device_count() == 8
  variables, results = runs
  (state1, metrics1), (state8, metrics8) = results['float64', 1], results['float64', 8]
  assert abs(metrics8['loss'] - metrics1['loss']) <= 1e-12 * metrics1['loss']
  _assert_close(_update(state8, variables), _update(state1, variables), rtol=1e-6,
                rms_atol=1e-9)
  _assert_close(state8.params, state1.params, rtol=1e-6, rms_atol=1e-9)
  _assert_close(state8.batch_stats, state1.batch_stats, rtol=1e-6)
  # The statistics really moved: the comparison is not between two untouched states.
  first_bn = state1.batch_stats['backbone']['bn1']['mean']
  assert np.abs(first_bn - variables['batch_stats']['backbone']['bn1']['mean']).max() > 1e-3


def _worst_update_error(state, state64, variables):
  """max over parameters of ||update - float64 update|| / ||float64 update||."""
  diff, norm = _leaf_errors(_update(state, variables), _update(state64, variables))
  assert all(norm.values())  # every parameter moved
  return max(diff[k] / norm[k] for k in diff)


def test_eight_devices_in_float32_are_as_accurate_as_one_device_in_float32(runs):
  variables, results = runs
  (state8, metrics8), (state64, metrics64) = results['float32', 8], results['float64', 1]
  assert abs(metrics8['loss'] - metrics64['loss']) <= 1e-5 * metrics64['loss']
  _assert_close(state8.batch_stats, state64.batch_stats, rtol=1e-5)
  one_device = _worst_update_error(results['float32', 1][0], state64, variables)
  assert one_device < 0.02  # float32's own accuracy here (0.6%)
  assert _worst_update_error(state8, state64, variables) <= 2 * one_device
