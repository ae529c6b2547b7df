"""Training augmentation, in mmsegmentation's order and semantics (NumPy + Pillow, in workers).

  random resize (RandomResize, keep ratio) -> random crop (RandomCrop, cat_max_ratio)
  -> horizontal flip -> photometric distortion (PhotoMetricDistortion) -> normalise
  -> pad to the crop size (image 0, label 255)

Every random choice comes from the generator passed in, which the pipeline seeds from the
config seed and the example's position in the global stream: the same example gets the same
augmentation whatever the number of workers, devices or hosts.
"""

import functools

import numpy as np
from PIL import Image

from flanet_jax.labels import IGNORE_INDEX

IMAGENET_MEAN = np.array([123.675, 116.28, 103.53], np.float32)
IMAGENET_STD = np.array([58.395, 57.12, 57.375], np.float32)
CROP_TRIES = 10  # RandomCrop: new boxes drawn while one class dominates
BRIGHTNESS_DELTA = 32  # PhotoMetricDistortion defaults
CONTRAST_RANGE = (0.5, 1.5)
SATURATION_RANGE = (0.5, 1.5)
HUE_DELTA = 18  # in OpenCV's hue units (0..180), i.e. +-36 degrees


def normalize(image: np.ndarray) -> np.ndarray:
  return (image.astype(np.float32) - IMAGENET_MEAN) / IMAGENET_STD


def resize(image: np.ndarray, label: np.ndarray, size: tuple[int, int]):
  """Bilinear for the image, nearest for the label; size is (height, width)."""
  height, width = size
  if image.shape[:2] == (height, width):
    return image, label
  image = np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))
  label = np.asarray(Image.fromarray(label).resize((width, height), Image.NEAREST))
  return image, label


def resized_size(size: tuple[int, int], base_size: tuple, ratio: float) -> tuple[int, int]:
  """mmseg RandomResize(scale=base_size, ratio_range, keep_ratio=True) for a drawn ratio.

  The image is fitted, aspect kept, inside (long, short) = base_size * ratio (truncated to
  integers); an empty base_size means a ratio of the image's own size.
  """
  height, width = size
  if base_size:
    long_edge, short_edge = int(max(base_size) * ratio), int(min(base_size) * ratio)
    factor = min(long_edge / max(height, width), short_edge / min(height, width))
  else:
    factor = ratio
  return max(1, int(height * factor + 0.5)), max(1, int(width * factor + 0.5))


def random_resize(image, label, base_size, ratio_range, rng: np.random.Generator):
  ratio = rng.uniform(*ratio_range)
  return resize(image, label, resized_size(image.shape[:2], base_size, ratio))


def _random_box(shape, size, rng: np.random.Generator) -> tuple[slice, slice]:
  """A crop_size window at a uniform position (the whole side where the image is smaller)."""
  top = rng.integers(0, max(shape[0] - size[0], 0) + 1)
  left = rng.integers(0, max(shape[1] - size[1], 0) + 1)
  return slice(top, top + size[0]), slice(left, left + size[1])


def _no_class_dominates(label: np.ndarray, cat_max_ratio: float) -> bool:
  """At least two classes, none above cat_max_ratio of the non-ignored pixels."""
  counts = np.bincount(label.ravel(), minlength=256)[:IGNORE_INDEX]
  counts = counts[counts > 0]
  return len(counts) > 1 and counts.max() / counts.sum() < cat_max_ratio


def random_crop(image, label, size, cat_max_ratio: float, rng: np.random.Generator):
  """mmseg RandomCrop: redraw the box up to CROP_TRIES times while one class dominates it.

  After CROP_TRIES rejected boxes the next one is kept unchecked (as mmseg does).
  """
  box = _random_box(label.shape, size, rng)
  if cat_max_ratio < 1.0:
    for _ in range(CROP_TRIES):
      if _no_class_dominates(label[box], cat_max_ratio):
        break
      box = _random_box(label.shape, size, rng)
  return image[box], label[box]


def _affine(values: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
  """alpha * values + beta, clipped and truncated back to uint8 (as mmseg's `convert`)."""
  return np.clip(values.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)


def _hsv_channel(image: np.ndarray, channel: int, update) -> np.ndarray:
  hsv = np.array(Image.fromarray(image).convert('HSV'))
  hsv[..., channel] = update(hsv[..., channel])
  return np.asarray(Image.fromarray(hsv, 'HSV').convert('RGB'))


def _random_brightness(image, rng):
  if rng.random() < 0.5:
    return _affine(image, beta=rng.uniform(-BRIGHTNESS_DELTA, BRIGHTNESS_DELTA))
  return image


def _random_contrast(image, rng):
  if rng.random() < 0.5:
    return _affine(image, alpha=rng.uniform(*CONTRAST_RANGE))
  return image


def _random_saturation(image, rng):
  if rng.random() < 0.5:
    alpha = rng.uniform(*SATURATION_RANGE)
    return _hsv_channel(image, 1, lambda s: _affine(s, alpha=alpha))
  return image


def _random_hue(image, rng):
  if rng.random() < 0.5:
    shift = round(rng.integers(-HUE_DELTA, HUE_DELTA + 1) * 256 / 180)  # Pillow's hue: 0..255
    return _hsv_channel(image, 0, lambda h: ((h.astype(np.int32) + shift) % 256).astype(np.uint8))
  return image


def photometric_distortion(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """mmseg PhotoMetricDistortion on uint8 RGB; each of the four steps with probability 1/2.

  Brightness, then contrast either second or last, with saturation and hue between.
  """
  image = _random_brightness(image, rng)
  contrast_last = rng.random() < 0.5
  if not contrast_last:
    image = _random_contrast(image, rng)
  image = _random_hue(_random_saturation(image, rng), rng)
  if contrast_last:
    image = _random_contrast(image, rng)
  return image


def pad_to(image, label, size):
  """Pads bottom/right to at least `size`: image with 0 (after normalisation), label 255."""
  pad_h, pad_w = max(size[0] - image.shape[0], 0), max(size[1] - image.shape[1], 0)
  if pad_h == 0 and pad_w == 0:
    return image, label
  image = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)))
  label = np.pad(label, ((0, pad_h), (0, pad_w)), constant_values=IGNORE_INDEX)
  return image, label


def train_transform(example: dict, rng: np.random.Generator, *, crop_size, base_size,
                    scale_range, cat_max_ratio: float, flip: bool, photometric: bool) -> dict:
  """The augmentation chain of the module docstring; returns float32 image, uint8 label."""
  image, label = random_resize(example['image'], example['label'], base_size, scale_range, rng)
  image, label = random_crop(image, label, crop_size, cat_max_ratio, rng)
  if flip and rng.random() < 0.5:
    image, label = image[:, ::-1], label[:, ::-1]
  if photometric:
    image = photometric_distortion(np.ascontiguousarray(image), rng)
  image, label = pad_to(normalize(image), label, crop_size)
  return {'image': np.ascontiguousarray(image), 'label': np.ascontiguousarray(label)}


def from_config(data_config):
  """`train_transform` with the `config.data` settings (picklable, for grain workers)."""
  return functools.partial(
      train_transform, crop_size=tuple(data_config.crop_size),
      base_size=tuple(data_config.base_size), scale_range=tuple(data_config.scale_range),
      cat_max_ratio=data_config.cat_max_ratio, flip=data_config.flip,
      photometric=data_config.photometric)
