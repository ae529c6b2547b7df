"""The training loop's hot path: no implicit host-device transfer between log points, and the
train step donates the state it replaces (8 simulated devices)."""

import contextlib

import jax
import pytest
from jax._src.array import ArrayImpl

from flanet_jax import train
from tests import support


@pytest.fixture(scope='module')
def run(tiny_dataset, tmp_path_factory):
  """The loop's own setup (train._setup): data iterator, jitted step, replicated state."""
  config = support.tiny_config(tiny_dataset)
  return train._setup(config, tmp_path_factory.mktemp('workdir'))


class HostSync(Exception):
  pass


@contextlib.contextmanager
def no_host_sync(monkeypatch):
  """Raises on any implicit transfer (jax.transfer_guard) and on any read of an array's value
  or wait for it. On CPU, arrays live in host memory and the guard ignores device-to-host
  reads (`float(loss)` passes it), so those are caught where every read goes through:
  `ArrayImpl._value` (float, bool, item, np.asarray, print, jax.device_get) and
  `block_until_ready`."""

  def sync(*args):
    raise HostSync('host sync in the hot loop')

  with monkeypatch.context() as patch, jax.transfer_guard('disallow'):
    patch.setattr(ArrayImpl, '_value', property(sync))
    patch.setattr(ArrayImpl, 'block_until_ready', sync)
    yield


def test_steps_between_log_points_make_no_implicit_transfer_or_host_sync(run, monkeypatch):
  start = int(run.state.step)
  nonfinite, window = train._all_finite(run.mesh), None  # as train._train starts
  with no_host_sync(monkeypatch):
    for _ in range(3):
      window, nonfinite = train._hot_step(run, window, nonfinite)
  assert int(run.state.step) == start + 3
  assert not bool(nonfinite) and set(window) >= {'loss', 'lr'}

  # The checks catch what the loop avoids: reading the loss every step, mixing in an array
  # that lives on one device only, a host value turned into an array implicitly.
  for sync in [lambda: float(window['loss']), lambda: jax.device_get(window),
               lambda: nonfinite | jax.numpy.zeros((), bool), lambda: window['loss'] + 1.0,
               lambda: jax.numpy.asarray([1.0])]:
    with no_host_sync(monkeypatch), pytest.raises((HostSync, jax.errors.JaxRuntimeError)):
      sync()


def test_train_step_donates_the_state(run):
  old_state = run.state
  window, _ = train._hot_step(run, None, train._all_finite(run.mesh))
  leaves = jax.tree.leaves(old_state)
  assert leaves and all(leaf.is_deleted() for leaf in leaves)  # buffers reused for the new one
  assert not any(leaf.is_deleted() for leaf in jax.tree.leaves(run.state))
  jax.block_until_ready(window)


@pytest.mark.parametrize('dtype', ['float32', 'bfloat16', 'float64'])
def test_train_step_returns_the_state_types_it_takes(tiny_dataset, dtype):
  """Otherwise the second step compiles again (a float64 BN update once made the running
  statistics float64)."""
  config = support.tiny_config(tiny_dataset, dtype=dtype)
  with jax.enable_x64(dtype == 'float64'):
    state, new_state, _ = support.abstract_train_step(config)
  types = lambda tree: [(jax.tree_util.keystr(p), x.shape, x.dtype)
                        for p, x in jax.tree_util.tree_leaves_with_path(tree)]
  assert types(new_state) == types(state)
