"""Per-example augmentation and normalisation (NumPy + Pillow, run in grain workers).

Every random choice comes from the generator passed in, which the pipeline seeds from the
config seed and the example's position in the global stream: the same example gets the same
augmentation whatever the number of workers, devices or hosts.
"""

import numpy as np
from PIL import Image

IGNORE_INDEX = 255
IMAGENET_MEAN = np.array([123.675, 116.28, 103.53], np.float32)
IMAGENET_STD = np.array([58.395, 57.12, 57.375], np.float32)


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


def random_scale(image, label, scale_range, rng: np.random.Generator):
  """Rescales by a ratio drawn uniformly from scale_range, relative to the original size."""
  ratio = rng.uniform(*scale_range)
  height, width = image.shape[:2]
  return resize(image, label, (max(1, int(height * ratio + 0.5)), max(1, int(width * ratio + 0.5))))


def pad_to(image, label, size):
  """Pads bottom/right to at least `size`: image with 0 (after normalisation), label 255."""
  pad_h, pad_w = max(size[0] - image.shape[0], 0), max(size[1] - image.shape[1], 0)
  if pad_h == 0 and pad_w == 0:
    return image, label
  image = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)))
  label = np.pad(label, ((0, pad_h), (0, pad_w)), constant_values=IGNORE_INDEX)
  return image, label


def random_crop(image, label, size, rng: np.random.Generator):
  height, width = image.shape[:2]
  top = rng.integers(0, height - size[0] + 1)
  left = rng.integers(0, width - size[1] + 1)
  return (image[top:top + size[0], left:left + size[1]],
          label[top:top + size[0], left:left + size[1]])


def train_transform(example: dict, rng: np.random.Generator, *, crop_size, scale_range,
                    flip: bool) -> dict:
  """Random rescale, normalise, pad to crop size, random crop, random horizontal flip."""
  image, label = random_scale(example['image'], example['label'], scale_range, rng)
  image, label = pad_to(normalize(image), label, crop_size)
  image, label = random_crop(image, label, crop_size, rng)
  if flip and rng.random() < 0.5:
    image, label = image[:, ::-1], label[:, ::-1]
  return {'image': np.ascontiguousarray(image), 'label': np.ascontiguousarray(label)}
