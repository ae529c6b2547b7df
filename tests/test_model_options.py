"""Performance options of the model: `model.remat` and `model.fla_chunk_size` change memory and
time, never the results."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from flanet_jax import step
from flanet_jax.models import build_model
from tests import support


def _model(**kwargs):
  return build_model(ml_collections.ConfigDict(kwargs))


def _batch(shape=(2, 48, 56)):
  rng = np.random.default_rng(0)
  return (jnp.asarray(rng.normal(size=(*shape, 3)), jnp.float32),
          jnp.asarray(rng.integers(0, 4, size=shape)))


def _init(model, images):
  return support.random_init(np.random.default_rng(1), model, images)  # gamma != 0


def _loss_and_grads(model, variables, images, labels):
  """(loss, new batch statistics), gradients: a training forward and backward pass."""
  return support.flanet_loss_and_grads(model, variables, images, labels, 4)


def _assert_trees_close(got, want, rtol):
  """Leaf by leaf, to `rtol` of the leaf's largest value; leaves that are float noise around 0
  (e.g. the bias of a BN followed by another BN) to `rtol` of 1% of the tree's largest."""
  floor = 1e-2 * max(float(np.abs(w).max()) for w in jax.tree.leaves(want))
  for (path, g), w in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want)):
    g, w = np.asarray(g), np.asarray(w)
    np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol * max(np.abs(w).max(), floor),
                               err_msg=jax.tree_util.keystr(path))


@pytest.mark.parametrize('backbone', ['resnet18', 'hrnet_w18_small', 'shufflenet_v2'])
def test_remat_gives_the_same_loss_gradients_and_statistics_saving_less(backbone):
  kwargs = dict(num_classes=4, backbone=backbone, head_features=16, aux_features=8)
  plain, remat = _model(**kwargs), _model(**kwargs, remat=True)
  images, labels = _batch((2, 64, 64))
  variables = _init(plain, images)
  remat_shapes = jax.eval_shape(lambda: _init(remat, images))
  assert jax.tree.structure(remat_shapes) == jax.tree.structure(variables)  # same names

  if backbone == 'resnet18':  # gradients through `layers.rematerialised` (every backbone's)
    (loss, stats), grads = _loss_and_grads(remat, variables, images, labels)
    (want_loss, want_stats), want_grads = _loss_and_grads(plain, variables, images, labels)
    _assert_trees_close(grads, want_grads, rtol=1e-5)
  else:  # the wrapped blocks compute what the plain ones do (a third of the compile time)
    def forward(model):
      loss_fn = support.flanet_loss_fn(model, variables, images, labels, 4)
      return jax.jit(loss_fn)(variables['params'])

    (loss, stats), (want_loss, want_stats) = forward(remat), forward(plain)
  np.testing.assert_allclose(loss, want_loss, rtol=1e-6)
  _assert_trees_close(stats, want_stats, rtol=1e-6)
  # The blocks really are recomputed: the forward pass saves less for the backward pass (in the
  # program before XLA; XLA:CPU's compiled memory shows little of it, BENCHMARKS.md).
  images = jnp.zeros((2, 128, 128, 3))
  saved = lambda model: step.saved_for_backward_bytes(model, variables, images)
  assert saved(remat) < 0.8 * saved(plain)


@pytest.mark.compiler
def test_fla_chunk_size_reaches_the_block_and_changes_nothing():
  """The model passes the chunk size to its FLA block and computes the same training forward
  pass (the chunked block's gradients are the plain block's: test_fla.py)."""
  kwargs = dict(num_classes=4, backbone='resnet18', head_features=16, aux_features=8)
  plain, chunked = _model(**kwargs), _model(**kwargs, fla_chunk_size=2)  # c4: 6 x 7
  images, _ = _batch()
  variables = _init(plain, images)

  @functools.partial(jax.jit, static_argnums=0)
  def forward(model):
    return model.apply(variables, images, train=True, rngs={'dropout': jax.random.key(1)},
                       mutable=['batch_stats'])

  (outputs, stats), (want_outputs, want_stats) = forward(chunked), forward(plain)
  _assert_trees_close(outputs, want_outputs, rtol=1e-5)
  _assert_trees_close(stats, want_stats, rtol=1e-6)

  def loops(model):  # the chunks are a fori_loop: a scan (or while) loop in the program
    jaxpr = str(jax.make_jaxpr(lambda v: model.apply(v, images, train=False))(variables))
    return jaxpr.count('scan[') + jaxpr.count('while[')
  assert loops(plain) == 0 and loops(chunked) > 0


@pytest.mark.parametrize('kwargs', [dict(fla_chunk_size=-1),
                                    dict(fla_chunk_size=8, attention='none'),
                                    dict(fla_chunk_size=8, attention='channel_nl')])
def test_fla_chunk_size_is_rejected_where_it_cannot_apply(kwargs):
  with pytest.raises(ValueError, match='model.fla_chunk_size'):  # when the model is built
    _model(num_classes=3, backbone='resnet18', **kwargs)
