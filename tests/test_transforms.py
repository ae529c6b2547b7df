"""Training transforms: mmseg resize rule, cat-max-ratio crops, photometric distortion, padding."""

import colorsys

import numpy as np
import pytest

from flanet_jax.data import transforms


@pytest.mark.parametrize('size,base,ratio,want', [
    ((1024, 2048), (2048, 1024), 1.0, (1024, 2048)),  # Cityscapes at its base size
    ((1024, 2048), (2048, 1024), 0.5, (512, 1024)),
    ((1024, 2048), (2048, 1024), 1.75, (1792, 3584)),
    ((512, 683), (2048, 512), 1.0, (512, 683)),  # ADE20K: the short side is fitted
    ((375, 500), (2048, 512), 0.75, (384, 512)),  # 384/375 = 1.024 -> 500 * 1.024 = 512
    ((2000, 300), (2048, 512), 1.0, (2048, 307)),  # very tall: the long side binds
    ((40, 72), (), 1.5, (60, 108)),  # no base size: a ratio of the image's own size
])
def test_resized_size_follows_mmseg_random_resize(size, base, ratio, want):
  assert transforms.resized_size(size, base, ratio) == want


def test_random_resize_keeps_the_aspect_ratio_within_the_ratio_range():
  image = np.zeros((50, 80, 3), np.uint8)
  label = np.zeros((50, 80), np.uint8)
  for seed in range(20):
    out, out_label = transforms.random_resize(image, label, (160, 100), (0.5, 2.0),
                                              np.random.default_rng(seed))
    assert out.shape[:2] == out_label.shape
    assert 25 <= out.shape[0] <= 200 and abs(out.shape[1] / out.shape[0] - 1.6) < 0.05


def _crop_statistics(label, cat_max_ratio, crop=(16, 16), seeds=200):
  """Fraction of crops with >= 2 (non-ignored) classes, none above 75% of the pixels."""
  balanced = 0
  for seed in range(seeds):
    _, crop_label = transforms.random_crop(label[..., None], label, crop, cat_max_ratio,
                                           np.random.default_rng(seed))
    assert crop_label.shape == crop
    counts = np.bincount(crop_label.ravel(), minlength=256)[:255]
    counts = counts[counts > 0]
    balanced += len(counts) > 1 and counts.max() / counts.sum() < 0.75
  return balanced / seeds


def test_cat_max_ratio_redraws_crops_dominated_by_one_class():
  rng = np.random.default_rng(0)
  label = np.zeros((16, 80), np.uint8)  # left: class 0 striped with ignored pixels
  label[:, 0:48:3] = 255  # 0 and 255 alone are one class: such crops must be redrawn
  label[:, 48:] = rng.integers(1, 4, (16, 32))  # right: a balanced mix of 1, 2, 3
  assert 0.3 < _crop_statistics(label, 1.0) < 0.6  # off: the box is uniform
  # On: a crop is redrawn up to 10 times, so nearly all end balanced (P(fail) ~ 0.5^11).
  assert _crop_statistics(label, 0.75) >= 0.99


def test_cat_max_ratio_gives_up_after_ten_redraws():
  label = np.full((20, 30), 7, np.uint8)  # no crop can satisfy it
  calls = []

  class CountingRng:
    def integers(self, low, high):
      calls.append((low, high))
      return np.random.default_rng(len(calls)).integers(low, high)

  _, crop = transforms.random_crop(label, label, (10, 10), 0.75, CountingRng())
  assert crop.shape == (10, 10)
  assert len(calls) == 2 * 11  # the first box and ten redraws, two coordinates each


def test_crop_is_whole_side_where_the_image_is_smaller_then_padding_follows():
  rng = np.random.default_rng(1)
  image = rng.integers(0, 256, (10, 40, 3), np.uint8)
  label = rng.integers(0, 19, (10, 40)).astype(np.uint8)
  example = transforms.train_transform(
      {'image': image, 'label': label}, np.random.default_rng(2), crop_size=(16, 16),
      base_size=(), scale_range=(1.0, 1.0), cat_max_ratio=1.0, flip=False, photometric=False)
  assert example['image'].shape == (16, 16, 3) and example['label'].shape == (16, 16)
  assert (example['label'][10:] == 255).all() and (example['image'][10:] == 0).all()
  left = next(x for x in range(25) if np.array_equal(label[:, x:x + 16], example['label'][:10]))
  np.testing.assert_allclose(example['image'][:10], transforms.normalize(image[:, left:left + 16]))


