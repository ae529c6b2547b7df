"""VOC 2012 + SBD ("trainaug"): grayscale label PNGs and the split list, written once.

SBD (Hariharan et al.; `benchmark_RELEASE/dataset`) holds `cls/{id}.mat` with the class map in
`GTcls.Segmentation` and its own `train.txt`, `val.txt`. trainaug = VOC train ∪ SBD train ∪
SBD val, minus VOC val (10,582 ids on the real data). Labels go to `SegmentationClassAug/`:
VOC's own annotation where the id has one in VOC train (finer, with 255 boundaries), else SBD's.
Every image must be in VOC's JPEGImages (SBD's images are a subset of VOC 2012's).
"""

import pathlib
import shutil

import numpy as np
import scipy.io
from PIL import Image

from flanet_jax import errors
from flanet_jax.data import image_io, voc
from flanet_jax.data.source import map_label


def trainaug_ids(voc_root: pathlib.Path, sbd_root: pathlib.Path) -> list[str]:
  voc_train = voc.read_ids(voc.split_file(voc_root, 'train'))
  voc_val = set(voc.read_ids(voc.split_file(voc_root, 'val')))
  sbd = voc.read_ids(sbd_root / 'train.txt') + voc.read_ids(sbd_root / 'val.txt')
  return sorted(set(voc_train + sbd) - voc_val)


def read_sbd_label(path: pathlib.Path) -> np.ndarray:
  """The class map of an SBD `cls/*.mat` file, uint8 (H, W)."""
  try:
    mat = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)
    return np.asarray(mat['GTcls'].Segmentation, np.uint8)
  except Exception as error:  # scipy raises assorted types (IndexError, ...) on damaged files
    raise errors.UserValueError(f'Cannot read SBD label {path}: {error!r}') from error


def _label_for(image_id: str, voc_root, sbd_root, voc_train: set):
  """(label, its path): VOC's own annotation for VOC train ids, else SBD's."""
  if image_id in voc_train:
    path = voc.label_dir(voc_root, 'train') / f'{image_id}.png'
    return image_io.read_label(path), path
  path = sbd_root / 'cls' / f'{image_id}.mat'
  if not path.is_file():
    raise errors.UserFileNotFoundError(f'SBD label not found: {path}')
  return read_sbd_label(path), path


def _write_labels(ids, voc_root, sbd_root, out_dir: pathlib.Path) -> None:
  voc_train = set(voc.read_ids(voc.split_file(voc_root, 'train')))
  for image_id in ids:
    image = voc_root / 'JPEGImages' / f'{image_id}.jpg'
    if not image.is_file():
      raise errors.UserFileNotFoundError(f'Image not found for trainaug id {image_id!r}: {image}')
    label, path = _label_for(image_id, voc_root, sbd_root, voc_train)
    map_label(label, voc.LABEL_TABLE, path)  # values 0..20 or 255 only
    if label.shape != image_io.image_size(image):
      raise errors.UserValueError(f'Label {path} has size {label.shape}, image {image} has '
                                  f'{image_io.image_size(image)}')
    Image.fromarray(label).save(out_dir / f'{image_id}.png')  # uint8 (H, W): grayscale 'L'


def prepare(voc_root: str, sbd_root: str) -> list[str]:
  """Writes SegmentationClassAug/ and trainaug.txt under voc_root; returns the ids.

  Refuses to overwrite either. On any bad input nothing is left behind.
  """
  voc_root, sbd_root = pathlib.Path(voc_root), pathlib.Path(sbd_root)
  out_dir, list_file = voc.label_dir(voc_root, voc.AUG_SPLIT), voc.split_file(voc_root,
                                                                              voc.AUG_SPLIT)
  for path in (out_dir, list_file):
    if path.exists():
      raise errors.UserFileExistsError(f'{path} already exists; refusing to overwrite it')
  ids = trainaug_ids(voc_root, sbd_root)
  staging = out_dir.with_name(out_dir.name + '.partial')
  shutil.rmtree(staging, ignore_errors=True)  # left over from a killed run
  staging.mkdir()
  try:
    _write_labels(ids, voc_root, sbd_root, staging)
  except BaseException:
    shutil.rmtree(staging)
    raise
  staging.rename(out_dir)
  list_file.write_text(''.join(f'{i}\n' for i in ids))
  return ids
