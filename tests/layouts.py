"""Tiny datasets written by the tests in each real on-disk layout (random content, mixed sizes)."""

import pathlib

import numpy as np
import scipy.io
from PIL import Image

from flanet_jax.data import ade20k, voc

SIZES = ((30, 40), (36, 28), (24, 44), (32, 32))  # (height, width), cycled


def _random_image(rng, size) -> np.ndarray:
  return rng.integers(0, 256, (*size, 3), dtype=np.uint8)


def _blocky_label(rng, size, values) -> np.ndarray:
  """Random values in 4x4 blocks (regions, not noise), drawn from `values`."""
  blocks = rng.choice(np.asarray(values), (-(-size[0] // 4), -(-size[1] // 4)))
  return np.kron(blocks, np.ones((4, 4), blocks.dtype))[:size[0], :size[1]].astype(np.uint8)


def write_ade20k(parent: pathlib.Path, num_train=4, num_val=3, seed=0) -> pathlib.Path:
  """{parent}/ADEChallengeData2016 with stored labels 0..150; returns that folder."""
  rng = np.random.default_rng(seed)
  root = parent / ade20k.FOLDER
  for split, prefix, count in (('training', 'train', num_train), ('validation', 'val', num_val)):
    (root / 'images' / split).mkdir(parents=True)
    (root / 'annotations' / split).mkdir(parents=True)
    for i in range(count):
      name = f'ADE_{prefix}_{i + 1:08d}'
      size = SIZES[i % len(SIZES)]
      Image.fromarray(_random_image(rng, size)).save(root / 'images' / split / f'{name}.jpg')
      label = _blocky_label(rng, size, [0, 1, 2, 75, 149, 150])
      Image.fromarray(label).save(root / 'annotations' / split / f'{name}.png')
  return root


def palette_png(indices: np.ndarray, path: pathlib.Path) -> None:
  """A VOC-style palette PNG: the pixels are indices, shown with the VOC colours."""
  image = Image.fromarray(indices)
  palette = np.zeros((256, 3), np.uint8)
  palette[:len(voc.PALETTE)] = voc.PALETTE
  palette[255] = (224, 224, 192)  # VOC's boundary colour
  image.putpalette(palette.ravel().tolist())
  image.save(path)


VOC_SPLITS = {'train': ['2007_000032', '2007_000039', '2008_000002'],
              'val': ['2007_000033', '2008_000003']}


def write_voc(parent: pathlib.Path, seed=0, extra_images=('2009_000001', '2009_000002')):
  """{parent}/VOC2012 with palette labels (0..20 and 255 boundaries) for train and val; the
  `extra_images` have images only (as SBD ids do). Returns the VOC2012 folder."""
  rng = np.random.default_rng(seed)
  root = parent / voc.FOLDER
  for folder in ('JPEGImages', 'SegmentationClass', 'ImageSets/Segmentation'):
    (root / folder).mkdir(parents=True)
  all_ids = VOC_SPLITS['train'] + VOC_SPLITS['val']
  for i, image_id in enumerate(all_ids + list(extra_images)):
    size = SIZES[i % len(SIZES)]
    Image.fromarray(_random_image(rng, size)).save(root / 'JPEGImages' / f'{image_id}.jpg')
    if image_id in all_ids:
      palette_png(_blocky_label(rng, size, [0, 0, 5, 15, 20, 255]),
                  root / 'SegmentationClass' / f'{image_id}.png')
  for split, ids in {**VOC_SPLITS, 'trainval': all_ids}.items():
    voc.split_file(root, split).write_text(''.join(f'{i}\n' for i in ids))
  return root


def write_sbd(parent: pathlib.Path, voc_root: pathlib.Path, train_ids, val_ids, seed=1):
  """SBD's benchmark_RELEASE/dataset: cls/{id}.mat (GTcls.Segmentation) sized like the VOC
  image of the same id, and its train/val lists. Returns the dataset folder."""
  rng = np.random.default_rng(seed)
  root = parent / 'benchmark_RELEASE' / 'dataset'
  (root / 'cls').mkdir(parents=True)
  for image_id in list(train_ids) + list(val_ids):
    with Image.open(voc_root / 'JPEGImages' / f'{image_id}.jpg') as image:
      size = image.height, image.width
    segmentation = _blocky_label(rng, size, range(21))
    scipy.io.savemat(root / 'cls' / f'{image_id}.mat', {'GTcls': {
        'Segmentation': segmentation, 'Boundaries': np.zeros((1, 20), object),
        'CategoriesPresent': np.unique(segmentation[segmentation > 0])}})
  (root / 'train.txt').write_text(''.join(f'{i}\n' for i in train_ids))
  (root / 'val.txt').write_text(''.join(f'{i}\n' for i in val_ids))
  return root
