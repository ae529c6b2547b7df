"""The Table 3 non-local blocks against independent float64 NumPy formulations (loops over
positions where the original is defined per position), their per-sample property, EMANet's
bases update, their FLOPs against the paper, and a forward + gradient of FLANet with each."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from flanet_jax.models import build_model
from flanet_jax.models.flanet import ATTENTION_BLOCKS, attention_only
from flanet_jax.models.nonlocal_blocks import NONLOCAL_BLOCKS
from tests import support


def _conv1x1(x, p):
  return x @ p['kernel'][0, 0] + p.get('bias', 0.0)


def _bn(x, params, stats):
  return (x - stats['mean']) / np.sqrt(stats['var'] + 1e-5) * params['scale'] + params['bias']


def _fuse(x, p, s):
  """Eval-mode conv3x3 (pad 1, no bias) -> BN -> ReLU for one sample (H, W, C)."""
  height, width, _ = x.shape
  kernel = p['conv']['kernel']
  padded = np.pad(x, ((1, 1), (1, 1), (0, 0)))
  y = sum(padded[dy:dy + height, dx:dx + width, :] @ kernel[dy, dx]
          for dy in range(3) for dx in range(3))
  return np.maximum(_bn(y, p['bn'], s['bn']), 0.0)


def cam(x, p):
  """DANet CAM: A = softmax_d(-sum_n x[n,c] x[n,d]), out[n,c] = sum_d A[c,d] x[n,d]."""
  flat = x.reshape(-1, x.shape[-1])
  attention = support.softmax64(-(flat.T @ flat))  # the original's max-shift cancels in the softmax
  return p['gamma'] * (flat @ attention.T).reshape(x.shape) + x


def pam(x, p):
  """DANet PAM, one position at a time."""
  q, k, v = (_conv1x1(x, p[n]).reshape(-1, p[n]['kernel'].shape[-1])
             for n in ('query', 'key', 'value'))
  out = np.stack([support.softmax64(k @ q[n]) @ v for n in range(len(q))])
  return p['gamma'] * out.reshape(x.shape) + x


def cca(x, p):
  """CCNet criss-cross attention: each position over its column (itself excluded) and row."""
  height, width, _ = x.shape
  q, k, v = (_conv1x1(x, p[n]) for n in ('query', 'key', 'value'))
  out = np.zeros_like(x)
  for h in range(height):
    for w in range(width):
      others = [(g, w) for g in range(height) if g != h] + [(h, u) for u in range(width)]
      keys = np.stack([k[i, j] for i, j in others])
      values = np.stack([v[i, j] for i, j in others])
      out[h, w] = support.softmax64(keys @ q[h, w]) @ values
  return p['gamma'] * out + x


def emau(x, p, s, steps=3):
  """EMANet EMAU for one sample; returns (output, final bases)."""
  feats = _conv1x1(x, p['conv1']).reshape(-1, x.shape[-1])  # (N, C)
  mu = s['bases']  # (C, K)
  for _ in range(steps):
    z = support.softmax64(feats @ mu)  # E-step (N, K)
    mu = feats.T @ (z / (1e-6 + z.sum(axis=0)))  # M-step (C, K)
    mu = mu / (1e-6 + np.linalg.norm(mu, axis=0))
  y = np.maximum(z @ mu.T, 0.0) @ p['conv2']['kernel'][0, 0]
  y = _bn(y, p['bn2'], s['bn2']).reshape(x.shape)
  return np.maximum(y + x, 0.0), mu


REFERENCES = {
    'channel_nl': lambda x, p, s: _fuse(cam(x, p['cam']), p['fuse'], s['fuse']),
    'spatial_nl': lambda x, p, s: _fuse(pam(x, p['pam']), p['fuse'], s['fuse']),
    'dual_nl': lambda x, p, s: (_fuse(pam(x, p['pam']), p['fuse_pam'], s['fuse_pam']) +
                                _fuse(cam(x, p['cam']), p['fuse_cam'], s['fuse_cam'])),
    'cs_nl': lambda x, p, s: _fuse(pam(cam(x, p['cam']), p['pam']), p['fuse'], s['fuse']),
    'rcca': lambda x, p, s: _fuse(cca(cca(x, p['cca']), p['cca']), p['fuse'], s['fuse']),
    'ema': lambda x, p, s: _fuse(emau(x, p['emau'], s['emau'])[0], p['fuse'], s['fuse']),
}


def _to64(tree):
  return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


def test_every_table3_block_is_registered():
  assert set(ATTENTION_BLOCKS) == {'fla', 'none', 'channel_nl', 'spatial_nl', 'dual_nl', 'cs_nl',
                                   'rcca', 'ema'}
  assert set(REFERENCES) == set(NONLOCAL_BLOCKS)


@pytest.mark.parametrize('name', sorted(NONLOCAL_BLOCKS))
@pytest.mark.parametrize('height,width', [(5, 5), (6, 9)])
def test_block_matches_numpy_reference(name, height, width):
  rng = np.random.default_rng([height, width, len(name)])
  x = rng.normal(size=(2, height, width, 16)).astype(np.float32)
  block = NONLOCAL_BLOCKS[name](16)
  variables = support.random_init(rng, block, x)
  got = np.asarray(block.apply(variables, x, train=False), np.float64)

  p, s = _to64(variables['params']), _to64(variables['batch_stats'])
  for i in range(2):
    want = REFERENCES[name](x[i].astype(np.float64), p, s)
    assert np.abs(want).max() > 0.1  # not a comparison of two near-zero tensors
    rel_err = np.linalg.norm(got[i] - want) / np.linalg.norm(want)
    assert rel_err <= 1e-5, (i, rel_err)


@pytest.mark.parametrize('name', sorted(NONLOCAL_BLOCKS))
def test_block_is_per_sample(name):
  rng = np.random.default_rng(len(name))
  x = rng.normal(size=(3, 6, 5, 16)).astype(np.float32)
  block = NONLOCAL_BLOCKS[name](16)
  variables = support.random_init(rng, block, x)
  apply = jax.jit(lambda x: block.apply(variables, x, train=False))
  base = np.asarray(apply(x))

  changed = x.copy()
  changed[2] = rng.normal(size=changed[2].shape)
  out = np.asarray(apply(changed))
  np.testing.assert_array_equal(out[:2], base[:2])
  assert np.abs(out[2] - base[2]).max() > 1e-3
  single = np.asarray(block.apply(variables, x[1:2], train=False))
  np.testing.assert_allclose(single[0], base[1], rtol=1e-5, atol=1e-5)


def test_ema_bases_moving_average_in_training_only():
  """bases <- 0.9 bases + 0.1 * batch mean of the final, l2-normalised bases (EMANet train.py)."""
  rng = np.random.default_rng(7)
  x = rng.normal(size=(3, 4, 6, 16)).astype(np.float32)
  block = NONLOCAL_BLOCKS['ema'](16)
  variables = support.random_init(rng, block, x)
  _, updated = block.apply(variables, x, train=True, mutable=['batch_stats'])
  _, eval_state = block.apply(variables, x, train=False, mutable=['batch_stats'])

  p, s = _to64(variables['params']), _to64(variables['batch_stats'])
  final = [emau(x[i].astype(np.float64), p['emau'], s['emau'])[1] for i in range(3)]
  want = 0.9 * s['emau']['bases'] + 0.1 * np.mean(final, axis=0)
  np.testing.assert_allclose(updated['batch_stats']['emau']['bases'], want, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(eval_state['batch_stats']['emau']['bases'],
                                variables['batch_stats']['emau']['bases'])
  initial = block.init(jax.random.key(0), x, train=False)['batch_stats']['emau']['bases']
  assert initial.shape == (16, 64)
  np.testing.assert_allclose(np.linalg.norm(initial, axis=0), 1.0, rtol=1e-5)


# Table 3: GFLOPs added by each block at C=512 on 96x96 features, the 3x3 conv not counted.
PAPER_GFLOPS = {'fla': 19.37, 'channel_nl': 9.66, 'spatial_nl': 103.90, 'dual_nl': 113.56,
                'cs_nl': 113.56, 'rcca': 16.18, 'ema': 13.91}


@pytest.mark.compiler
@pytest.mark.parametrize('name', sorted(PAPER_GFLOPS))
def test_attention_flops_match_paper(name):
  """XLA's FLOP count of each block without its fuse conv (multiply-add = 2) is within 3% of
  the paper's: it pins C/8 queries and keys, R=2, k=64 and T=3 as in the originals."""
  x = jax.ShapeDtypeStruct((1, 96, 96, 512), jnp.float32)
  block = ATTENTION_BLOCKS[name](512)
  with attention_only():
    variables = jax.eval_shape(lambda: block.init(jax.random.key(0), jnp.zeros(x.shape),
                                                  train=False))
    assert not any('fuse' in jax.tree_util.keystr(k)
                   for k, _ in jax.tree_util.tree_leaves_with_path(variables))
    compiled = jax.jit(lambda v, x: block.apply(v, x, train=False)).lower(variables, x).compile()
  gflops = compiled.cost_analysis()['flops'] / 1e9
  assert abs(gflops - PAPER_GFLOPS[name]) / PAPER_GFLOPS[name] < 0.03, gflops


@pytest.mark.parametrize('attention', sorted(NONLOCAL_BLOCKS))
def test_flanet_forward_and_gradient_with_every_nonlocal_attention(attention):
  """(`fla` and `none` have the same test in test_models.py.)"""
  model = build_model(ml_collections.ConfigDict(dict(
      num_classes=3, backbone='resnet18', attention=attention, head_features=16,
      aux_features=8)))
  rng = np.random.default_rng(5)
  images = jnp.asarray(rng.normal(size=(2, 32, 24, 3)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, 3, size=(2, 32, 24)))
  variables = support.random_init(rng, model, images)  # gamma != 0: q/k/v convs learn

  (loss, _), grads = support.flanet_loss_and_grads(model, variables, images, labels, 3)
  assert np.isfinite(float(loss))
  assert 'attention' in grads
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    name, g = jax.tree_util.keystr(path), np.asarray(g)
    assert np.isfinite(g).all(), name
    if 'emau' in name and 'conv1' in name:
      assert not g.any(), name  # EMANet's EM steps are gradient-free: conv1 never learns
    else:
      assert np.abs(g).max() > 0, name
