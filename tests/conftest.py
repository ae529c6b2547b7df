"""Test setup: eight simulated CPU devices, set before JAX is first imported."""

import os

os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=8').strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')


def pytest_configure(config):
  """Compiled programs are cached on disk: tests that rebuild the same step reuse them."""
  import jax
  cache = config.cache.mkdir('jax_compilation_cache')
  jax.config.update('jax_compilation_cache_dir', str(cache))
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)

import pytest  # noqa: E402  (after the environment above)

# The slowest files, slowest first (by `pytest --durations`), run first: `make test` hands whole
# files to its two processes in collection order (`--dist loadfile --no-loadscope-reorder`), so
# no long file starts last while the other process sits idle.
SLOWEST_FIRST = ('test_configs.py', 'test_train.py', 'test_multiprocess.py',
                 'test_nonlocal_blocks.py', 'test_flanet_backbones.py', 'test_convert.py',
                 'test_models.py', 'test_model_options.py', 'test_parallel.py',
                 'test_train_parity.py', 'test_kernels.py', 'test_predict.py')


def pytest_collection_modifyitems(items):
  rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest in order


@pytest.fixture(scope='session')
def tiny_dataset(tmp_path_factory):
  """A small synthetic Cityscapes-layout dataset shared by the tests (read-only)."""
  from tests import support
  return support.write_tiny_dataset(tmp_path_factory.mktemp('data') / 'cityscapes')
