"""Evaluation: mIoU over a whole split, and `--mode eval` (restore -> table -> PNGs)."""

import functools
import json
import pathlib
from typing import Iterator

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import PartitionSpec as P
from PIL import Image
from tqdm import tqdm

from flanet_jax import data, errors, inference, metrics, parallel, step, weights
from flanet_jax.data import pipeline
from flanet_jax.models import build_model


def sharded_predict(model, settings: inference.Settings, mesh, per_batch=step.eval_step):
  """(variables, images, sizes) -> class maps (or what `per_batch` gives, e.g.
  `step.eval_scores`), each device predicting its own images.

  Inference is per image (BatchNorm uses its running statistics), so shard_map keeps every
  image on its device, with no communication.
  """
  predict = functools.partial(per_batch, model=model, settings=settings)
  batch = P(parallel.DATA_AXIS)
  # check_vma off: loop carries start replicated and become per-device; nothing is reduced.
  return jax.shard_map(predict, mesh=mesh, in_specs=(P(), batch, batch), out_specs=batch,
                       check_vma=False)


class Evaluator:
  """Runs inference over a split (default `data.eval_split`); every image counted once."""

  def __init__(self, config, model, mesh, split: str | None = None):
    data.check_num_classes(config)
    self.config, self.mesh = config, mesh
    self.info = data.dataset_info(config.data.name)
    self.split = split or config.data.eval_split
    self.source = data.source(config.data, self.split)
    self.num_classes = config.model.num_classes
    parallel.check_batch_size('data.eval_batch_size', config.data.eval_batch_size)
    settings = inference.Settings.from_config(config.eval)
    self._predict = jax.jit(sharded_predict(model, settings, mesh))
    self._confusion = jax.jit(
        functools.partial(metrics.confusion_matrix, num_classes=self.num_classes),
        out_shardings=parallel.replicated(mesh))

  def _batches(self, variables) -> Iterator[tuple[dict, list[int], jax.Array]]:
    """(global batch, this host's source indices, global class maps) per step."""
    global_batch = self.config.data.eval_batch_size
    batches = pipeline.eval_batches(self.source, global_batch=global_batch,
                                    process_index=jax.process_index(),
                                    process_count=jax.process_count(),
                                    size_divisor=self.config.eval.size_divisor,
                                    workers=self.config.data.workers)
    # Counts the images of the whole split (every host's), on process 0 only.
    with tqdm(total=len(self.source), desc=f'eval {self.split}', unit='img', leave=False,
              disable=jax.process_index() != 0, dynamic_ncols=True) as progress:
      for host_batch, indices in batches:
        batch = parallel.to_global(host_batch, self.mesh)
        yield batch, indices, self._predict(variables, batch['image'], batch['size'])
        progress.update(min(global_batch, progress.total - progress.n))

  def _host_local(self, class_maps: jax.Array, count: int) -> np.ndarray:
    local = multihost_utils.global_array_to_host_local_array(
        class_maps, self.mesh, P(parallel.DATA_AXIS))
    return np.asarray(local)[:count]

  def predictions(self, variables) -> Iterator[tuple[list[int], np.ndarray]]:
    """(source indices, class maps on the padded canvas) of this host's images, per step."""
    for _, indices, class_maps in self._batches(variables):
      yield indices, self._host_local(class_maps, len(indices))

  def run(self, variables, on_predictions=None) -> dict:
    """Scores of `variables`; `on_predictions(source_indices, class_maps)` sees this host's."""
    if not self.source.labelled:
      raise errors.UserValueError(f'Split {self.split!r} has no labels to score; use --mode export')
    confusion = np.zeros((self.num_classes, self.num_classes), np.int64)
    for batch, indices, class_maps in self._batches(variables):
      confusion += np.asarray(self._confusion(class_maps, batch['label']))
      if on_predictions is not None and indices:
        on_predictions(indices, self._host_local(class_maps, len(indices)))
    return metrics.scores(confusion)


def colourise(class_map: np.ndarray, palette: np.ndarray) -> np.ndarray:
  """RGB image of a class map; classes outside the palette (e.g. 255) are black."""
  lookup = np.zeros((256, 3), np.uint8)
  lookup[:len(palette)] = palette
  return lookup[class_map.astype(np.uint8)]


def new_output_dir(base: pathlib.Path) -> pathlib.Path:
  """`base`, or base.2, .3, ... if taken, so earlier results are never overwritten."""
  path, suffix = base, 1
  while path.exists():
    suffix += 1
    path = base.with_name(f'{base.name}.{suffix}')
  return path


def evaluate(config, workdir) -> dict:
  """Scores the eval split with `weights.load`'s variables (a checkpoint, else `init_from`);
  writes the table, results.json and prediction PNGs."""
  workdir = pathlib.Path(workdir)
  mesh = parallel.make_mesh()
  model = build_model(config.model, config.dtype)
  loaded = weights.load(config, workdir, model, mesh)
  evaluator = Evaluator(config, model, mesh)
  out_dir = new_output_dir(workdir / 'eval' / loaded.name)
  (out_dir / 'predictions').mkdir(parents=True)

  def save_pngs(indices, class_maps):
    for index, class_map in zip(indices, class_maps):
      if index < config.eval.num_prediction_images:
        height, width = evaluator.source.image_size(index)
        image = colourise(class_map[:height, :width], evaluator.info.palette)
        Image.fromarray(image).save(out_dir / 'predictions' / f'{evaluator.source.name(index)}.png')

  result = evaluator.run(loaded.variables, save_pngs)
  table = metrics.format_table(result, evaluator.info.class_names)
  if jax.process_index() == 0:
    print(f'Evaluated {loaded}, split {config.data.eval_split!r}:\n{table}')
    (out_dir / 'miou_table.txt').write_text(table + '\n')
    settings = inference.Settings.from_config(config.eval)
    summary = {**loaded.origin(), 'split': config.data.eval_split, 'miou': result['miou'],
               'inference': {'mode': settings.mode, 'scales': settings.scales,
                             'flip': settings.flip, 'crop_size': settings.crop_size,
                             'stride': settings.stride},
               'pixel_accuracy': result['pixel_accuracy'], 'num_pixels': result['num_pixels'],
               'confusion': result['confusion'].tolist(),
               'iou': dict(zip(evaluator.info.class_names,
                               [None if np.isnan(v) else float(v) for v in result['iou']]))}
    (out_dir / 'results.json').write_text(json.dumps(summary, indent=2) + '\n')
  return result
