"""Cross-entropy with ignore index and OHEM selection against NumPy references."""

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from flanet_jax import losses


def _numpy_ce(logits, labels):
  logits = logits.astype(np.float64)
  log_probs = logits - logits.max(-1, keepdims=True)
  log_probs -= np.log(np.exp(log_probs).sum(-1, keepdims=True))
  valid = labels != 255
  picked = np.take_along_axis(log_probs, np.where(valid, labels, 0)[..., None], -1)[..., 0]
  return -picked, valid


def _numpy_ohem_mask(logits, labels, threshold, min_kept):
  """mmsegmentation's OHEMPixelSampler, one image at a time."""
  ce, valid = _numpy_ce(logits, labels)
  masks = []
  for image_ce, image_valid in zip(ce, valid):
    prob = np.where(image_valid, np.exp(-image_ce), 1.0).reshape(-1)
    flat_valid = image_valid.reshape(-1)
    if min_kept > flat_valid.sum():
      masks.append(image_valid)
      continue
    order = np.argsort(prob, kind='stable')
    cutoff = max(threshold, prob[order[min(len(order), min_kept) - 1]])
    masks.append((flat_valid & (prob <= cutoff)).reshape(image_valid.shape))
  return np.stack(masks)


def _random_batch(seed, classes=5, shape=(3, 9, 11)):
  rng = np.random.default_rng(seed)
  logits = rng.normal(0, 2, size=(*shape, classes)).astype(np.float32)
  labels = rng.integers(0, classes, size=shape)
  labels[rng.random(shape) < 0.2] = 255
  return logits, labels


def test_cross_entropy_ignores_255_and_matches_numpy():
  logits, labels = _random_batch(0)
  ce, valid = _numpy_ce(logits, labels)
  want = ce[valid].mean()
  got = float(losses.segmentation_loss(jnp.asarray(logits), jnp.asarray(labels), name='ce'))
  assert abs(got - want) < 1e-5 * abs(want)
  # Changing logits at ignored pixels changes nothing.
  logits2 = logits.copy()
  logits2[labels == 255] += 100.0
  got2 = float(losses.segmentation_loss(jnp.asarray(logits2), jnp.asarray(labels), name='ce'))
  assert got2 == got


@pytest.mark.parametrize('threshold,min_kept', [(0.7, 20), (0.7, 90), (0.3, 5), (0.7, 10_000),
                                                (0.05, 60)])
def test_ohem_selection_matches_reference(threshold, min_kept):
  logits, labels = _random_batch(int(threshold * 100) + min_kept)
  ce, valid = losses.pixel_cross_entropy(jnp.asarray(logits), jnp.asarray(labels))
  got = np.asarray(losses.ohem_keep_mask(ce, valid, threshold, min_kept))
  want = _numpy_ohem_mask(logits, labels, threshold, min_kept)
  np.testing.assert_array_equal(got, want)
  assert not got[labels == 255].any()
  for image_mask, image_valid in zip(got, valid):  # at least min_kept (or all) per image
    assert image_mask.sum() >= min(min_kept, int(image_valid.sum()))

  ref_ce, _ = _numpy_ce(logits, labels)
  loss = float(losses.segmentation_loss(jnp.asarray(logits), jnp.asarray(labels), name='ohem',
                                        ohem_threshold=threshold, ohem_min_kept=min_kept))
  assert abs(loss - ref_ce[want].mean()) < 1e-5 * ref_ce[want].mean()


def test_ohem_keeps_only_hard_pixels_when_enough():
  logits, labels = _random_batch(3, shape=(1, 30, 30))
  ce, valid = losses.pixel_cross_entropy(jnp.asarray(logits), jnp.asarray(labels))
  mask = np.asarray(losses.ohem_keep_mask(ce, valid, 0.7, 1))
  prob = np.exp(-np.asarray(ce))
  assert mask.sum() < valid.sum()  # some easy pixels dropped
  np.testing.assert_array_equal(mask, np.asarray(valid) & (prob <= 0.7))


def test_flanet_loss_weights_aux_heads():
  rng = np.random.default_rng(4)
  outputs = [jnp.asarray(rng.normal(size=(2, 6, 7, 4)), jnp.float32) for _ in range(3)]
  labels = jnp.asarray(rng.integers(0, 4, size=(2, 6, 7)))
  config = ml_collections.ConfigDict(dict(name='ce', ohem_threshold=0.7, ohem_min_kept=10,
                                          aux_weights=(0.4, 0.25)))
  total, parts = losses.flanet_loss(outputs, labels, config)
  single = [float(losses.segmentation_loss(o, labels)) for o in outputs]
  assert abs(float(total) - (single[0] + 0.4 * single[1] + 0.25 * single[2])) < 1e-5
  assert abs(float(parts['loss_aux2']) - single[2]) < 1e-6
  with pytest.raises(ValueError, match='unknown|Unknown'):
    losses.segmentation_loss(outputs[0], labels, name='focal')


