"""ADE20K (MIT SceneParsing, ADEChallengeData2016): 150 classes.

`data.root` is the `ADEChallengeData2016` folder itself (as in mmsegmentation):

  {root}/images/{training,validation}/{name}.jpg
  {root}/annotations/{training,validation}/{name}.png

Splits `train` and `val`. Stored label 0 ("other") is ignored (-> 255); 1..150 become 0..149
(mmsegmentation's reduce_zero_label). Class names and palette as in mmsegmentation.
"""

import pathlib

import numpy as np

from flanet_jax import errors
from flanet_jax.data.source import Sample, SegmentationSource, label_table, require_dir
from flanet_jax.labels import IGNORE_INDEX

FOLDER = 'ADEChallengeData2016'
SPLIT_DIRS = {'train': 'training', 'val': 'validation'}

CLASS_NAMES = (
    'wall', 'building', 'sky', 'floor', 'tree', 'ceiling', 'road', 'bed', 'windowpane',
    'grass', 'cabinet', 'sidewalk', 'person', 'earth', 'door', 'table', 'mountain', 'plant',
    'curtain', 'chair', 'car', 'water', 'painting', 'sofa', 'shelf', 'house', 'sea', 'mirror',
    'rug', 'field', 'armchair', 'seat', 'fence', 'desk', 'rock', 'wardrobe', 'lamp', 'bathtub',
    'railing', 'cushion', 'base', 'box', 'column', 'signboard', 'chest of drawers', 'counter',
    'sand', 'sink', 'skyscraper', 'fireplace', 'refrigerator', 'grandstand', 'path', 'stairs',
    'runway', 'case', 'pool table', 'pillow', 'screen door', 'stairway', 'river', 'bridge',
    'bookcase', 'blind', 'coffee table', 'toilet', 'flower', 'book', 'hill', 'bench',
    'countertop', 'stove', 'palm', 'kitchen island', 'computer', 'swivel chair', 'boat', 'bar',
    'arcade machine', 'hovel', 'bus', 'towel', 'light', 'truck', 'tower', 'chandelier',
    'awning', 'streetlight', 'booth', 'television receiver', 'airplane', 'dirt track',
    'apparel', 'pole', 'land', 'bannister', 'escalator', 'ottoman', 'bottle', 'buffet',
    'poster', 'stage', 'van', 'ship', 'fountain', 'conveyer belt', 'canopy', 'washer',
    'plaything', 'swimming pool', 'stool', 'barrel', 'basket', 'waterfall', 'tent', 'bag',
    'minibike', 'cradle', 'oven', 'ball', 'food', 'step', 'tank', 'trade name', 'microwave',
    'pot', 'animal', 'bicycle', 'lake', 'dishwasher', 'screen', 'blanket', 'sculpture', 'hood',
    'sconce', 'vase', 'traffic light', 'tray', 'ashcan', 'fan', 'pier', 'crt screen', 'plate',
    'monitor', 'bulletin board', 'shower', 'radiator', 'glass', 'clock', 'flag')

