"""Cityscapes reader, label mapping, errors, and the deterministic sharded pipeline."""

import functools
import shutil
import time

import numpy as np
import pytest
from cityscapesscripts.helpers import labels as cs_labels
from PIL import Image

from flanet_jax.data import ade20k, cityscapes, pipeline, synthetic, transforms
from tests import layouts


def test_label_id_to_train_id_follows_cityscapesscripts():
  for label_id in range(256):
    label = cs_labels.id2label.get(label_id)
    if label is None:  # not a Cityscapes labelId: an error, except the ignore value
      assert cityscapes.LABEL_TABLE[label_id] == (255 if label_id == 255 else -1)
      continue
    want = label.trainId if 0 <= label.trainId < 255 else 255
    assert cityscapes.LABEL_TABLE[label_id] == want
  assert len(cityscapes.CLASS_NAMES) == 19 and cityscapes.CLASS_NAMES[13] == 'car'
  assert tuple(cityscapes.PALETTE[0]) == cs_labels.trainId2label[0].color


def test_reader_maps_label_ids_and_reads_real_pngs(tiny_dataset):
  source = cityscapes.CityscapesSource(str(tiny_dataset), 'val')
  assert len(source) == 6
  example = source[3]
  image_path, label_path = source.samples[3].image, source.samples[3].label
  np.testing.assert_array_equal(example['image'], np.asarray(Image.open(image_path)))
  label_ids = np.asarray(Image.open(label_path))
  np.testing.assert_array_equal(example['label'], cityscapes.LABEL_TABLE[label_ids])
  assert set(np.unique(label_ids)) >= {synthetic.UNLABELED, synthetic.ROAD, synthetic.SKY}
  assert 255 in example['label'] and 0 in example['label']  # ignored border, road
  assert source.image_size(3) == example['label'].shape


def test_missing_root_and_split_are_clear_errors(tmp_path, tiny_dataset):
  with pytest.raises(FileNotFoundError, match=str(tmp_path / 'nowhere')):
    cityscapes.CityscapesSource(str(tmp_path / 'nowhere'), 'train')
  with pytest.raises(FileNotFoundError, match='leftImg8bit/test'):
    cityscapes.CityscapesSource(str(tiny_dataset), 'test')


def test_image_without_label_is_a_clear_error(tmp_path, tiny_dataset):
  root = tmp_path / 'copy'
  shutil.copytree(tiny_dataset, root)
  label = sorted((root / 'gtFine' / 'train').glob('*/*_labelIds.png'))[2]
  label.unlink()
  with pytest.raises(FileNotFoundError, match=label.name.replace('_gtFine_labelIds.png', '')):
    cityscapes.CityscapesSource(str(root), 'train')


def _transform():
  return functools.partial(transforms.train_transform, crop_size=(24, 24), base_size=(),
                           scale_range=(0.5, 2.0), cat_max_ratio=0.75, flip=True,
                           photometric=True)


def _global_batches(source, processes, steps, global_batch=4, start=0):
  """The global batches at steps [start, start+steps) assembled from every process."""
  per_process = []
  for p in range(processes):
    dataset = pipeline.train_dataset(source, _transform(), global_batch=global_batch, seed=3,
                                     process_index=p, process_count=processes)
    per_process.append([dataset[start + k] for k in range(steps)])
  return [{key: np.concatenate([per_process[p][k][key] for p in range(processes)])
           for key in ('image', 'label')} for k in range(steps)]


def test_global_batches_do_not_depend_on_process_count(tiny_dataset):
  source = cityscapes.CityscapesSource(str(tiny_dataset), 'train')
  one, two = _global_batches(source, 1, 6), _global_batches(source, 2, 6)
  for a, b in zip(one, two):
    np.testing.assert_array_equal(a['image'], b['image'])
    np.testing.assert_array_equal(a['label'], b['label'])
  assert one[0]['image'].shape == (4, 24, 24, 3) and one[0]['image'].dtype == np.float32
  # Different steps see different crops (the stream is random, not constant).
  assert not np.array_equal(one[0]['image'], one[1]['image'])


def test_workers_and_resume_position_give_the_same_stream(tiny_dataset):
  source = cityscapes.CityscapesSource(str(tiny_dataset), 'train')
  dataset = pipeline.train_dataset(source, _transform(), global_batch=4, seed=3,
                                   process_index=0, process_count=1)
  serial = pipeline.iterator(dataset, workers=0)
  want = [next(serial) for _ in range(6)]
  parallel_iter = pipeline.iterator(dataset, workers=2)
  got = [next(parallel_iter) for _ in range(6)]
  resumed = pipeline.iterator(dataset[4:], workers=0)
  for a, b in zip(want, got):
    np.testing.assert_array_equal(a['image'], b['image'])
  np.testing.assert_array_equal(next(resumed)['label'], want[4]['label'])
  # The iterator's state is its position, and restoring it continues the stream.
  state = serial.get_state()
  fresh = pipeline.iterator(dataset, workers=0)
  fresh.set_state(state)
  np.testing.assert_array_equal(next(fresh)['image'], next(serial)['image'])


