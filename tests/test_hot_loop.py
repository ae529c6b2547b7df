"""The training loop's hot path: no implicit host-device transfer and no read of a device
value between log points, and the train step donates the state it replaces (8 simulated
devices)."""

import contextlib
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import io_callback

from flanet_jax import train
from tests import support

HOLD_SECONDS = 20  # far longer than dispatching a few compiled steps takes


@pytest.fixture(scope='module')
def run(tiny_dataset, tmp_path_factory):
  """The loop's own setup (train._setup): data iterator, jitted step, replicated state."""
  config = support.tiny_config(tiny_dataset)
  return train._setup(config, tmp_path_factory.mktemp('workdir'))


@contextlib.contextmanager
def device_held_back(run):
  """Yields a gate that stays closed for HOLD_SECONDS: until it opens, no state or metrics of
  the train step exist, so any read of their values (float, bool, np.asarray, device_get,
  block_until_ready, ...) waits for it. On CPU, arrays live in host memory and
  jax.transfer_guard lets such reads pass; holding the values back catches them on any
  backend. The gate is a host callback that the step's outputs depend on."""
  gate = threading.Event()

  def wait():
    gate.wait()
    return np.int32(0)

  @jax.jit
  def held(outputs):
    token = io_callback(wait, jax.ShapeDtypeStruct((), jnp.int32))
    return jax.lax.optimization_barrier((token, outputs))[1]

  train_step = run.train_step
  run.train_step = lambda state, batch: held(train_step(state, batch))
  timer = threading.Timer(HOLD_SECONDS, gate.set)
  timer.start()
  try:
    yield gate
  finally:
    gate.set()
    timer.cancel()
    run.train_step = train_step


def test_steps_between_log_points_make_no_implicit_transfer_or_read(run):
  nonfinite, window = train._all_finite(run.mesh), None  # as train._train starts
  window, nonfinite = train._hot_step(run, window, nonfinite)  # compiles the step
  start = int(run.state.step)
  with device_held_back(run) as gate:
    window, nonfinite = train._hot_step(run, window, nonfinite)  # compiles `held`
    gate.set()
  jax.block_until_ready((window, nonfinite, run.state))

  with device_held_back(run) as gate, jax.transfer_guard('disallow'):
    for _ in range(3):
      window, nonfinite = train._hot_step(run, window, nonfinite)
    assert not gate.is_set(), 'the loop waited for a device value between log points'
  assert int(run.state.step) == start + 4
  assert not bool(nonfinite) and set(window) >= {'loss', 'lr'}

  # The checks catch what the loop avoids: reading the loss (it waits for the gate) ...
  with device_held_back(run) as gate:
    window, _ = train._hot_step(run, window, nonfinite)
    threading.Timer(0.2, gate.set).start()
    float(window['loss'])
    assert gate.is_set()
  # ... mixing in an array on one device only, a host value turned into an array implicitly.
  for transfer in [lambda: nonfinite | jnp.zeros((), bool), lambda: window['loss'] + 1.0,
                   lambda: jnp.asarray([1.0])]:
    with jax.transfer_guard('disallow'), pytest.raises(jax.errors.JaxRuntimeError):
      transfer()


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