# RGB per class, ten to a line.
PALETTE = np.array([
    (120, 120, 120), (180, 120, 120), (6, 230, 230), (80, 50, 50), (4, 200, 3),
    (120, 120, 80), (140, 140, 140), (204, 5, 255), (230, 230, 230), (4, 250, 7),
    (224, 5, 255), (235, 255, 7), (150, 5, 61), (120, 120, 70), (8, 255, 51),
    (255, 6, 82), (143, 255, 140), (204, 255, 4), (255, 51, 7), (204, 70, 3),
    (0, 102, 200), (61, 230, 250), (255, 6, 51), (11, 102, 255), (255, 7, 71),
    (255, 9, 224), (9, 7, 230), (220, 220, 220), (255, 9, 92), (112, 9, 255),
    (8, 255, 214), (7, 255, 224), (255, 184, 6), (10, 255, 71), (255, 41, 10),
    (7, 255, 255), (224, 255, 8), (102, 8, 255), (255, 61, 6), (255, 194, 7),
    (255, 122, 8), (0, 255, 20), (255, 8, 41), (255, 5, 153), (6, 51, 255),
    (235, 12, 255), (160, 150, 20), (0, 163, 255), (140, 140, 140), (250, 10, 15),
    (20, 255, 0), (31, 255, 0), (255, 31, 0), (255, 224, 0), (153, 255, 0),
    (0, 0, 255), (255, 71, 0), (0, 235, 255), (0, 173, 255), (31, 0, 255),
    (11, 200, 200), (255, 82, 0), (0, 255, 245), (0, 61, 255), (0, 255, 112),
    (0, 255, 133), (255, 0, 0), (255, 163, 0), (255, 102, 0), (194, 255, 0),
    (0, 143, 255), (51, 255, 0), (0, 82, 255), (0, 255, 41), (0, 255, 173),
    (10, 0, 255), (173, 255, 0), (0, 255, 153), (255, 92, 0), (255, 0, 255),
    (255, 0, 245), (255, 0, 102), (255, 173, 0), (255, 0, 20), (255, 184, 184),
    (0, 31, 255), (0, 255, 61), (0, 71, 255), (255, 0, 204), (0, 255, 194),
    (0, 255, 82), (0, 10, 255), (0, 112, 255), (51, 0, 255), (0, 194, 255),
    (0, 122, 255), (0, 255, 163), (255, 153, 0), (0, 255, 10), (255, 112, 0),
    (143, 255, 0), (82, 0, 255), (163, 255, 0), (255, 235, 0), (8, 184, 170),
    (133, 0, 255), (0, 255, 92), (184, 0, 255), (255, 0, 31), (0, 184, 255),
    (0, 214, 255), (255, 0, 112), (92, 255, 0), (0, 224, 255), (112, 224, 255),
    (70, 184, 160), (163, 0, 255), (153, 0, 255), (71, 255, 0), (255, 0, 163),
    (255, 204, 0), (255, 0, 143), (0, 255, 235), (133, 255, 0), (255, 0, 235),
    (245, 0, 255), (255, 0, 122), (255, 245, 0), (10, 190, 212), (214, 255, 0),
    (0, 204, 255), (20, 0, 255), (255, 255, 0), (0, 153, 255), (0, 41, 255),
    (0, 255, 204), (41, 0, 255), (41, 255, 0), (173, 0, 255), (0, 245, 255),
    (71, 0, 255), (122, 0, 255), (0, 255, 184), (0, 92, 255), (184, 255, 0),
    (0, 133, 255), (255, 214, 0), (25, 194, 194), (102, 255, 0), (92, 0, 255),
], np.uint8)

NUM_CLASSES = len(CLASS_NAMES)
LABEL_TABLE = label_table({0: IGNORE_INDEX, **{v: v - 1 for v in range(1, NUM_CLASSES + 1)}})
SUBMISSION_IDS = np.arange(1, NUM_CLASSES + 1, dtype=np.uint8)  # the benchmark's 1..150


def _split_dirs(root: str, split: str) -> tuple[pathlib.Path, pathlib.Path]:
  root_path = pathlib.Path(root)
  if (root_path / FOLDER).is_dir() and not (root_path / 'images').is_dir():
    raise errors.UserFileNotFoundError(f'{root_path} holds {FOLDER}: set data.root to '
                                       f'{root_path / FOLDER}')
  require_dir(root_path, 'ADE20K')
  if split not in SPLIT_DIRS:
    raise errors.UserFileNotFoundError(f'Unknown ADE20K split {split!r}; choose one of '
                                       f'{list(SPLIT_DIRS)}')
  image_dir = root_path / 'images' / SPLIT_DIRS[split]
  label_dir = root_path / 'annotations' / SPLIT_DIRS[split]
  require_dir(image_dir, f'ADE20K {split!r} images')
  require_dir(label_dir, f'ADE20K {split!r} annotations')
  return image_dir, label_dir


def list_samples(root: str, split: str) -> list[Sample]:
  """Sorted samples; every image must have its annotation and every annotation its image."""
  image_dir, label_dir = _split_dirs(root, split)
  images = {p.stem: p for p in sorted(image_dir.glob('*.jpg'))}
  labels = {p.stem: p for p in sorted(label_dir.glob('*.png'))}
  for stem, image in images.items():
    if stem not in labels:
      raise errors.UserFileNotFoundError(f'Image {image} has no label: expected '
                                         f'{label_dir / stem}.png')
  for stem, label in labels.items():
    if stem not in images:
      raise errors.UserFileNotFoundError(f'Label {label} has no image: expected '
                                         f'{image_dir / stem}.jpg')
  return [Sample(stem, image, labels[stem]) for stem, image in images.items()]


class ADE20KSource(SegmentationSource):
  """ADE20K `split` (train, val) under `root` (the ADEChallengeData2016 folder)."""

  def __init__(self, root: str, split: str):
    samples = list_samples(root, split)  # validates root and split first
    super().__init__(samples, LABEL_TABLE,
                     f'{pathlib.Path(root) / "images" / SPLIT_DIRS[split]}/*.jpg')