def test_training_stream_reads_only_a_few_batches_ahead(tiny_dataset):
  """The next batch is prepared while a step runs, but no more than a few: grain's default
  read-ahead (500 batches) would hold gigabytes at paper crop sizes."""
  source = cityscapes.CityscapesSource(str(tiny_dataset), 'train')
  transformed = []

  def counting_transform(example, rng):
    transformed.append(1)
    return _transform()(example, rng)

  dataset = pipeline.train_dataset(source, counting_transform, global_batch=2, seed=0,
                                   process_index=0, process_count=1)
  iterator = pipeline.iterator(dataset, workers=0)
  next(iterator)
  time.sleep(1.0)  # ample time for reader threads to run ahead
  assert 2 <= len(transformed) <= 2 * (1 + 2 + 2)  # this batch, the buffer, one per thread


def test_eval_batches_cover_every_image_once_with_uneven_batches(tiny_dataset):
  source = cityscapes.CityscapesSource(str(tiny_dataset), 'val')  # 6 images
  seen = []
  for process in range(2):
    batches = list(pipeline.eval_batches(source, global_batch=4, process_index=process,
                                         process_count=2))
    assert len(batches) == 2  # every process runs the same number of batches
    for batch, indices in batches:
      assert batch['image'].shape[0] == 2
      for row, index in enumerate(indices):
        np.testing.assert_array_equal(batch['label'][row], source[index]['label'])
      assert (batch['label'][len(indices):] == 255).all()  # padding rows are ignored
      seen += indices
  assert sorted(seen) == list(range(6))


@pytest.fixture(scope='module')
def mixed_sizes_source(tmp_path_factory):
  """Seven labelled images of four sizes (tests/layouts.py), so canvases differ by batch."""
  root = layouts.write_ade20k(tmp_path_factory.mktemp('ade'), num_train=0, num_val=7)
  return ade20k.ADE20KSource(str(root), 'val')


def _reference_eval_batches(source, global_batch, process_index, process_count, size_divisor):
  """The plain main-process loop: each global batch decoded; its canvas the largest decoded
  image rounded up to `size_divisor`; this host's rows pasted top-left on image 0 and label
  255, which also fill the rows past the end of the split."""
  host_batch = global_batch // process_count
  for first in range(0, len(source), global_batch):
    examples = {i: source[i] for i in range(first, min(first + global_batch, len(source)))}
    height = max(example['label'].shape[0] for example in examples.values())
    width = max(example['label'].shape[1] for example in examples.values())
    canvas = (-(-height // size_divisor) * size_divisor, -(-width // size_divisor) * size_divisor)
    start = first + process_index * host_batch
    indices = [i for i in range(start, start + host_batch) if i in examples]
    batch = {'image': np.zeros((host_batch, *canvas, 3), np.float32),
             'size': np.tile(np.array(canvas, np.int32), (host_batch, 1)),
             'label': np.full((host_batch, *canvas), 255, np.int32)}
    for row, i in enumerate(indices):
      h, w = examples[i]['label'].shape
      batch['image'][row, :h, :w] = ((examples[i]['image'] - transforms.IMAGENET_MEAN) /
                                     transforms.IMAGENET_STD)
      batch['label'][row, :h, :w] = examples[i]['label']
      batch['size'][row] = h, w
    yield batch, indices


@pytest.mark.parametrize('workers, process_count, process',
                         [(0, 1, 0), (0, 2, 0), (0, 2, 1), (2, 2, 1)])
def test_eval_batches_equal_the_plain_loop(mixed_sizes_source, workers, process_count, process):
  # Global batches of 6 over 7 images: canvases 40x48 (36x44 rounded up to 8), then 24x48;
  # of two hosts, the second one's last batch is all padding; two workers build one each.
  want = list(_reference_eval_batches(mixed_sizes_source, 6, process, process_count, 8))
  got = list(pipeline.eval_batches(mixed_sizes_source, global_batch=6, process_index=process,
                                   process_count=process_count, size_divisor=8,
                                   workers=workers))
  assert [indices for _, indices in got] == [indices for _, indices in want]
  for (batch, _), (expected, _) in zip(got, want):
    assert batch.keys() == expected.keys()
    for key, value in expected.items():
      assert batch[key].dtype == value.dtype, key
      np.testing.assert_array_equal(batch[key], value, err_msg=key)
  assert [batch['image'].shape[1:3] for batch, _ in want] == [(40, 48), (24, 48)]
