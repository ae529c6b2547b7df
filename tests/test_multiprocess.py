"""Two OS processes (jax.distributed on localhost, CPU collectives) train like one process.

Both runs compute in float64, so any difference beyond rounding would be a real one (in
float32, BN gradients at initialisation are only accurate to ~0.5%; see test_parallel.py).
"""

import jax
import numpy as np
import portpicker

from flanet_jax import checkpoint, parallel, weights
from flanet_jax.models import build_model
from tests import support

X64 = {'JAX_ENABLE_X64': '1'}


def test_two_processes_match_one_process_and_resume_on_another_topology(tiny_dataset,
                                                                        tmp_path, pytestconfig):
  config_file = support.write_tiny_config_file(
      tmp_path / 'tiny.py', tiny_dataset, batch_size=4, num_train_steps=3, log_every_steps=1,
      checkpoint_every_steps=1, dtype='float64', **{'data.eval_batch_size': 4})
  port = portpicker.pick_unused_port()
  distributed = [f'--config.distributed.coordinator_address=localhost:{port}',
                 '--config.distributed.num_processes=2']
  # Two processes with 2 devices each stop after step 2; one process with 2 devices runs on.
  workers = [support.launch_main(config_file, tmp_path / 'two', 2, *distributed,
                                 '--config.stop_at_step=2',
                                 f'--config.distributed.process_id={i}', env=X64)
             for i in range(2)]
  for process in workers:
    support.wait(process)
  assert [s for s, _ in support.records(tmp_path / 'two')] == [1, 2]
  cache = pytestconfig.cache.mkdir('jax_compilation_cache')
  support.wait(support.launch_main(config_file, tmp_path / 'one', 2, cache=cache, env=X64))
  # The 2-process run resumes in a single process with 2 devices: another process and device
  # count, so the data stream is re-positioned from the step and the state re-sharded.
  support.wait(support.launch_main(config_file, tmp_path / 'two', 2, cache=cache, env=X64))

  two, one = support.records(tmp_path / 'two'), support.records(tmp_path / 'one')
  assert [s for s, _ in one] == [1, 2, 3]
  np.testing.assert_allclose([l for _, l in two], [l for _, l in one], rtol=1e-10)
  assert 'miou' in (tmp_path / 'two' / 'metrics.jsonl').read_text()

  # Both end in the same parameters.
  config = support.tiny_config(tiny_dataset)
  model, mesh = build_model(config.model), parallel.make_mesh()
  _, params_two = weights.restore_variables(config, tmp_path / 'two', model, mesh)
  _, params_one = weights.restore_variables(config, tmp_path / 'one', model, mesh)
  for a, b in zip(jax.tree.leaves(params_two), jax.tree.leaves(params_one)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-9)
  assert checkpoint.manager(tmp_path / 'two', keep=1, read_only=True).latest_step() == 3
