"""Bad datasets give one clear error naming the file (or folder), for all three layouts."""

import re
import shutil

import numpy as np
import pytest
from PIL import Image

from flanet_jax import train
from flanet_jax.data import ade20k, cityscapes, pipeline, voc
from tests import layouts, support


@pytest.fixture(scope='module')
def pristine(tmp_path_factory, tiny_dataset):
  """Read-only originals: {'cityscapes': root, 'ade20k': root, 'voc': root}."""
  return {'cityscapes': tiny_dataset,
          'ade20k': layouts.write_ade20k(tmp_path_factory.mktemp('ade')),
          'voc': layouts.write_voc(tmp_path_factory.mktemp('voc'))}


class Layout:
  """Where a dataset keeps the files of its first training example."""

  def __init__(self, name, root):
    self.name, self.root = name, root
    self.source_class = {'cityscapes': cityscapes.CityscapesSource,
                         'ade20k': ade20k.ADE20KSource, 'voc': voc.VOCSource}[name]

  def source(self, split='train'):
    return self.source_class(str(self.root), split)

  def first(self):
    sample = self.source().samples[0]
    return sample.image, sample.label


@pytest.fixture(params=['cityscapes', 'ade20k', 'voc'])
def layout(request, pristine, tmp_path):
  root = tmp_path / pristine[request.param].name
  shutil.copytree(pristine[request.param], root)
  return Layout(request.param, root)


def test_missing_root(layout):
  missing = layout.root.parent / 'nowhere'
  with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
    layout.source_class(str(missing), 'train')


def test_missing_split(layout):
  where = {'cityscapes': 'leftImg8bit/test', 'ade20k': "Unknown ADE20K split 'test'",
           'voc': 'ImageSets/Segmentation/test.txt'}[layout.name]
  with pytest.raises(FileNotFoundError, match=where):
    layout.source('test')


def test_image_without_label(layout):
  image, label = layout.first()
  label.unlink()
  with pytest.raises(FileNotFoundError, match=re.escape(f'Image {image} has no label')):
    layout.source()


def test_label_without_image(layout):
  image, label = layout.first()
  image.unlink()
  with pytest.raises(FileNotFoundError, match=re.escape(f'Label {label} has no image')):
    layout.source()


def test_empty_split(layout):
  if layout.name == 'voc':
    voc.split_file(layout.root, 'train').write_text('\n')
    where = 'ImageSets/Segmentation/train.txt'
  else:
    for sample in layout.source().samples:
      sample.image.unlink()
      sample.label.unlink()
    where = 'images/training' if layout.name == 'ade20k' else 'leftImg8bit/train'
  with pytest.raises(FileNotFoundError, match=f'Empty split: no images in .*{where}'):
    layout.source()


@pytest.mark.parametrize('damage', ['garbage', 'truncated'])
def test_corrupt_image_is_reported_when_read(layout, damage):
  image, _ = layout.first()
  source = layout.source()  # listing does not decode: the error comes when it is read
  content = image.read_bytes()
  image.write_bytes(b'not an image at all' if damage == 'garbage' else content[:len(content) // 2])
  with pytest.raises(ValueError, match=f'Cannot (decode|read) image {re.escape(str(image))}'):
    source[0]


def test_label_and_image_sizes_differ(layout):
  image, label = layout.first()
  stored = np.asarray(Image.open(label))
  Image.fromarray(np.ascontiguousarray(stored[:-2])).save(label)
  where = f'Label {re.escape(str(label))} has size .* image {re.escape(str(image))}'
  with pytest.raises(ValueError, match=where):
    layout.source()[0]


def test_label_value_outside_the_dataset(layout):
  _, label = layout.first()
  bad = {'cityscapes': 34, 'ade20k': 151, 'voc': 21}[layout.name]
  stored = np.array(Image.open(label))
  stored[3, 5] = bad
  if layout.name == 'voc':
    layouts.palette_png(stored, label)
  else:
    Image.fromarray(stored).save(label)
  source = layout.source()
  where = rf'Label {re.escape(str(label))} has values \[{bad}\] outside'
  with pytest.raises(ValueError, match=where):
    source[0]
  stored[3, 5] = 255  # the ignore value is valid everywhere
  Image.fromarray(stored).save(label)
  assert source[0]['label'][3, 5] == 255


@pytest.mark.parametrize('mode', ['L', 'RGBA'])
def test_grayscale_and_rgba_images_are_converted(layout, mode):
  image_path, _ = layout.first()
  rgb = np.asarray(Image.open(image_path).convert('RGB'))
  converted = Image.fromarray(rgb).convert(mode)
  if layout.name == 'cityscapes':
    converted.save(image_path)
  else:  # JPEG cannot hold RGBA: a PNG under the .jpg name, as happens in the wild
    converted.save(image_path, format='PNG')
  example = layout.source()[0]
  assert example['image'].shape == (*rgb.shape[:2], 3) and example['image'].dtype == np.uint8
  np.testing.assert_array_equal(example['image'], np.asarray(converted.convert('RGB')))


def test_bad_example_in_the_training_stream_names_its_file(layout):
  image, _ = layout.first()
  source = layout.source()
  image.write_bytes(b'broken')
  dataset = pipeline.train_dataset(source, lambda example, rng: example, global_batch=1,
                                   seed=0, process_index=0, process_count=1)
  with pytest.raises(ValueError, match=re.escape(str(image))):
    for step in range(len(source)):  # the shuffled stream reaches example 0 in one epoch
      dataset[step]


def test_training_with_a_bad_dataset_writes_nothing(tiny_dataset, tmp_path):
  root = tmp_path / 'cityscapes'
  shutil.copytree(tiny_dataset, root)
  label = sorted((root / 'gtFine' / 'val').glob('*/*_labelIds.png'))[0]
  label.unlink()  # the eval split is checked at start-up too
  workdir = tmp_path / 'work'
  with pytest.raises(FileNotFoundError, match='has no label'):
    train.train_and_evaluate(support.tiny_config(root), workdir)
  assert not workdir.exists()
