"""Poly schedule, weight-decay mask and head LR multiplier."""

import jax
import jax.numpy as jnp
import numpy as np

from configs import default
from flanet_jax import optim


def _opt_config(**overrides):
  config = default.get_config().optimizer
  config.unlock()
  config.update(overrides)
  return config


def test_poly_schedule_values():
  config = _opt_config(learning_rate=0.01, poly_power=0.9, end_learning_rate=0.0)
  schedule = optim.learning_rate_schedule(config, total_steps=1000)
  for step in (0, 1, 250, 999, 1000):
    assert abs(float(schedule(step)) - 0.01 * (1 - step / 1000) ** 0.9) < 1e-9


def test_poly_schedule_with_warmup():
  config = _opt_config(learning_rate=0.02, warmup_steps=100, warmup_init_ratio=0.1,
                       end_learning_rate=1e-4)
  schedule = optim.learning_rate_schedule(config, total_steps=1100)
  assert abs(float(schedule(0)) - 0.002) < 1e-9
  assert abs(float(schedule(50)) - (0.002 + 0.5 * 0.018)) < 1e-8
  for step in (100, 600, 1100):
    want = (0.02 - 1e-4) * (1 - (step - 100) / 1000) ** 0.9 + 1e-4
    assert abs(float(schedule(step)) - want) < 1e-8


def _params():
  rng = np.random.default_rng(0)
  leaf = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)
  return {'backbone': {'conv1': {'kernel': leaf(3, 3, 3, 4)},
                       'bn1': {'scale': leaf(4), 'bias': leaf(4)}},
          'attention': {'gamma': leaf(), 'row_prior': {'kernel': leaf(4, 4), 'bias': leaf(4)}},
          'out_main': {'classifier': {'kernel': leaf(1, 1, 4, 3), 'bias': leaf(3)}}}


def test_weight_decay_mask_selects_kernels_only():
  mask = optim.weight_decay_mask(_params())
  assert mask['backbone']['conv1']['kernel'] and mask['attention']['row_prior']['kernel']
  assert not any([mask['backbone']['bn1']['scale'], mask['backbone']['bn1']['bias'],
                  mask['attention']['gamma'], mask['attention']['row_prior']['bias'],
                  mask['out_main']['classifier']['bias']])
  assert all(jax.tree.leaves(optim.weight_decay_mask(_params(), decay_norm_and_bias=True)))


def test_sgd_update_matches_pytorch_rule_with_head_multiplier():
  """Two steps of PyTorch SGD: buf = m*buf + (g + wd*p); p -= lr_group * buf."""
  config = _opt_config(learning_rate=0.1, weight_decay=0.01, momentum=0.9,
                       head_lr_multiplier=10.0, poly_power=1.0)
  params = _params()
  tx, schedule = optim.make_optimizer(config, total_steps=4, params=params)
  opt_state = tx.init(params)
  mask = optim.weight_decay_mask(params)
  rng = np.random.default_rng(1)
  want, buffers = jax.tree.map(np.asarray, params), jax.tree.map(np.zeros_like, params)
  for step in range(2):
    grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = jax.tree.map(jnp.add, params, updates)
    lr = float(schedule(step))
    for group in want:
      group_lr = lr * (1.0 if group == 'backbone' else 10.0)
      flat_p, treedef = jax.tree.flatten(want[group])
      flat_b = jax.tree.leaves(buffers[group])
      flat_g = jax.tree.leaves(grads[group])
      flat_m = jax.tree.leaves(mask[group])
      new_b = [0.9 * b + np.asarray(g) + (0.01 * p if m else 0.0)
               for p, b, g, m in zip(flat_p, flat_b, flat_g, flat_m)]
      want[group] = jax.tree.unflatten(treedef, [p - group_lr * b for p, b in zip(flat_p, new_b)])
      buffers[group] = jax.tree.unflatten(treedef, new_b)
  for got_leaf, want_leaf in zip(jax.tree.leaves(params), jax.tree.leaves(want)):
    np.testing.assert_allclose(np.asarray(got_leaf), want_leaf, rtol=1e-5, atol=1e-6)
  assert abs(float(schedule(1)) - 0.1 * 0.75) < 1e-7
