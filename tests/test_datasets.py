"""ADE20K and VOC readers in their real layouts, label mapping, palettes; Cityscapes test split."""

import shutil

import numpy as np
import pytest
from PIL import Image

from flanet_jax import data
from flanet_jax.data import ade20k, cityscapes, voc
from tests import layouts


@pytest.fixture(scope='module')
def ade_root(tmp_path_factory):
  return layouts.write_ade20k(tmp_path_factory.mktemp('ade'))


@pytest.fixture(scope='module')
def voc_root(tmp_path_factory):
  return layouts.write_voc(tmp_path_factory.mktemp('voc'))


def test_ade20k_reads_images_and_reduces_zero_label(ade_root):
  source = ade20k.ADE20KSource(str(ade_root), 'val')
  assert len(source) == 3 and source.labelled
  assert [source.name(i) for i in range(3)] == [f'ADE_val_{i:08d}' for i in (1, 2, 3)]
  stored_values = set()
  for i in range(3):
    example = source[i]
    name = source.name(i)
    stored = np.asarray(Image.open(ade_root / 'annotations' / 'validation' / f'{name}.png'))
    image = np.asarray(Image.open(ade_root / 'images' / 'validation' / f'{name}.jpg'))
    np.testing.assert_array_equal(example['image'], image)
    # mmseg reduce_zero_label: 0 ("other") -> 255, k -> k - 1.
    want = np.where(stored == 0, 255, stored.astype(int) - 1)
    np.testing.assert_array_equal(example['label'], want)
    stored_values |= set(np.unique(stored).tolist())
    assert source.image_size(i) == stored.shape == layouts.SIZES[i]
  assert {0, 1, 150} <= stored_values  # both ends of the range were mapped
  assert len(ade20k.ADE20KSource(str(ade_root), 'train')) == 4


def test_ade20k_root_must_be_the_challenge_folder(ade_root):
  with pytest.raises(FileNotFoundError, match=f'set data.root to {ade_root}'):
    ade20k.ADE20KSource(str(ade_root.parent), 'train')


def test_voc_palette_pngs_give_class_indices_not_colours(voc_root):
  source = voc.VOCSource(str(voc_root), 'train')
  assert [source.name(i) for i in range(len(source))] == layouts.VOC_SPLITS['train']
  for i in range(len(source)):
    path = voc_root / 'SegmentationClass' / f'{source.name(i)}.png'
    with Image.open(path) as stored:
      assert stored.mode == 'P'
      indices = np.asarray(stored)
      colours = np.asarray(stored.convert('RGB'))
    label = source[i]['label']
    np.testing.assert_array_equal(label, indices)
    assert {0, 255} <= set(np.unique(label)) and label.max(where=label < 255, initial=0) > 0
    np.testing.assert_array_equal(colours[label == 15], np.broadcast_to(voc.PALETTE[15],
                                                                        colours[label == 15].shape))
  assert len(voc.VOCSource(str(voc_root), 'trainval')) == 5
  assert voc.VOCSource(str(voc_root), 'val').name(1) == '2008_000003'


def test_voc_test_split_is_unlabelled(voc_root, tmp_path):
  root = tmp_path / 'VOC2012'
  shutil.copytree(voc_root, root)
  voc.split_file(root, 'test').write_text('2009_000001\n2009_000002\n')
  source = voc.VOCSource(str(root), 'test')
  assert not source.labelled and set(source[1]) == {'image'}
  assert source[1]['image'].shape == (*source.image_size(1), 3)


def test_cityscapes_test_split_is_unlabelled(tiny_dataset, tmp_path):
  root = tmp_path / 'cityscapes'
  shutil.copytree(tiny_dataset / 'leftImg8bit' / 'val', root / 'leftImg8bit' / 'test')
  source = cityscapes.CityscapesSource(str(root), 'test')  # no gtFine/test needed
  assert len(source) == 6 and not source.labelled
  assert set(source[0]) == {'image'} and source.name(0).startswith('frankfurt_')


def test_class_tables_match_mmsegmentation_conventions():
  assert len(ade20k.CLASS_NAMES) == len(ade20k.PALETTE) == 150
  assert ade20k.CLASS_NAMES[:3] == ('wall', 'building', 'sky')
  assert ade20k.CLASS_NAMES[-1] == 'flag' and ade20k.CLASS_NAMES[7] == 'bed'
  assert tuple(ade20k.PALETTE[0]) == (120, 120, 120) and tuple(ade20k.PALETTE[-1]) == (92, 0, 255)
  assert len(set(ade20k.CLASS_NAMES)) == 150
  # VOC's colour map: bits of the class index spread over the high bits of R, G, B.
  for index, colour in enumerate(voc.PALETTE):
    want = [0, 0, 0]
    for bit in range(8):
      for channel in range(3):
        want[channel] |= ((index >> (3 * bit + channel)) & 1) << (7 - bit)
    assert tuple(colour) == tuple(want)
  assert voc.CLASS_NAMES[15] == 'person' and len(voc.CLASS_NAMES) == 21
  np.testing.assert_array_equal(ade20k.SUBMISSION_IDS, np.arange(1, 151))


@pytest.mark.parametrize('name,classes', [('cityscapes', 19), ('ade20k', 150), ('voc', 21)])
def test_registry_and_num_classes_check(name, classes, tmp_path):
  info = data.dataset_info(name)
  assert len(info.class_names) == len(info.palette) == len(info.submission_ids) == classes
  from tests import support
  config = support.tiny_config(tmp_path, **{'data.name': name, 'model.num_classes': classes})
  data.check_num_classes(config)
  config.model.num_classes = classes + 1
  with pytest.raises(ValueError, match=f'{classes} classes'):
    data.check_num_classes(config)
