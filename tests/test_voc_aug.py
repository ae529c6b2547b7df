"""scripts/prepare_voc_aug.py: SBD .mat labels -> SegmentationClassAug, the trainaug list."""

import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
import scipy.io
from PIL import Image

from flanet_jax.data import voc, voc_aug
from tests import layouts, support

REPO = support.REPO
# SBD ids: one also in VOC train, one in VOC val (must be dropped), two SBD-only.
SBD_TRAIN = ['2007_000032', '2009_000001']
SBD_VAL = ['2007_000033', '2009_000002']


@pytest.fixture
def roots(tmp_path):
  voc_root = layouts.write_voc(tmp_path)
  return voc_root, layouts.write_sbd(tmp_path, voc_root, SBD_TRAIN, SBD_VAL)


def test_trainaug_is_voc_train_and_sbd_minus_voc_val(roots):
  voc_root, sbd_root = roots
  ids = voc_aug.prepare(str(voc_root), str(sbd_root))
  want = sorted(set(layouts.VOC_SPLITS['train']) | {'2009_000001', '2009_000002'})
  assert ids == want and '2007_000033' not in ids  # VOC val never leaks into training
  assert voc.read_ids(voc.split_file(voc_root, 'trainaug')) == want

  source = voc.VOCSource(str(voc_root), 'trainaug')
  assert [source.name(i) for i in range(len(source))] == want
  for i, image_id in enumerate(want):
    written = Image.open(voc_root / 'SegmentationClassAug' / f'{image_id}.png')
    assert written.mode == 'L'
    if image_id in layouts.VOC_SPLITS['train']:  # VOC's own (finer) annotation wins
      want_label = np.asarray(Image.open(voc_root / 'SegmentationClass' / f'{image_id}.png'))
    else:
      mat = scipy.io.loadmat(sbd_root / 'cls' / f'{image_id}.mat')
      want_label = mat['GTcls'][0, 0]['Segmentation']
    np.testing.assert_array_equal(source[i]['label'], want_label)
  assert len(np.unique(source[want.index('2009_000001')]['label'])) > 5  # real SBD content


def test_script_refuses_to_overwrite(roots):
  voc_root, sbd_root = roots
  script = [sys.executable, str(REPO / 'scripts' / 'prepare_voc_aug.py'), str(voc_root),
            str(sbd_root)]
  env = dict(os.environ, PYTHONPATH=str(REPO))  # this checkout's flanet_jax
  run = lambda: subprocess.run(script, capture_output=True, text=True, cwd=REPO, env=env,
                               timeout=120)
  first = run()
  assert first.returncode == 0, first.stderr
  assert 'Wrote 5 labels' in first.stdout
  second = run()
  assert second.returncode == 1 and 'already exists' in second.stderr


def _assert_nothing_written(voc_root: pathlib.Path):
  assert sorted(p.name for p in voc_root.iterdir()) == ['ImageSets', 'JPEGImages',
                                                        'SegmentationClass']
  assert not voc.split_file(voc_root, 'trainaug').exists()


def test_missing_mat_file_is_named_and_nothing_is_written(roots):
  voc_root, sbd_root = roots
  missing = sbd_root / 'cls' / '2009_000002.mat'
  missing.unlink()
  with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
    voc_aug.prepare(str(voc_root), str(sbd_root))
  _assert_nothing_written(voc_root)


@pytest.mark.parametrize('damage', ['corrupt', 'out_of_range', 'wrong_size', 'no_image'])
def test_bad_sbd_input_is_named_and_nothing_is_written(roots, damage):
  voc_root, sbd_root = roots
  mat = sbd_root / 'cls' / '2009_000002.mat'
  named = mat
  if damage == 'corrupt':
    mat.write_bytes(b'MATLAB 5.0 MAT-file, truncated')
  elif damage == 'no_image':
    named = voc_root / 'JPEGImages' / '2009_000002.jpg'
    named.unlink()
  else:
    segmentation = np.full((8, 8), 3, np.uint8)
    if damage == 'out_of_range':
      segmentation = scipy.io.loadmat(mat)['GTcls'][0, 0]['Segmentation']
      segmentation[0, 0] = 40
    scipy.io.savemat(mat, {'GTcls': {'Segmentation': segmentation}})
  with pytest.raises((ValueError, FileNotFoundError), match=re.escape(str(named))):
    voc_aug.prepare(str(voc_root), str(sbd_root))
  _assert_nothing_written(voc_root)


def test_missing_sbd_list_is_a_clear_error(roots):
  voc_root, sbd_root = roots
  (sbd_root / 'val.txt').unlink()
  with pytest.raises(FileNotFoundError, match=re.escape(str(sbd_root / 'val.txt'))):
    voc_aug.prepare(str(voc_root), str(sbd_root))
  _assert_nothing_written(voc_root)