def test_image_and_label_stay_aligned_through_crop_and_flip():
  rng = np.random.default_rng(3)
  colours = rng.integers(0, 256, (256, 3), np.uint8)
  label = np.kron(rng.integers(0, 19, (12, 16)), np.ones((4, 4), int)).astype(np.uint8)
  label[:, :3] = 255
  flipped = 0
  for seed in range(12):
    example = transforms.train_transform(
        {'image': colours[label], 'label': label}, np.random.default_rng(seed),
        crop_size=(20, 24), base_size=(), scale_range=(1.0, 1.0), cat_max_ratio=0.75,
        flip=True, photometric=False)
    np.testing.assert_allclose(example['image'], transforms.normalize(colours[example['label']]),
                               atol=1e-5)
    flipped += not any(np.array_equal(example['label'], label[y:y + 20, x:x + 24])
                       for y in range(29) for x in range(41))
  assert 2 <= flipped <= 10  # about half of them are mirrored


def test_photometric_hue_rotates_like_opencv_hue_units():
  red = np.zeros((4, 4, 3), np.uint8)
  red[...] = (200, 30, 30)

  class HueOnly:  # draws: apply? yes; shift = +10 (OpenCV units: 20 degrees)
    def random(self):
      return 0.0

    def integers(self, low, high):
      assert (low, high) == (-18, 19)
      return 10

  out = transforms._random_hue(red, HueOnly())
  h, s, v = colorsys.rgb_to_hsv(*(red[0, 0] / 255))
  want = np.array(colorsys.hsv_to_rgb((h + 20 / 360) % 1, s, v)) * 255
  np.testing.assert_allclose(out[0, 0], want, atol=4)


def test_photometric_distortion_keeps_gray_gray_and_sometimes_does_nothing():
  rng = np.random.default_rng(4)
  gray = np.repeat(rng.integers(40, 200, (8, 8, 1), np.uint8), 3, axis=2)
  colour = rng.integers(0, 256, (8, 8, 3), np.uint8)
  unchanged = 0
  for seed in range(160):
    out = transforms.photometric_distortion(gray, np.random.default_rng(seed))
    assert out.dtype == np.uint8 and out.shape == gray.shape
    # Saturation and hue cannot colour a gray image (up to Pillow's HSV rounding).
    assert np.abs(out.astype(int) - out[..., :1]).max() <= 2
    unchanged += np.array_equal(transforms.photometric_distortion(colour,
                                                                 np.random.default_rng(seed)),
                                colour)
  assert 3 <= unchanged <= 25  # each of the 4 steps is skipped with probability 1/2: ~1/16


# --- photometric distortion against an independent NumPy version -------------------------------


class RecordingRng:
  """The np.random.Generator methods the transforms use, driven by a given stream of unit
  variates (uniform(a, b) = a + (b - a) u, integers(a, b) = a + floor((b - a) u)) and
  recording every call with its bounds: two consumers given the same stream see the same
  values exactly when they ask for the same draws."""

  def __init__(self, variates):
    self.variates, self.calls = iter(variates), []

  def random(self):
    self.calls.append(('random',))
    return next(self.variates)

  def uniform(self, low, high):
    self.calls.append(('uniform', low, high))
    return low + (high - low) * next(self.variates)

  def integers(self, low, high):
    self.calls.append(('integers', low, high))
    return low + int((high - low) * next(self.variates))


