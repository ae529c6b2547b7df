"""Checkpoint save time of a replicated train state: one replica writing each array (what
flanet_jax.checkpoint registers) vs Orbax's replica-parallel writes (its CPU/TPU default).

One process, the config's freshly initialised state replicated over all devices; for each
way, in a new workdir, the first save (which compiles what the way needs) and the median of
--repeats later saves. Usage (8 simulated CPU devices):
  XLA_FLAGS=--xla_force_host_platform_device_count=8 python scripts/bench_checkpoint.py \
      [--config demo] [--repeats 3]
"""

import argparse
import importlib
import pathlib
import statistics
import sys
import tempfile
import time

import jax
import orbax.checkpoint as ocp

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # configs/
from flanet_jax import checkpoint, parallel, train  # noqa: E402
from flanet_jax.models import build_model  # noqa: E402


def save_seconds(state, workdir: pathlib.Path, step: int) -> float:
  mngr = checkpoint.manager(workdir, keep=1)
  start = time.perf_counter()
  mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state)))
  mngr.wait_until_finished()
  return time.perf_counter() - start


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--config', default='demo')
  parser.add_argument('--repeats', type=int, default=3)
  args = parser.parse_args()
  config = importlib.import_module(f'configs.{args.config}').get_config()
  mesh = parallel.make_mesh()
  state, _, _ = train.initial_state(config, build_model(config.model, config.dtype), mesh,
                                    load_pretrained=False)
  print(f'{args.config}, {jax.device_count()} {jax.default_backend()} devices')
  print('| writes | first save (s) | later saves (s) |\n|---|---|---|')
  for way, replica_parallel in [('one replica', False), ('replica-parallel', True)]:
    ocp.type_handlers.register_type_handler(
        jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=replica_parallel),
        override=True)
    workdir = pathlib.Path(tempfile.mkdtemp())
    first = save_seconds(state, workdir, 0)
    later = [save_seconds(state, workdir, step) for step in range(1, args.repeats + 1)]
    print(f'| {way} | {first:.2f} | {statistics.median(later):.2f} |', flush=True)


if __name__ == '__main__':
  main()
