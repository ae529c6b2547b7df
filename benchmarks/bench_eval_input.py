"""Evaluation input throughput on Cityscapes-sized images: the padded eval batches alone.

  python benchmarks/bench_eval_input.py [--images 24 --batch 2 --workers 0 2 4 --repeats 2 \
      --root DIR]

Writes synthetic 1024x2048 val scenes (PNG image + labelIds, the Cityscapes layout) to `--root`
(reused when it exists; a temporary folder by default), then times full passes of
pipeline.eval_batches over them, as evaluation reads them (decode, labelId -> trainId,
normalise, pad to the batch's canvas), with no model: images/s of the whole pass (the start-up
of the worker processes included), images/s after the first batch, and the seconds until the
first batch arrives. The passes of each setting alternate with those of the others,
`--repeats` times.
"""

import argparse
import pathlib
import tempfile
import time

from flanet_jax.data import cityscapes, pipeline, synthetic

HEIGHT, WIDTH = 1024, 2048


def dataset(root: pathlib.Path, count: int) -> cityscapes.CityscapesSource:
  if not root.exists():
    synthetic.write_dataset(str(root), num_train=0, num_val=count, height=HEIGHT, width=WIDTH)
  source = cityscapes.CityscapesSource(str(root), 'val')
  if len(source) != count:
    raise ValueError(f'{root} holds {len(source)} val images, not --images {count}')
  return source


def time_pass(batches) -> tuple[float, float, float]:
  """(seconds to the first batch, images/s over the whole pass, images/s after the first
  batch: the rate once the workers run, which a long split approaches)."""
  start = time.perf_counter()
  first, images = None, 0
  for _, indices in batches:
    if first is None:
      first, first_images = time.perf_counter() - start, len(indices)
    images += len(indices)
  seconds = time.perf_counter() - start
  return first, images / seconds, (images - first_images) / (seconds - first)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--images', type=int, default=24, help='val images written')
  parser.add_argument('--batch', type=int, default=2, help='eval batch size (one host)')
  parser.add_argument('--workers', type=int, nargs='+', default=[0, 2, 4])
  parser.add_argument('--repeats', type=int, default=2, help='passes per setting')
  parser.add_argument('--root', type=pathlib.Path, help='dataset folder (written if absent)')
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    source = dataset(args.root or pathlib.Path(tmp) / 'cityscapes', args.images)
    rows = {workers: [] for workers in args.workers}
    for _ in range(args.repeats):
      for workers in args.workers:
        rows[workers].append(time_pass(pipeline.eval_batches(
            source, global_batch=args.batch, process_index=0, process_count=1,
            workers=workers)))
  print(f'{args.images} images of {HEIGHT}x{WIDTH}, batches of {args.batch}; one value per '
        'pass\n')
  print('| workers | images/s, whole pass | images/s after the first batch | first batch, s |\n'
        '| --- | --- | --- | --- |')
  for workers, passes in rows.items():
    columns = [', '.join(f'{values[column]:.2f}' for values in passes) for column in (1, 2, 0)]
    print(f'| {workers} | {" | ".join(columns)} |')


if __name__ == '__main__':
  main()
