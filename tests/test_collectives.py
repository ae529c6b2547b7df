"""The data-parallel train step's cross-device traffic, read from XLA's optimised HLO.

The train step (train.py's jit setup: state replicated, batch sharded on `data`) compiled for
8 simulated devices may only sum things across devices: the gradients and the global-batch
statistics of BatchNorm and of the loss. Anything else (an all-gather of activations or
parameters, an all-to-all, a collective-permute) would mean that something is sharded or
replicated where it should not be.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from flanet_jax import optim, parallel, train, weights
from flanet_jax.kernels import cpu
from flanet_jax.models import build_model, ops
from tests import support

pytestmark = pytest.mark.compiler  # every test here reads XLA's optimised HLO

_COLLECTIVE = re.compile(r'= (\(.*?\)|\S+) (all-reduce|all-gather|reduce-scatter|all-to-all|'
                         r'collective-permute|collective-broadcast|ragged-all-to-all)(?:-start)?\(')
_ARRAY = re.compile(r'(\w+)\[([\d,]*)\]')


def collectives(hlo: str):
  """[(op, {dtype: elements}, computation)] of every collective in an HLO module's text."""
  found, computation = [], None
  for line in hlo.splitlines():
    if line and not line[0].isspace() and line.rstrip().endswith('{'):
      computation = line.split(' ')[1] if line.startswith('ENTRY') else line.split(' ')[0]
    match = _COLLECTIVE.search(line)
    if match:
      sizes = {}
      for dtype, dims in _ARRAY.findall(match.group(1)):
        sizes[dtype] = sizes.get(dtype, 0) + int(np.prod([int(d) for d in dims.split(',') if d]))
      found.append((match.group(2), sizes, computation))
  return found


def _setup(**model_overrides):
  """(state, jitted train step, batch) as train.py builds them; state and batch are shapes
  with their shardings (lowering needs no values, so no init is compiled or run)."""
  config = support.tiny_config('unused', **{f'model.{k}': v for k, v in model_overrides.items()})
  mesh = parallel.make_mesh()
  model = build_model(config.model)
  shapes = weights.train_state_shapes(config, model)
  state = jax.tree.map(lambda x: x.update(sharding=parallel.replicated(mesh)), shapes)
  tx, schedule = optim.make_optimizer(config.optimizer, config.num_train_steps, state.params)
  step = train._make_train_step(config, model, tx, schedule, mesh)
  sharding = parallel.batch_sharding(mesh)
  batch = {'image': jax.ShapeDtypeStruct((8, 32, 32, 3), jnp.float32, sharding=sharding),
           'label': jax.ShapeDtypeStruct((8, 32, 32), jnp.int32, sharding=sharding)}
  return state, step, batch, mesh


def _size(tree):
  return sum(leaf.size for leaf in jax.tree.leaves(tree))


@pytest.mark.parametrize('fla_chunk_size', [0, 2])
def test_train_step_only_sums_gradients_and_batch_statistics(fla_chunk_size):
  assert jax.device_count() == 8
  state, step, batch, _ = _setup(fla_chunk_size=fla_chunk_size)
  hlo = step.lower(state, batch).compile().as_text()
  found = collectives(hlo)
  assert {op for op, _, _ in found} == {'all-reduce'}
  entry = re.search(r'^ENTRY (\S+)', hlo, re.M).group(1)
  assert {computation for _, _, computation in found} == {entry}  # none inside a loop

  totals = {}
  for _, sizes, _ in found:
    for dtype, count in sizes.items():
      totals[dtype] = totals.get(dtype, 0) + count
  # float32: every parameter's gradient once; per BatchNorm channel (batch_stats holds a mean
  # and a variance per channel) the forward pass's batch mean and variance (two passes) and
  # the backward pass's two sums for the input gradient (of dy and of dy * x_hat); one CE sum
  # per output (main, aux1, aux2). int32: the number of labelled pixels of each output.
  bn_channels = _size(state.batch_stats) // 2
  assert totals == {'f32': _size(state.params) + 4 * bn_channels + 3, 's32': 3}


def test_the_check_sees_wrongly_sharded_parameters():
  """Negative control: parameters sharded on `data` (as if the replication were lost) must
  bring in collectives other than sums."""
  state, step, batch, mesh = _setup()
  replicated, batch_sharding = parallel.replicated(mesh), parallel.batch_sharding(mesh)
  sharded = lambda x: NamedSharding(mesh, P('data') if x.ndim and x.shape[0] % 8 == 0 else P())
  wrong_state = jax.tree.map(lambda x: x.update(sharding=sharded(x)), state)
  wrong = jax.jit(step.__wrapped__, in_shardings=(jax.tree.map(sharded, state), batch_sharding),
                  out_shardings=(replicated, replicated))
  ops = {op for op, _, _ in collectives(wrong.lower(wrong_state, batch).compile().as_text())}
  assert ops - {'all-reduce'}, ops


def test_per_tap_kernel_gradient_sums_the_sharded_batch_once_outside_its_loop():
  """The CPU kernel gradient of a 3x3 conv loops over the taps; with the batch sharded, the
  cross-device sum must come after the loop (collectives inside loops can deadlock XLA:CPU),
  once per kernel element, and the value must be XLA's kernel gradient."""
  mesh = parallel.make_mesh()
  rng = np.random.default_rng(7)
  x, d_out = (jax.device_put(rng.normal(size=(8, 9, 11, 5)).astype(np.float32),
                             parallel.batch_sharding(mesh)) for _ in range(2))
  grad = jax.jit(lambda x, d_out: cpu.kernel_grad_by_matmul(x, d_out, 3, 1, 1))
  hlo = grad.lower(x, d_out).compile().as_text()
  entry = re.search(r'^ENTRY (\S+)', hlo, re.M).group(1)
  assert collectives(hlo) == [('all-reduce', {'f32': 3 * 3 * 5 * 5}, entry)]
  _, vjp = jax.vjp(lambda w: ops.conv2d(x, w), jnp.zeros((3, 3, 5, 5)))
  np.testing.assert_allclose(grad(x, d_out), vjp(d_out)[0], rtol=1e-5, atol=1e-4)
