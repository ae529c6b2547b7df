"""Poly schedule, weight-decay mask and head LR multiplier."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from flanet_jax import optim, step
from flanet_jax.convert.registry import get_arch
from flanet_jax.models import build_model
from tests import support


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


# (model.backbone, converter arch of its ImageNet weights, model.attention): FLANet's real
# parameter names for ResNet and HRNet, with FLA and a non-local block.
REAL_MODELS = [('resnet18', 'resnet18', 'fla'), ('hrnet_w18_small', 'hrnet_w18_small', 'fla'),
               ('resnet18', 'resnet18', 'channel_nl')]


@functools.lru_cache  # both tests of a model share its (read-only) trees
def _flanet_params(backbone, attention):
  """(ShapeDtypeStructs of FLANet's params, the same tree with every leaf a scalar 1.0).

  The tree is traced (`jax.eval_shape`), nothing compiled; the optimizer's transforms are
  elementwise, so scalar leaves behave like the real ones and keep the real names.
  """
  config = support.tiny_config('unused', **{'model.backbone': backbone,
                                            'model.attention': attention})
  abstract = jax.eval_shape(lambda: step.init_variables(build_model(config.model), 0))['params']
  return abstract, jax.tree.map(lambda _: jnp.ones((), jnp.float32), abstract)


def _by_name(tree) -> dict:
  return {tuple(k.key for k in path): leaf
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _one_update(config, params, grads):
  tx, _ = optim.make_optimizer(config, total_steps=4, params=params)
  updates, _ = tx.update(grads, tx.init(params), params)
  return _by_name(updates)


@pytest.mark.parametrize('backbone,arch,attention', REAL_MODELS)
def test_head_lr_multiplier_on_flanet_parameter_names(backbone, arch, attention):
  """Exactly the parameters the ImageNet weights fill (the converter's template of the
  backbone) train at the base LR; the head, attention block and output modules at x10."""
  _, params = _flanet_params(backbone, attention)
  config = _opt_config(learning_rate=0.1, momentum=0.0, weight_decay=0.0,
                       head_lr_multiplier=10.0)
  updates = _one_update(config, params, jax.tree.map(jnp.ones_like, params))  # -lr per leaf
  pretrained = {('backbone', *key[1:]) for key in get_arch(arch).template({})
                if key[0] == 'params'}
  assert pretrained < set(updates)
  assert {name[0] for name in set(updates) - pretrained} == {
      'head_conv1', 'head_conv2', 'attention', 'out_main', 'out_aux1', 'out_aux2'}
  for name, update in updates.items():
    assert float(update) / -0.1 == pytest.approx(1.0 if name in pretrained else 10.0), name


@pytest.mark.parametrize('backbone,arch,attention', REAL_MODELS)
def test_weight_decay_mask_on_flanet_parameter_names(backbone, arch, attention):
  """Decay reaches the conv and linear kernels (FLANet's only parameters of rank >= 2: HWIO
  convs, the FLA block's dense layers), not BN scales and biases, conv biases or the
  attention gammas; with decay_norm_and_bias every parameter."""
  abstract, params = _flanet_params(backbone, attention)
  kernels = {name for name, leaf in _by_name(abstract).items() if leaf.ndim >= 2}
  others = {name[-1] for name in set(_by_name(abstract)) - kernels}
  assert others == {'scale', 'bias', 'gamma'} - ({'gamma'} if attention == 'none' else set())
  zero_grads = jax.tree.map(jnp.zeros_like, params)
  for decay_all in (False, True):
    config = _opt_config(learning_rate=0.1, momentum=0.0, weight_decay=0.5,
                         head_lr_multiplier=1.0, decay_norm_and_bias=decay_all)
    updates = _one_update(config, params, zero_grads)
    decayed = {name for name, update in updates.items() if float(update) != 0.0}
    assert decayed == (set(updates) if decay_all else kernels)
    for name in decayed:  # -lr * weight_decay * param
      assert float(updates[name]) == pytest.approx(-0.05), name
