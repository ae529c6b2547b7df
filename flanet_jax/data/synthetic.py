"""A small synthetic dataset written in the Cityscapes layout (real PNGs, labelIds).

Scenes: sky above a textured road, with vegetation blobs, cars (rectangles), people
(ellipses) and traffic signs (triangles), plus an `unlabeled` (labelId 0 -> ignored) border.
Each class has its own colour and texture, so a small model learns it quickly, even on a CPU,
while the reader, the labelId -> trainId mapping and the ignore index are all exercised.
"""

import pathlib

import numpy as np
from PIL import Image, ImageDraw

from flanet_jax import errors
from flanet_jax.data.cityscapes import IMAGE_SUFFIX, LABEL_SUFFIX

# Cityscapes labelIds used by the scenes, with a base colour each.
UNLABELED, ROAD, VEGETATION, SKY, PERSON, CAR, TRAFFIC_SIGN = 0, 7, 21, 23, 24, 26, 20
_COLOURS = {ROAD: (90, 90, 100), VEGETATION: (60, 150, 40), SKY: (120, 170, 230),
            PERSON: (220, 60, 80), CAR: (30, 40, 160), TRAFFIC_SIGN: (230, 210, 30),
            UNLABELED: (0, 0, 0)}
CITIES = {'train': ('aachen', 'bremen'), 'val': ('frankfurt',)}


def _random_shape(draw_image, draw_label, rng, height, width):
  label_id = rng.choice([VEGETATION, PERSON, CAR, TRAFFIC_SIGN])
  cy, cx = rng.integers(height // 4, height), rng.integers(0, width)
  ry, rx = rng.integers(height // 12, height // 5), rng.integers(width // 24, width // 8)
  box = [cx - rx, cy - ry, cx + rx, cy + ry]
  colour = tuple(int(c) for c in np.clip(np.array(_COLOURS[label_id]) + rng.integers(-20, 21, 3),
                                         0, 255))
  for draw, fill in ((draw_image, colour), (draw_label, int(label_id))):
    if label_id == CAR:
      draw.rectangle(box, fill=fill)
    elif label_id == TRAFFIC_SIGN:
      draw.polygon([(cx, cy - ry), (cx - rx, cy + ry), (cx + rx, cy + ry)], fill=fill)
    else:
      draw.ellipse(box, fill=fill)


def make_scene(rng: np.random.Generator, height: int, width: int):
  """Returns (uint8 RGB image, uint8 labelId map)."""
  horizon = int(height * rng.uniform(0.25, 0.45))
  label = np.full((height, width), ROAD, np.uint8)
  label[:horizon] = SKY
  image = np.zeros((height, width, 3), np.float32)
  image[:] = _COLOURS[ROAD]
  image[:horizon] = _COLOURS[SKY]
  # Road texture: horizontal stripes; sky: a smooth vertical gradient.
  image[horizon:] += 15 * np.sin(np.arange(height - horizon) / 2.0)[:, None, None]
  image[:horizon] += np.linspace(-20, 20, horizon)[:, None, None]
  image = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
  label = Image.fromarray(label)
  draw_image, draw_label = ImageDraw.Draw(image), ImageDraw.Draw(label)
  for _ in range(rng.integers(3, 7)):
    _random_shape(draw_image, draw_label, rng, height, width)
  image, label = np.array(image), np.array(label)
  label[:, :2] = UNLABELED  # an ignored border, like Cityscapes' rectification border
  image = image.astype(np.float32) + rng.normal(0, 8, image.shape)  # sensor noise
  return np.clip(image, 0, 255).astype(np.uint8), label


def write_dataset(root: str, num_train: int = 48, num_val: int = 12, height: int = 96,
                  width: int = 192, seed: int = 0) -> pathlib.Path:
  """Writes the dataset under `root` (which must not exist yet) and returns its path."""
  root_path = pathlib.Path(root)
  if root_path.exists():
    raise errors.UserFileExistsError(f'{root_path} already exists; refusing to overwrite it')
  rng = np.random.default_rng(seed)
  tmp = root_path.with_name(root_path.name + '.partial')
  for split, count in (('train', num_train), ('val', num_val)):
    for i in range(count):
      city = CITIES[split][i % len(CITIES[split])]
      stem = f'{city}_{i:06d}_000019'
      image, label = make_scene(rng, height, width)
      for kind, suffix, array in (('leftImg8bit', IMAGE_SUFFIX, image),
                                  ('gtFine', LABEL_SUFFIX, label)):
        directory = tmp / kind / split / city
        directory.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(directory / f'{stem}{suffix}')
  tmp.rename(root_path)  # appears complete or not at all
  return root_path
