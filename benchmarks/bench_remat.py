"""`model.remat`: memory and time of the FLANet-ResNet101 train step with and without it.

Batch 2 at 256x256, fp32, one device, train.py's jitted step (CE loss, SGD). Reported:
  saved for backward   bytes of the residuals the forward pass keeps for the backward pass,
                       in the program JAX hands to XLA (what remat changes, on any backend)
  XLA:CPU temp         compile-time peak temporary bytes of the whole step (memory_analysis)
  step time            median of --steps steps.
XLA:CPU removes the optimisation barriers that keep the recomputation apart and schedules it
freely, so on CPU the compiled memory drops far less than the saved residuals (GPU/TPU keep
the barriers). Usage:
  python benchmarks/bench_remat.py [--size 256] [--steps 3]   (prints a Markdown table)
"""

import argparse
import pathlib
import sys

import jax
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # configs/
from configs import default  # noqa: E402
from flanet_jax import parallel, step, train  # noqa: E402
from flanet_jax.models import build_model  # noqa: E402
from measure import median_step_time  # noqa: E402  (benchmarks/ is on sys.path)


def measure(remat: bool, size: int, steps: int) -> str:
  config = default.get_config()
  config.batch_size, config.loss.name, config.model.remat = 2, 'ce', remat
  mesh = parallel.make_mesh(jax.devices()[:1])
  model = build_model(config.model)
  state, tx, schedule = train.initial_state(config, model, mesh, load_pretrained=False)
  rng = np.random.default_rng(0)
  batch = parallel.to_global({'image': rng.normal(size=(2, size, size, 3)).astype(np.float32),
                              'label': rng.integers(0, 19, (2, size, size)).astype(np.int32)},
                             mesh)
  saved = step.saved_for_backward_bytes(model, state.variables, batch['image'])
  compiled = train._make_train_step(config, model, tx, schedule, mesh).lower(state,
                                                                             batch).compile()
  temp = compiled.memory_analysis().temp_size_in_bytes
  _, _, step_s = median_step_time(compiled, state, batch, steps)
  return f'| {remat} | {saved / 1e6:.0f} | {temp / 1e6:.0f} | {step_s:.2f} |'


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--size', type=int, default=256)
  parser.add_argument('--steps', type=int, default=3)
  args = parser.parse_args()
  print('| `model.remat` | Saved for backward (MB) | XLA:CPU temp (MB) | Step time (s) |')
  print('| --- | ---: | ---: | ---: |')
  for remat in (False, True):
    print(measure(remat, args.size, args.steps), flush=True)


if __name__ == '__main__':
  main()
