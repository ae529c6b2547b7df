"""Optax SGD with momentum, poly learning-rate schedule, weight-decay mask, head LR multiplier.

PyTorch's SGD adds `weight_decay * param` to the gradient before momentum; so does
`add_decayed_weights` chained before `sgd` here. Parameters outside `backbone` (the head and
the attention block) train with `head_lr_multiplier` times the learning rate.
"""

import jax
import optax

from flanet_jax import errors


def learning_rate_schedule(opt_config, total_steps: int) -> optax.Schedule:
  """Linear warm-up from warmup_init_ratio * lr, then poly decay to end_learning_rate."""
  base = opt_config.learning_rate
  warmup = opt_config.warmup_steps
  if not 0 <= warmup < total_steps:
    raise errors.UserValueError(f'optimizer.warmup_steps={warmup} must be in [0, {total_steps})')
  poly = optax.polynomial_schedule(base, opt_config.end_learning_rate, opt_config.poly_power,
                                   total_steps - warmup)
  if warmup == 0:
    return poly
  ramp = optax.linear_schedule(base * opt_config.warmup_init_ratio, base, warmup)
  return optax.join_schedules([ramp, poly], [warmup])


def weight_decay_mask(params, decay_norm_and_bias: bool = False):
  """True for conv/linear kernels; BN scale/bias, biases and gamma only if asked."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: decay_norm_and_bias or path[-1].key == 'kernel', params)


def param_groups(params):
  """'backbone' for the backbone's parameters, 'head' for everything else."""
  return {name: jax.tree.map(lambda _: 'backbone' if name == 'backbone' else 'head', subtree)
          for name, subtree in params.items()}


def make_optimizer(opt_config, total_steps: int, params):
  """Returns (optax transformation, learning-rate schedule of the backbone)."""
  schedule = learning_rate_schedule(opt_config, total_steps)
  multiplier = opt_config.head_lr_multiplier
  sgd = lambda lr: optax.sgd(lr, momentum=opt_config.momentum)
  tx = optax.chain(
      optax.add_decayed_weights(opt_config.weight_decay,
                                weight_decay_mask(params, opt_config.decay_norm_and_bias)),
      optax.multi_transform({'backbone': sgd(schedule),
                             'head': sgd(lambda step: multiplier * schedule(step))},
                            param_groups(params)))
  return tx, schedule
