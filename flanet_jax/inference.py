"""Test-time inference: whole image or sliding window, at one or several scales, with flips.

It works on a *canvas*: a batch of images padded (bottom/right) to one shape, with each
image's true (height, width) alongside, so one compiled program serves images of different
sizes. Resizing, flipping and window placement use each image's own size, as mmsegmentation
does per image:
- multi-scale: the image is resized by each ratio (size rounded half up), its logits resized
  back (bilinear, align_corners=False, like F.interpolate), softmax averaged over all passes.
- flip: the image is mirrored within its own width and the logits mirrored back.
- slide (mmseg `slide_inference`): crop_size windows every `stride`, the last one aligned to
  the border, logits averaged where windows overlap.
Known differences: in 'whole' mode a padded image is seen with its padding (exact whenever
the images of a step share their size, as on Cityscapes); a window larger than an image of a
larger canvas covers some padding (mmseg would shrink the window).
Everything is per image, so the evaluator runs it under shard_map, each device on its images.
"""

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from flanet_jax import errors


@dataclasses.dataclass(frozen=True)
class Settings:
  scales: tuple[float, ...] = (1.0,)
  flip: bool = False
  mode: str = 'whole'  # or 'slide'
  crop_size: tuple[int, int] = (768, 768)
  stride: tuple[int, int] = (512, 512)

  @classmethod
  def from_config(cls, eval_config) -> 'Settings':
    if eval_config.mode not in ('whole', 'slide'):
      raise errors.UserValueError(f"eval.mode must be 'whole' or 'slide', got {eval_config.mode!r}")
    scales = tuple(eval_config.scales) if eval_config.multi_scale else (1.0,)
    return cls(scales, eval_config.flip, eval_config.mode, tuple(eval_config.crop_size),
               tuple(eval_config.stride))


def scaled_length(length, scale: float):
  """mmseg's rescaled size: int(length * scale + 0.5); works on ints and int arrays."""
  if isinstance(length, int):
    return int(length * scale + 0.5)
  return jnp.floor(length * scale + 0.5).astype(jnp.int32)


# --- per image: x is (H, W, C) with the content in its top-left `size` ----------------------


def _source_index(out_length: int, in_size, out_size):
  """For output positions 0..out_length-1: lower/upper input index and weight of the upper.

  PyTorch's bilinear rule with align_corners=False; positions past out_size are garbage
  (padding) but stay inside the content.
  """
  position = (jnp.arange(out_length) + 0.5) * (in_size / out_size) - 0.5
  position = jnp.maximum(position, 0.0)
  lower = jnp.minimum(jnp.floor(position).astype(jnp.int32), in_size - 1)
  upper = jnp.minimum(lower + 1, in_size - 1)
  return lower, upper, position - lower


def resize(x, in_size, out_size, out_shape: tuple[int, int]):
  """Bilinearly resizes the top-left `in_size` of x to `out_size`, top-left of `out_shape`."""
  lower, upper, weight = _source_index(out_shape[0], in_size[0], out_size[0])
  weight = weight[:, None, None].astype(x.dtype)
  x = x[lower] * (1 - weight) + x[upper] * weight
  lower, upper, weight = _source_index(out_shape[1], in_size[1], out_size[1])
  weight = weight[None, :, None].astype(x.dtype)
  return x[:, lower] * (1 - weight) + x[:, upper] * weight


def mirror(x, width):
  """Flips the first `width` columns horizontally; the padding stays where it is."""
  column = jnp.arange(x.shape[1])
  return x[:, jnp.where(column < width, width - 1 - column, column)]


# --- sliding window ---------------------------------------------------------------------------


def num_windows(length, crop: int, stride: int):
  """mmseg's grid count along one side; `length` an int or an int array."""
  maximum = max if isinstance(length, int) else jnp.maximum
  return maximum(length - crop + stride - 1, 0) // stride + 1


def window_start(index, length, crop: int, stride: int):
  """Start of window `index` along a side of `length`: the last one ends at the border."""
  return jnp.maximum(jnp.minimum(index * stride + crop, length) - crop, 0)


