"""A trained FLANet on your own images, in a few lines (like mmsegmentation's inferencer).

  config = configs.cityscapes_r101.get_config()
  seg = flanet_jax.Segmenter.from_checkpoint('runs/cityscapes_r101', config)  # or converted
  class_map = seg.predict('photo.jpg')      # (H, W) int32 class indices at the photo's size
  scores = seg.logits(image)                # (H, W, K) float32
  class_maps = seg.predict_batch(paths)     # images of equal size share a batch

Inference follows `config.eval` (whole image or sliding window, scales, flip) through the same
sharded program as evaluation, with every image at its own size: no padding, so each result
is exactly the model's on that image. The program is compiled once per image size (and number
of batch rows); `config.data.eval_batch_size` bounds the rows.
"""

import collections
import os
from typing import Sequence

import jax
import numpy as np
from PIL import Image

from flanet_jax import errors, evaluate, inference, parallel, step, weights
from flanet_jax.data import image_io, pipeline, transforms
from flanet_jax.models import build_model


def as_rgb(image) -> np.ndarray:
  """uint8 (H, W, 3) of a path, a PIL image (any mode) or a uint8 (H, W, 3) array."""
  if isinstance(image, (str, os.PathLike)):
    return image_io.read_rgb(image)
  if isinstance(image, Image.Image):
    return np.asarray(image.convert('RGB'))
  image = np.asarray(image)
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
    raise errors.UserValueError(
        f'expected a uint8 (H, W, 3) RGB array, got {image.dtype} {image.shape}')
  return image


class Segmenter:
  """Class maps and scores of images of any size with `variables` of `config.model`."""

  def __init__(self, config, variables, mesh=None):
    self.mesh = parallel.make_mesh(jax.local_devices()) if mesh is None else mesh
    model = build_model(config.model, config.dtype)
    settings = inference.Settings.from_config(config.eval)
    self.variables = jax.device_put(variables, parallel.replicated(self.mesh))
    self._class_maps = jax.jit(evaluate.sharded_predict(model, settings, self.mesh))
    self._scores = jax.jit(evaluate.sharded_predict(model, settings, self.mesh,
                                                    step.eval_scores))
    # Rows of a batch: a multiple of the devices, each device predicting whole images.
    self.batch_size = pipeline.round_up(config.data.eval_batch_size, self.mesh.size)

  @classmethod
  def from_checkpoint(cls, path, config, mesh=None) -> 'Segmenter':
    """From a training workdir (its checkpoint at `eval.checkpoint_step`, default the latest)
    or a converted-weights directory (scripts/convert_torch_weights.py) of the whole model."""
    mesh = parallel.make_mesh(jax.local_devices()) if mesh is None else mesh
    loaded = weights.from_path(path, config, build_model(config.model, config.dtype), mesh)
    return cls(config, loaded.variables, mesh)

  def predict(self, image) -> np.ndarray:
    """(H, W) int32 class indices of one image (path, PIL image or uint8 RGB array)."""
    return self._run(self._class_maps, [image])[0]

  def logits(self, image) -> np.ndarray:
    """(H, W, K) float32 class scores of one image: the logits of a single pass, else (with
    eval.multi_scale or eval.flip) the sum of the passes' softmax; argmax gives `predict`."""
    return self._run(self._scores, [image])[0]

  def predict_batch(self, images: Sequence) -> list[np.ndarray]:
    """`predict` of each image; images of equal size are predicted together."""
    return self._run(self._class_maps, images)

  def logits_batch(self, images: Sequence) -> list[np.ndarray]:
    """`logits` of each image; images of equal size are predicted together."""
    return self._run(self._scores, images)

  def _run(self, function, images: Sequence) -> list[np.ndarray]:
    arrays = [as_rgb(image) for image in images]
    by_size = collections.defaultdict(list)
    for index, array in enumerate(arrays):
      by_size[array.shape[:2]].append(index)
    results = [None] * len(arrays)
    for size, indices in by_size.items():
      for first in range(0, len(indices), self.batch_size):
        chunk = indices[first:first + self.batch_size]
        outputs = self._batch(function, [arrays[i] for i in chunk], size)
        for index, output in zip(chunk, outputs):
          results[index] = output
    return results

  def _batch(self, function, arrays: list[np.ndarray], size) -> np.ndarray:
    """Outputs of up to batch_size images of one size; rows without an image compute
    something that is dropped."""
    rows = pipeline.round_up(len(arrays), self.mesh.size)
    images = np.zeros((rows, *size, 3), np.float32)
    images[:len(arrays)] = [transforms.normalize(a) for a in arrays]
    sizes = np.tile(np.array(size, np.int32), (rows, 1))
    sharding = parallel.batch_sharding(self.mesh)
    outputs = function(self.variables, jax.device_put(images, sharding),
                       jax.device_put(sizes, sharding))
    return np.asarray(outputs)[:len(arrays)]
