"""Input pipeline throughput on Cityscapes-sized images: decoding alone vs the training pipeline.

  python benchmarks/bench_input.py [--images 8 --repeats 2 --warmup 24 --batches 16 \
      --workers 0 1 2 --step_times 0.25 0.5 1.0 --images_per_accelerator 1]

Writes synthetic 1024x2048 scenes (PNG image + labelIds, like leftImg8bit/gtFine) to a
temporary folder, then measures images/s of
  decode:    reading the image and label PNGs (+ labelId -> trainId), one process;
  transform: decode + the paper's augmentation (resize to 0.5-2x, 768x768 cat-max-ratio
             crop, flip, photometric distortion, normalise), one process;
  pipeline:  the grain training pipeline (shuffle, seeded transforms, batches of 8) with
             N worker processes (0: in the main process, two reader threads), in steady
             state: the first `--warmup` batches (start-up, and the two batches each process
             prepares ahead, pipeline.read_options) are not timed.
It prints a Markdown table and how many cores (workers) feed one accelerator that consumes
`images_per_accelerator` images per step, for a few step times.
"""

import argparse
import functools
import math
import pathlib
import tempfile
import time

import numpy as np
from PIL import Image

from flanet_jax.data import cityscapes, pipeline, synthetic, transforms

HEIGHT, WIDTH = 1024, 2048


def write_images(root: pathlib.Path, count: int) -> None:
  rng = np.random.default_rng(0)
  for i in range(count):
    image, label = synthetic.make_scene(rng, HEIGHT, WIDTH)
    stem = f'bench_{i:06d}_000019'
    for kind, suffix, array in (('leftImg8bit', cityscapes.IMAGE_SUFFIX, image),
                                ('gtFine', cityscapes.LABEL_SUFFIX, label)):
      directory = root / kind / 'train' / 'bench'
      directory.mkdir(parents=True, exist_ok=True)
      Image.fromarray(array).save(directory / f'{stem}{suffix}')


def paper_transform():
  return functools.partial(transforms.train_transform, crop_size=(768, 768),
                           base_size=(2048, 1024), scale_range=(0.5, 2.0), cat_max_ratio=0.75,
                           flip=True, photometric=True)


def images_per_second(function, count: int) -> float:
  start = time.perf_counter()
  for i in range(count):
    function(i)
  return count / (time.perf_counter() - start)


def pipeline_images_per_second(source, workers: int, warmup: int, batches: int,
                               batch: int = 8) -> float:
  dataset = pipeline.train_dataset(source, paper_transform(), global_batch=batch, seed=0,
                                   process_index=0, process_count=1)
  iterator = pipeline.iterator(dataset, workers)
  for _ in range(warmup):
    next(iterator)
  start = time.perf_counter()
  for _ in range(batches):
    next(iterator)
  return batches * batch / (time.perf_counter() - start)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--images', type=int, default=8, help='distinct images written')
  parser.add_argument('--repeats', type=int, default=2, help='passes over them (decode)')
  parser.add_argument('--warmup', type=int, default=24, help='untimed batches (pipeline)')
  parser.add_argument('--batches', type=int, default=16, help='timed batches of 8 (pipeline)')
  parser.add_argument('--workers', type=int, nargs='+', default=[0, 1, 2])
  parser.add_argument('--step_times', type=float, nargs='+', default=[0.25, 0.5, 1.0],
                      help='seconds per training step on one accelerator')
  parser.add_argument('--images_per_accelerator', type=int, default=1,
                      help='images per accelerator per step (paper: 8 over 8 GPUs)')
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    write_images(pathlib.Path(tmp), args.images)
    source = cityscapes.CityscapesSource(tmp, 'train')
    count = args.images * args.repeats
    rng = np.random.default_rng(0)
    rows = [('decode (image + label PNG)', images_per_second(
                lambda i: source[i % len(source)], count)),
            ('decode + paper transform', images_per_second(
                lambda i: paper_transform()(source[i % len(source)], rng), count))]
    for workers in args.workers:
      rows.append((f'grain pipeline, workers={workers}',
                   pipeline_images_per_second(source, workers, args.warmup, args.batches)))
  print('| measure | images/s |\n| --- | --- |')
  for name, rate in rows:
    print(f'| {name} | {rate:.2f} |')
  per_core = rows[1][1]
  print(f'\nCores (workers) one accelerator needs at {args.images_per_accelerator} image(s) '
        f'per step, at {per_core:.2f} images/s per core (decode + transform):')
  for step_time in args.step_times:
    need = args.images_per_accelerator / step_time
    print(f'- {step_time} s/step: {need:.2f} images/s -> {math.ceil(need / per_core)}')


if __name__ == '__main__':
  main()