def test_flanet_loss_applies_ohem_to_the_main_output_only():
  """Recipe loss: OHEM (per image) on the main output, plain CE on each auxiliary output,
  summed with the aux weights; each a mean over the kept pixels of the whole batch."""
  rng = np.random.default_rng(6)
  shape, classes = (2, 8, 9), 4
  outputs = [rng.normal(0, 2, size=(*shape, classes)).astype(np.float32) for _ in range(3)]
  labels = rng.integers(0, classes, size=shape)
  labels[rng.random(shape) < 0.2] = 255
  config = ml_collections.ConfigDict(dict(name='ohem', ohem_threshold=0.7, ohem_min_kept=10,
                                          aux_weights=(0.4, 0.25)))
  total, parts = losses.flanet_loss([jnp.asarray(o) for o in outputs], jnp.asarray(labels),
                                    config)

  main_ce, _ = _numpy_ce(outputs[0], labels)
  kept = _numpy_ohem_mask(outputs[0], labels, 0.7, 10)
  assert 0 < kept.sum() < (labels != 255).sum()  # OHEM drops some easy pixels here
  want_main = main_ce[kept].mean()
  want_aux = [ce[valid].mean() for ce, valid in map(_numpy_ce, outputs[1:], [labels] * 2)]
  for got, want in [(parts['loss_main'], want_main), (parts['loss_aux1'], want_aux[0]),
                    (parts['loss_aux2'], want_aux[1])]:
    assert float(got) == pytest.approx(want, rel=1e-5)
  assert float(total) == pytest.approx(want_main + 0.4 * want_aux[0] + 0.25 * want_aux[1],
                                       rel=1e-5)


# OHEM's rule, per image (losses.ohem_keep_mask): with p the true-class probability of a valid
# pixel and p_k the k-th smallest p of the image's valid pixels (k = min_kept), a valid pixel is
# kept iff p <= max(threshold, p_k) -- a non-strict inequality, so pixels exactly at the
# threshold or tied with p_k are kept; an image with fewer than min_kept valid pixels keeps
# them all; min_kept = 0 leaves the threshold alone. Ignored pixels are never kept nor counted.
# Each case: one image of ten pixels, probabilities p (None: ignored), threshold, min_kept,
# and the indices of the kept pixels.
T = 0.5  # 'at the threshold': both the threshold and two pixels' p (exactly, see the test)
OHEM_BOUNDARY_CASES = {
    'at the threshold': ([0.1, 0.3, T, T, 0.6, 0.9, 0.95, 0.8, 0.7, 0.55], T, 1, [0, 1, 2, 3]),
    'min_kept decides': ([0.9, 0.05, 0.6, 0.3, 0.1, 0.8, 0.4, 0.95, 0.7, 0.2], 0.15, 5,
                         [1, 3, 4, 6, 9]),
    'ties with the k-th': ([0.9, 0.4, 0.3, 0.4, 0.8, 0.4, 0.95, 0.85, 0.7, 0.6], 0.2, 2,
                           [1, 2, 3, 5]),
    'all below the threshold': ([0.1, 0.3, None, 0.2, 0.6, None, 0.5, 0.4, 0.05, 0.65], 0.7,
                                3, [0, 1, 3, 4, 6, 7, 8, 9]),
    'ignored pixels not counted': ([0.9, None, 0.8, None, 0.7, None, 0.95, 0.6, None, 0.85],
                                   0.1, 3, [2, 4, 7]),
    'min_kept above the valid pixels': ([0.9, None, 0.8, None, 0.7, 0.99, 0.95, 0.6, None,
                                         0.85], 0.1, 8, [0, 2, 4, 5, 6, 7, 9]),
    'min_kept above all pixels': ([0.9, None, 0.8, 0.3, 0.7, 0.99, 0.95, 0.6, None, 0.85],
                                  0.1, 100_000, [0, 2, 3, 4, 5, 6, 7, 9]),
    'min_kept zero': ([0.9, 0.4, 0.3, 0.1, 0.8, 0.4, 0.95, 0.85, 0.7, 0.6], 0.35, 0, [2, 3]),
}


@pytest.mark.parametrize('case', sorted(OHEM_BOUNDARY_CASES))
def test_ohem_selection_at_its_boundaries(case):
  probs, threshold, min_kept, want = OHEM_BOUNDARY_CASES[case]
  valid = np.array([p is not None for p in probs])
  # Ignored pixels get a tiny probability: were they counted, they would be the hardest.
  ce = jnp.asarray(-np.log([1e-6 if p is None else p for p in probs]), jnp.float32)
  if case == 'at the threshold':  # exactly the float32 p = exp(-ce) the selection sees
    threshold = float(jnp.exp(-ce[2]))
    assert float(jnp.exp(-ce[3])) == threshold
  got = losses.ohem_keep_mask(ce.reshape(1, 2, 5), jnp.asarray(valid).reshape(1, 2, 5),
                              threshold, min_kept)
  np.testing.assert_array_equal(np.flatnonzero(np.asarray(got)), want)
