"""Python time to trace one paper-size train step (what a run waits for before XLA compiles).

For each config: jax.jit(step.train_step).trace at the config's batch and crop size, from
abstract state (nothing allocated or compiled); the median of --repeats fresh traces. Usage:
  python scripts/bench_trace.py [--configs cityscapes_r101 cityscapes_hrnet48] [--repeats 3]
"""

import argparse
import functools
import importlib
import pathlib
import statistics
import sys
import time

import jax
import jax.numpy as jnp

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # configs/
from flanet_jax import optim, step  # noqa: E402
from flanet_jax.models import build_model  # noqa: E402


def trace_seconds(config) -> float:
  model = build_model(config.model, config.dtype)
  variables = jax.eval_shape(lambda: step.init_variables(model, config.seed))
  tx, schedule = optim.make_optimizer(config.optimizer, config.num_train_steps,
                                      variables['params'])
  state = jax.eval_shape(lambda v: step.create_train_state(v, tx, config.seed), variables)
  shape = (config.batch_size, *config.data.crop_size)
  batch = {'image': jax.ShapeDtypeStruct((*shape, 3), jnp.float32),
           'label': jax.ShapeDtypeStruct(shape, jnp.int32)}
  train_step = jax.jit(functools.partial(step.train_step, model=model, tx=tx, schedule=schedule,
                                         loss_config=config.loss))
  start = time.perf_counter()
  train_step.trace(state, batch)
  return time.perf_counter() - start


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--configs', nargs='+', default=['cityscapes_r101', 'cityscapes_hrnet48'])
  parser.add_argument('--repeats', type=int, default=3)
  args = parser.parse_args()
  print('| config | trace (s) |\n|---|---|')
  for name in args.configs:
    config = importlib.import_module(f'configs.{name}').get_config()
    times = [trace_seconds(config) for _ in range(args.repeats)]
    print(f'| {name} | {statistics.median(times):.2f} |', flush=True)


if __name__ == '__main__':
  main()
