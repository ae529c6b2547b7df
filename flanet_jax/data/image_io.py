"""Decoding image and label files into arrays, with errors that name the file."""

import pathlib

import numpy as np
from PIL import Image

from flanet_jax import errors


def read_rgb(path: pathlib.Path) -> np.ndarray:
  """uint8 (H, W, 3); grayscale, palette and RGBA images are converted to RGB."""
  try:
    with Image.open(path) as image:
      return np.asarray(image.convert('RGB'))
  except (OSError, SyntaxError, ValueError) as error:
    raise errors.UserValueError(f'Cannot decode image {path}: {error}') from error


def read_label(path: pathlib.Path) -> np.ndarray:
  """uint8 (H, W) of the stored indices (a palette PNG gives its indices, not colours)."""
  try:
    with Image.open(path) as image:
      if image.mode not in ('L', 'P', 'I', 'I;16'):
        raise errors.UserValueError(f'expected a single-channel label PNG, got mode {image.mode}')
      label = np.asarray(image)
  except (OSError, SyntaxError, ValueError) as error:
    raise errors.UserValueError(f'Cannot decode label {path}: {error}') from error
  if label.max(initial=0) > 255:
    raise errors.UserValueError(f'Label {path} has values above 255')
  return label.astype(np.uint8)


def image_size(path: pathlib.Path) -> tuple[int, int]:
  """(height, width) read from the header only."""
  try:
    with Image.open(path) as image:
      return image.height, image.width
  except OSError as error:
    raise errors.UserValueError(f'Cannot read image {path}: {error}') from error
