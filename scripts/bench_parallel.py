"""Compile time and step time of the data-parallel train step on 1 and on 8 devices.

Runs itself once per device count in a fresh process (XLA_FLAGS is read when JAX starts):
`--xla_force_host_platform_device_count=N` simulates N CPU devices. The step is train.py's
(state replicated, batch sharded on `data`, donated state): FLANet-ResNet18 (7x7 stem, 64-wide
head), global batch 8 at 96x96, CE loss. The N devices share this machine's cores, so the
step time shows the cost of partitioning, not a speed-up. Usage:
  python scripts/bench_parallel.py [--devices 1,8] [--steps 5]   (prints a Markdown table)
"""

import argparse
import os
import pathlib
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]


def measure(steps: int) -> str:
  """One table row for the devices this process has."""
  import jax
  import numpy as np
  sys.path.insert(0, str(REPO))
  from configs import default
  from flanet_jax import parallel, train
  from flanet_jax.models import build_model
  from bench_timing import median_step_time  # scripts/ is on sys.path

  config = default.get_config()
  config.batch_size, config.loss.name = 8, 'ce'
  config.model.update(backbone='resnet18', deep_stem=False, head_features=64, aux_features=32)
  mesh = parallel.make_mesh()
  model = build_model(config.model)
  state, tx, schedule = train.initial_state(config, model, mesh, load_pretrained=False)
  step = train._make_train_step(config, model, tx, schedule, mesh)
  rng = np.random.default_rng(0)
  batch = parallel.to_global({'image': rng.normal(size=(8, 96, 96, 3)).astype(np.float32),
                              'label': rng.integers(0, 19, (8, 96, 96)).astype(np.int32)}, mesh)
  start = time.perf_counter()
  compiled = step.lower(state, batch).compile()
  compile_s = time.perf_counter() - start
  _, metrics, step_s = median_step_time(compiled, state, batch, steps)
  return (f'| {jax.device_count()} | {compile_s:.1f} | {step_s:.3f} | '
          f'{float(metrics["loss"]):.4f} |')


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--devices', default='1,8')
  parser.add_argument('--steps', type=int, default=5)
  parser.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    print(measure(args.steps))
    return
  print('| Devices | Compile (s) | Step (s, median) | Loss after the steps |')
  print('| ---: | ---: | ---: | ---: |')
  for count in args.devices.split(','):
    env = dict(os.environ, JAX_PLATFORMS='cpu',
               XLA_FLAGS=f'--xla_force_host_platform_device_count={count}')
    out = subprocess.run([sys.executable, __file__, '--child', '--steps', str(args.steps)],
                         env=env, check=True, capture_output=True, text=True).stdout
    print(out.strip().splitlines()[-1], flush=True)


if __name__ == '__main__':
  main()
