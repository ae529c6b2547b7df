"""grain pipelines: the infinite training stream and the padded, masked evaluation pass.

Training: one global stream, shuffled anew each epoch from the seed. Global batch k holds
stream positions [k*B, (k+1)*B); process p of P reads and transforms only its sub-batch
[k*B + p*B/P, k*B + (p+1)*B/P). Example g is augmented with a generator seeded by (seed, g).
So the global batch at each step is the same for any number of hosts, devices or workers, and
the iterator's position is the step: a resumed run continues exactly.
"""

import functools
from typing import Callable, Iterator

import grain
from absl import flags
import numpy as np

from flanet_jax import errors
from flanet_jax.data.transforms import normalize
from flanet_jax.labels import IGNORE_INDEX


def _seeded(transform: Callable, seed: int):
  """grain map_with_index function: `transform(example, rng)` with rng from (seed, index)."""

  def apply(index, example):
    return transform(example, np.random.default_rng([seed, index]))

  return apply


def train_dataset(source, transform: Callable, *, global_batch: int, seed: int,
                  process_index: int, process_count: int) -> grain.MapDataset:
  """Host-local batches of the global training stream (see module docstring)."""
  if global_batch % process_count:
    raise errors.UserValueError(f'batch_size {global_batch} is not divisible by the '
                                f'{process_count} processes')
  host_batch = global_batch // process_count
  stream = grain.MapDataset.source(source).shuffle(seed=seed).repeat(None)
  stream = stream.map_with_index(_seeded(transform, seed))
  # Sub-batches of host_batch; process p owns every P-th one, starting at p.
  return stream.batch(host_batch, drop_remainder=True)[process_index::process_count]


def read_options(workers: int) -> grain.ReadOptions:
  """Two batches ahead per process. grain's default (16 threads, 500 elements) would compute
  up to 500 batches ahead: gigabytes at paper crop sizes, and cores taken from the step."""
  return grain.ReadOptions(num_threads=1 if workers else 2, prefetch_buffer_size=2)


def iterator(dataset: grain.MapDataset, workers: int) -> grain.DatasetIterator:
  """Iterator with checkpointable state; `workers` > 0 computes the elements (decoding,
  augmenting, padding) in worker processes, a couple ahead each."""
  iterable = dataset.to_iter_dataset(read_options(workers))
  if workers > 0:
    if not flags.FLAGS.is_parsed():  # grain's workers read absl flags (library use, notebooks)
      flags.FLAGS.mark_as_parsed()
    iterable = iterable.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
  return iter(iterable)


def _pad_batch(examples: list[dict], rows: int, size: tuple[int, int], labelled: bool) -> dict:
  """Stacks `rows` examples top-left on a `size` canvas, with each one's true (height, width).

  Padding (and missing rows) is image 0 and label 255; a missing row's size is the canvas.
  """
  batch = {'image': np.zeros((rows, *size, 3), np.float32),
           'size': np.tile(np.array(size, np.int32), (rows, 1))}
  if labelled:
    batch['label'] = np.full((rows, *size), IGNORE_INDEX, np.int32)
  for i, example in enumerate(examples):
    h, w = example['image'].shape[:2]
    batch['image'][i, :h, :w] = normalize(example['image'])
    batch['size'][i] = h, w
    if labelled:
      batch['label'][i, :h, :w] = example['label']
  return batch


def round_up(value: int, multiple: int) -> int:
  return -(-value // multiple) * multiple


def _host_eval_batch(number: int, *, source, global_batch: int, host_batch: int,
                     process_index: int, size_divisor: int) -> tuple[dict, np.ndarray]:
  """This host's rows of global batch `number`, and the source indices of its real examples."""
  first = number * global_batch
  sizes = [source.image_size(i) for i in range(first, min(first + global_batch, len(source)))]
  size = (round_up(max(h for h, _ in sizes), size_divisor),
          round_up(max(w for _, w in sizes), size_divisor))
  start = first + process_index * host_batch
  indices = range(start, min(start + host_batch, len(source)))
  batch = _pad_batch([source[i] for i in indices], host_batch, size, source.labelled)
  return batch, np.array(indices, np.int64)


def eval_batches(source, *, global_batch: int, process_index: int, process_count: int,
                 size_divisor: int = 1, workers: int = 0) -> Iterator[tuple[dict, list[int]]]:
  """Host-local eval batches covering every example exactly once across all hosts.

  Yields (batch, indices): `indices` are the source indices of the real examples in the batch;
  the remaining rows and the padding are label 255, so they add nothing to the metrics.
  Every host yields the same number of batches of the same shape (the largest image of the
  global batch, rounded up to `size_divisor`; sizes come from the file headers), as jit over
  a mesh requires. The batch holds 'image', 'size' (true height, width) and, if the source is
  labelled, 'label'. `workers` > 0 decodes and pads whole batches in worker processes.
  """
  if global_batch % process_count:
    raise errors.UserValueError(f'eval_batch_size {global_batch} is not divisible by the '
                                f'{process_count} processes')
  build = functools.partial(_host_eval_batch, source=source, global_batch=global_batch,
                            host_batch=global_batch // process_count,
                            process_index=process_index, size_divisor=size_divisor)
  dataset = grain.MapDataset.range(-(-len(source) // global_batch)).map(build)
  batches = iterator(dataset, workers)
  try:
    for batch, indices in batches:
      yield batch, indices.tolist()
  finally:
    batches.close()  # stops the worker processes, also when the caller stops early
