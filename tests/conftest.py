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


@pytest.fixture(scope='session')
def tiny_dataset(tmp_path_factory):
  """A small synthetic Cityscapes-layout dataset shared by the tests (read-only)."""
  from tests import support
  return support.write_tiny_dataset(tmp_path_factory.mktemp('data') / 'cityscapes')