def _rgb_to_hsv(rgb):
  """Float HSV of uint8 RGB, each in [0, 1) / [0, 1] (colorsys, vectorised)."""
  rgb = rgb.astype(np.float64) / 255
  value, chroma = rgb.max(-1), np.ptp(rgb, axis=-1)
  saturation = np.where(value > 0, chroma / np.maximum(value, 1e-12), 0.0)
  red, green, blue = np.moveaxis(rgb, -1, 0)
  safe = np.maximum(chroma, 1e-12)
  hue = np.where(value == red, (green - blue) / safe,
                 np.where(value == green, 2 + (blue - red) / safe, 4 + (red - green) / safe))
  return np.where(chroma > 0, (hue / 6) % 1.0, 0.0), saturation, value


def _hsv_to_rgb(hue, saturation, value):
  sector, fraction = np.divmod(hue * 6, 1.0)
  p, q = value * (1 - saturation), value * (1 - saturation * fraction)
  t = value * (1 - saturation * (1 - fraction))
  choices = [(value, t, p), (q, value, p), (p, value, t), (p, q, value), (t, p, value),
             (value, p, q)]
  rgb = np.select([sector[..., None] % 6 == k for k in range(6)],
                  [np.stack(c, -1) for c in choices])
  return np.round(rgb * 255).astype(np.uint8)


def numpy_photometric_distortion(image, rng):
  """mmseg's PhotoMetricDistortion: brightness (+delta, |delta| < 32), then contrast (x alpha,
  0.5..1.5) either second (mode 1) or last (mode 0), with saturation (x 0.5..1.5, in OpenCV's
  uint8 S) and hue (+-18 OpenCV units of 2 degrees) between; each step with probability 1/2,
  its value drawn only when it applies."""

  def convert(x, alpha=1.0, beta=0.0):  # mmseg's clip-and-truncate to uint8
    return np.clip(x.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)

  def contrast(x):
    return convert(x, alpha=rng.uniform(0.5, 1.5)) if rng.random() < 0.5 else x

  if rng.random() < 0.5:
    image = convert(image, beta=rng.uniform(-32, 32))
  mode_1 = not rng.random() < 0.5
  if mode_1:
    image = contrast(image)
  if rng.random() < 0.5:
    hue, saturation, value = _rgb_to_hsv(image)
    image = _hsv_to_rgb(hue, convert(saturation * 255, alpha=rng.uniform(0.5, 1.5)) / 255, value)
  if rng.random() < 0.5:
    hue, saturation, value = _rgb_to_hsv(image)
    image = _hsv_to_rgb((hue + rng.integers(-18, 19) / 180) % 1.0, saturation, value)
  if not mode_1:
    image = contrast(image)
  return image


def _compare_with_numpy(variates):
  """Same draws, bounds and order as the NumPy version (the recorded calls), and the same
  image up to Pillow's 8-bit HSV rounding: a mean error of 2 at most here, where a step in
  the wrong place or with a wrong value gives 8 and more in the all-steps cases."""
  image = np.random.default_rng(5).integers(0, 256, (16, 16, 3), np.uint8)
  got_rng, want_rng = RecordingRng(variates), RecordingRng(variates)
  got = transforms.photometric_distortion(image, got_rng).astype(int)
  want = numpy_photometric_distortion(image, want_rng).astype(int)
  assert got_rng.calls == want_rng.calls
  error = np.abs(got - want)
  assert error.mean() <= 3.0 and error.max() <= 32, (error.mean(), error.max())


def test_photometric_distortion_matches_numpy_mmseg_on_random_draws():
  """Decisions and values of 60 random streams: every combination of applied steps."""
  for seed in range(60):
    _compare_with_numpy(np.random.default_rng(seed).random(9))


APPLY, MODE_1, MODE_0 = 0.2, 0.7, 0.3  # variates of the decisions (apply: u < 1/2)


@pytest.mark.parametrize('mode', [0, 1])
@pytest.mark.parametrize('value', [0.97, 0.03], ids=['high', 'low'])
def test_photometric_distortion_matches_numpy_mmseg_with_every_step(mode, value):
  """Every step applied, values near one end of each range: the steps' order shows most.
  Saturation and hue act on separate HSV channels and commute, so only their draw order
  is observable."""
  _compare_with_numpy([APPLY, value, MODE_1 if mode == 1 else MODE_0] + [APPLY, value] * 3)
