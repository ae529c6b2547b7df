"""Two OS processes (jax.distributed on localhost, CPU collectives) train like one process.

Both runs compute in float64, so any difference beyond rounding would be a real one (in
float32, BN gradients at initialisation are only accurate to ~0.5%; see test_parallel.py).
"""

import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import portpicker

from flanet_jax import checkpoint, evaluate, parallel
from flanet_jax.models import build_model
from tests import support

REPO = pathlib.Path(__file__).resolve().parents[1]


def _launch(config_file, workdir, devices, *flags, cache=None):
  env = dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}',
             JAX_PLATFORMS='cpu', JAX_ENABLE_X64='1')
  if cache:  # the suite's compilation cache: runs with the same topology compile once
    env.update(JAX_COMPILATION_CACHE_DIR=str(cache),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0.5')
  command = [sys.executable, '-m', 'flanet_jax.main', '--config', str(config_file),
             '--workdir', str(workdir), *flags]
  return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


def _wait(process):
  output, _ = process.communicate(timeout=600)
  assert process.returncode == 0, output
  return output


def _losses(workdir):
  lines = (workdir / 'metrics.jsonl').read_text().splitlines()
  return [(r['step'], r['loss']) for r in map(json.loads, lines) if 'loss' in r]


def test_two_processes_match_one_process_and_resume_on_another_topology(tiny_dataset,
                                                                        tmp_path, pytestconfig):
  config_file = tmp_path / 'tiny.py'
  config_file.write_text(
      'from tests import support\n\n'
      'def get_config():\n'
      f'  return support.tiny_config({str(tiny_dataset)!r}, batch_size=4, num_train_steps=3,\n'
      '                             log_every_steps=1, checkpoint_every_steps=1, dtype="float64",\n'
      '                             **{"data.eval_batch_size": 4})\n')
  port = portpicker.pick_unused_port()
  distributed = [f'--config.distributed.coordinator_address=localhost:{port}',
                 '--config.distributed.num_processes=2']
  # Two processes with 2 devices each stop after step 2; one process with 2 devices runs on.
  workers = [_launch(config_file, tmp_path / 'two', 2, *distributed, '--config.stop_at_step=2',
                     f'--config.distributed.process_id={i}') for i in range(2)]
  for process in workers:
    _wait(process)
  assert [s for s, _ in _losses(tmp_path / 'two')] == [1, 2]
  cache = pytestconfig.cache.mkdir('jax_compilation_cache')
  _wait(_launch(config_file, tmp_path / 'one', 2, cache=cache))
  # The 2-process run resumes in a single process with 2 devices: another process and device
  # count, so the data stream is re-positioned from the step and the state re-sharded.
  _wait(_launch(config_file, tmp_path / 'two', 2, cache=cache))

  two, one = _losses(tmp_path / 'two'), _losses(tmp_path / 'one')
  assert [s for s, _ in one] == [1, 2, 3]
  np.testing.assert_allclose([l for _, l in two], [l for _, l in one], rtol=1e-10)
  assert 'miou' in (tmp_path / 'two' / 'metrics.jsonl').read_text()

  # Both end in the same parameters.
  config = support.tiny_config(tiny_dataset)
  model, mesh = build_model(config.model), parallel.make_mesh()
  _, params_two = evaluate.restore_variables(config, tmp_path / 'two', model, mesh)
  _, params_one = evaluate.restore_variables(config, tmp_path / 'one', model, mesh)
  for a, b in zip(jax.tree.leaves(params_two), jax.tree.leaves(params_one)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-9)
  assert checkpoint.manager(tmp_path / 'two', keep=1, read_only=True).latest_step() == 3
