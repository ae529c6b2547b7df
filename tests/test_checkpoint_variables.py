"""save_variables / load_variables: exact round trip, host arrays, never overwriting."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flanet_jax.checkpoint import load_variables, save_variables


def _variables():
  rng = np.random.default_rng(0)
  return {
      'params': {'conv': {'kernel': rng.normal(size=(3, 3, 2, 4)).astype(np.float32)},
                 'gamma': jnp.asarray(0.25)},  # a scalar, and a jax array among numpy ones
      'batch_stats': {'bn': {'mean': rng.normal(size=(4,)).astype(np.float32),
                             'var': rng.uniform(0.5, 1.5, size=(4,)).astype(np.float32)}},
  }


def test_round_trip_is_exact_and_restores_numpy(tmp_path):
  variables = _variables()
  save_variables(tmp_path / 'nested' / 'ckpt', variables)
  restored = load_variables(tmp_path / 'nested' / 'ckpt')
  assert jax.tree.structure(restored) == jax.tree.structure(variables)
  for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(variables)):
    assert isinstance(got, np.ndarray)
    assert got.dtype == np.float32 and got.shape == np.shape(want)
    np.testing.assert_array_equal(got, np.asarray(want))


def test_refuses_to_overwrite_and_rejects_other_collections(tmp_path):
  (tmp_path / 'taken').mkdir()
  (tmp_path / 'file').write_text('x')
  for existing in ('taken', 'file'):
    with pytest.raises(FileExistsError, match='refusing to overwrite'):
      save_variables(tmp_path / existing, _variables())
  assert (tmp_path / 'file').read_text() == 'x'
  with pytest.raises(ValueError, match='opt_state'):
    save_variables(tmp_path / 'new', {**_variables(), 'opt_state': {}})
  assert not (tmp_path / 'new').exists()
  with pytest.raises(FileNotFoundError):
    load_variables(tmp_path / 'missing')