def slide_logits(apply_fn: Callable, images, sizes, crop_size, stride):
  """Logits (B, H, W, K) averaged over the windows of each image (mmseg slide_inference)."""
  batch, height, width, _ = images.shape
  crop = (min(crop_size[0], height), min(crop_size[1], width))
  grid = (num_windows(height, crop[0], stride[0]), num_windows(width, crop[1], stride[1]))
  take = jax.vmap(lambda image, y, x: jax.lax.dynamic_slice(image, (y, x, 0), (*crop, 3)))
  window_shape = jax.ShapeDtypeStruct((batch, *crop, 3), images.dtype)
  num_classes = jax.eval_shape(apply_fn, window_shape).shape[-1]

  def add(total, part, y, x):
    region = jax.lax.dynamic_slice(total, (y, x, 0), part.shape)
    return jax.lax.dynamic_update_slice(total, region + part, (y, x, 0))

  def body(k, carry):
    total, count = carry
    row, column = k // grid[1], k % grid[1]
    y = window_start(row, sizes[:, 0], crop[0], stride[0])
    x = window_start(column, sizes[:, 1], crop[1], stride[1])
    # Windows past an image's own grid (its canvas is larger than it) add nothing.
    used = ((row < num_windows(sizes[:, 0], crop[0], stride[0])) &
            (column < num_windows(sizes[:, 1], crop[1], stride[1])))
    used = used.astype(jnp.float32)[:, None, None, None]
    logits = apply_fn(take(images, y, x)).astype(jnp.float32) * used
    ones = jnp.broadcast_to(used, (batch, *crop, 1))
    return jax.vmap(add)(total, logits, y, x), jax.vmap(add)(count, ones, y, x)

  total = jnp.zeros((batch, height, width, num_classes), jnp.float32)
  count = jnp.zeros((batch, height, width, 1), jnp.float32)
  total, count = jax.lax.fori_loop(0, grid[0] * grid[1], body, (total, count))
  return total / jnp.maximum(count, 1.0)  # padding no window covers stays 0


# --- the whole procedure ------------------------------------------------------------------------


def _logits(apply_fn, images, sizes, settings: Settings):
  if settings.mode == 'slide':
    return slide_logits(apply_fn, images, sizes, settings.crop_size, settings.stride)
  return apply_fn(images).astype(jnp.float32)


def _one_scale(apply_fn, images, sizes, scale: float, settings: Settings):
  """Logits of every pass at `scale` (the flipped pass batched with the plain one), each
  resized back to the canvas: a list of (B, H, W, K)."""
  batch, height, width, _ = images.shape
  shape = (scaled_length(height, scale), scaled_length(width, scale))
  scaled_sizes = scaled_length(sizes, scale)
  x = images if scale == 1.0 else jax.vmap(resize, (0, 0, 0, None))(images, sizes,
                                                                     scaled_sizes, shape)
  if settings.flip:
    x = jnp.concatenate([x, jax.vmap(mirror)(x, scaled_sizes[:, 1])])
    logits = _logits(apply_fn, x, jnp.concatenate([scaled_sizes, scaled_sizes]), settings)
    passes = [logits[:batch], jax.vmap(mirror)(logits[batch:], scaled_sizes[:, 1])]
  else:
    passes = [_logits(apply_fn, x, scaled_sizes, settings)]
  if scale == 1.0:
    return passes
  back = jax.vmap(resize, (0, 0, 0, None))
  return [back(p, scaled_sizes, sizes, (height, width)) for p in passes]


def scores(apply_fn: Callable, images, sizes, settings: Settings):
  """(B, H, W, K) class scores of a canvas batch: the logits of a single pass, else the sum
  of the passes' softmax (mmseg's test-time augmentation).

  apply_fn: (N, h, w, 3) normalised images -> (N, h, w, K) logits (any fixed-size model).
  sizes: (B, 2) int32 true (height, width) of each image, content top-left.
  """
  single_pass = len(settings.scales) == 1 and not settings.flip
  total = 0.0
  for scale in settings.scales:
    for logits in _one_scale(apply_fn, images, sizes, scale, settings):
      total = total + (logits if single_pass else jax.nn.softmax(logits, axis=-1))
  return total


def predict(apply_fn: Callable, images, sizes, settings: Settings):
  """Class maps (B, H, W) int32 of a canvas batch (see `scores`)."""
  return jnp.argmax(scores(apply_fn, images, sizes, settings), axis=-1).astype(jnp.int32)
