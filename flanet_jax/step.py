"""Train state and the pure train/eval step functions (jitted with shardings in train.py)."""

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from flanet_jax import inference, losses


@flax.struct.dataclass
class TrainState:
  step: jnp.ndarray
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jnp.ndarray  # raw uint32 PRNG key; dropout at step s uses fold_in(rng, s)

  @property
  def variables(self):
    return {'params': self.params, 'batch_stats': self.batch_stats}


INIT_IMAGE_SHAPE = (1, 64, 64, 3)  # the variables do not depend on the image size


def init_variables(model, seed, image_shape=INIT_IMAGE_SHAPE):
  """Model variables from `seed` (an int, or a traced int32 scalar)."""
  return model.init({'params': jax.random.PRNGKey(seed)}, jnp.zeros(image_shape, jnp.float32),
                    train=False)


# Initialisation runs once per run, but compiles a random generator per parameter: on CPU,
# compiling it without LLVM optimisation saves more time than the unoptimised code loses in
# its single run (BENCHMARKS.md, Initialisation).
UNOPTIMISED = {'xla_backend_optimization_level': 0}


def initial_variables(model, seed: int, sharding=None):
  """`init_variables`, compiled with the seed as an argument (one compile per model, on CPU
  unoptimised: values equal to float32 rounding) and placed with `sharding`."""
  init = jax.jit(lambda s: init_variables(model, s), out_shardings=sharding)
  options = UNOPTIMISED if jax.default_backend() == 'cpu' else None
  seed = jnp.int32(seed)
  return init.lower(seed).compile(compiler_options=options)(seed)


def create_train_state(variables, tx, seed: int) -> TrainState:
  return TrainState(step=jnp.zeros((), jnp.int32), params=variables['params'],
                    batch_stats=variables['batch_stats'],
                    opt_state=tx.init(variables['params']),
                    rng=jax.random.fold_in(jax.random.PRNGKey(seed), 1))


def train_step(state: TrainState, batch, *, model, tx, schedule, loss_config):
  """One SGD step on a global batch {'image': (B,H,W,3) f32, 'label': (B,H,W) int}."""
  dropout_rng = jax.random.fold_in(state.rng, state.step)

  def loss_fn(params):
    outputs, updates = model.apply({'params': params, 'batch_stats': state.batch_stats},
                                   batch['image'], train=True, rngs={'dropout': dropout_rng},
                                   mutable=['batch_stats'])
    total, parts = losses.flanet_loss(outputs, batch['label'], loss_config)
    return total, (parts, updates['batch_stats'])

  (loss, (parts, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  # Running statistics keep their stored dtype: a float64 compute dtype would otherwise change
  # the state's types after step 1 and compile the step a second time.
  batch_stats = jax.tree.map(lambda new, old: new.astype(old.dtype), batch_stats,
                             state.batch_stats)
  new_state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                            batch_stats=batch_stats, opt_state=opt_state)
  step_metrics = {'loss': loss, 'lr': schedule(state.step), **parts}
  return new_state, step_metrics


def saved_for_backward_bytes(model, variables, images) -> int:
  """Bytes that the training forward pass keeps for the backward pass (the residuals held by
  its VJP), in the program JAX builds, before XLA: what `model.remat` reduces. Compilers may
  reschedule the recomputation; XLA:CPU drops the barriers that keep it apart, so its compiled
  memory shows less of the saving than GPU and TPU."""

  def forward(params, stats):
    return model.apply({'params': params, 'batch_stats': stats}, images, train=True,
                       rngs={'dropout': jax.random.key(1)}, mutable=['batch_stats'])

  vjp = jax.eval_shape(lambda p, s: jax.vjp(forward, p, s)[1], variables['params'],
                       variables['batch_stats'])
  return sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(vjp))


def _main_output(model, variables):
  return lambda x: model.apply(variables, x, train=False)[0]


def eval_step(variables, images, sizes, *, model, settings):
  """Class maps (B,H,W) int32 of a padded batch with true `sizes` (B,2); see inference.py."""
  return inference.predict(_main_output(model, variables), images, sizes, settings)


def eval_scores(variables, images, sizes, *, model, settings):
  """Class scores (B,H,W,K) float32 behind `eval_step`'s maps: the logits of a single pass,
  else the sum of the passes' softmax (`inference.scores`)."""
  return inference.scores(_main_output(model, variables), images, sizes, settings)
