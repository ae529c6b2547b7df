"""Compile and run time of a config's model initialisation, XLA-optimised vs unoptimised.

`step.initial_variables` compiles the initialisation without LLVM optimisation on CPU (it runs
once, but compiles a random generator per parameter). For each config, both ways one after the
other in one process (no compilation cache): compile seconds, then the median run of --repeats.
Usage:
  python scripts/bench_init.py [--configs demo cityscapes_r101] [--repeats 3]
"""

import argparse
import importlib
import pathlib
import statistics
import sys
import time

import jax
import jax.numpy as jnp

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # configs/
from flanet_jax import step  # noqa: E402
from flanet_jax.models import build_model  # noqa: E402

WAYS = {'optimised': None, 'unoptimised': step.UNOPTIMISED}


def compile_and_run_seconds(model, options, repeats: int) -> tuple[float, float]:
  seed = jnp.int32(0)
  lowered = jax.jit(lambda s: step.init_variables(model, s)).lower(seed)
  start = time.perf_counter()
  compiled = lowered.compile(compiler_options=options)
  compile_seconds = time.perf_counter() - start
  runs = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(compiled(seed))
    runs.append(time.perf_counter() - start)
  return compile_seconds, statistics.median(runs)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--configs', nargs='+', default=['demo', 'cityscapes_r101'])
  parser.add_argument('--repeats', type=int, default=3)
  args = parser.parse_args()
  print(f'backend: {jax.default_backend()}')
  print('| config | XLA | compile (s) | run (s) | total (s) |\n|---|---|---|---|---|')
  for name in args.configs:
    config = importlib.import_module(f'configs.{name}').get_config()
    model = build_model(config.model, config.dtype)
    for way, options in WAYS.items():
      compile_seconds, run_seconds = compile_and_run_seconds(model, options, args.repeats)
      print(f'| {name} | {way} | {compile_seconds:.1f} | {run_seconds:.2f} | '
            f'{compile_seconds + run_seconds:.1f} |', flush=True)


if __name__ == '__main__':
  main()
