"""Inference against independent references: PyTorch resizing and an mmseg-style NumPy loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from configs import default
from flanet_jax import inference
from flanet_jax.inference import Settings

KERNEL = np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32)
CONTEXT = np.random.default_rng(1).normal(size=(3, 5)).astype(np.float32)


def context_model(x, xp=jnp):
  """Toy per-sample model whose logits depend on the whole input (like attention): a
  per-pixel map, the input's mean and a horizontal difference (not flip-equivariant).
  xp=np runs it in NumPy for the references (no compilation per shape)."""
  gradient = xp.pad(x[:, :, 1:] - x[:, :, :-1], ((0, 0), (0, 0), (0, 1), (0, 0)))
  return (x @ KERNEL + x.mean(axis=(1, 2), keepdims=True) @ CONTEXT
          + 0.5 * gradient @ KERNEL[::-1])


def symmetric_model(x):
  """Flip-equivariant: per-pixel map plus the (flip-invariant) input mean."""
  return x @ KERNEL + x.mean(axis=(1, 2), keepdims=True) @ CONTEXT


# --- independent references, one unpadded image at a time -------------------------------------


def torch_resize(x: np.ndarray, size) -> np.ndarray:
  """(H, W, C) -> size, F.interpolate(bilinear, align_corners=False), as mmseg resizes."""
  t = torch.from_numpy(np.array(x, np.float32)).permute(2, 0, 1)[None]
  return F.interpolate(t, size=tuple(size), mode='bilinear', align_corners=False)[0].permute(
      1, 2, 0).numpy()


def numpy_context_model(x):
  return context_model(np.asarray(x), xp=np)


def numpy_slide(model, image: np.ndarray, crop, stride) -> np.ndarray:
  """mmseg's slide_inference, written out with loops."""
  height, width = image.shape[:2]
  rows = max(height - crop[0] + stride[0] - 1, 0) // stride[0] + 1
  columns = max(width - crop[1] + stride[1] - 1, 0) // stride[1] + 1
  total, count = None, np.zeros((height, width, 1))
  for r in range(rows):
    for c in range(columns):
      y2, x2 = min(r * stride[0] + crop[0], height), min(c * stride[1] + crop[1], width)
      y1, x1 = max(y2 - crop[0], 0), max(x2 - crop[1], 0)
      logits = np.asarray(model(image[None, y1:y2, x1:x2]))[0]
      if total is None:
        total = np.zeros((height, width, logits.shape[-1]))
      total[y1:y2, x1:x2] += logits
      count[y1:y2, x1:x2] += 1
  return total / count


def reference_scores(model, image: np.ndarray, settings: Settings) -> np.ndarray:
  height, width = image.shape[:2]
  passes = []
  for scale in settings.scales:
    size = (int(height * scale + 0.5), int(width * scale + 0.5))
    scaled = torch_resize(image, size)
    for flipped in ([False, True] if settings.flip else [False]):
      x = scaled[:, ::-1] if flipped else scaled
      if settings.mode == 'slide':
        logits = numpy_slide(model, x, settings.crop_size, settings.stride)
      else:
        logits = np.asarray(model(x[None]))[0]
      logits = logits[:, ::-1] if flipped else logits
      passes.append(torch_resize(logits, (height, width)))
  if len(passes) == 1:
    return passes[0]
  softmax = lambda p: np.exp(p - p.max(-1, keepdims=True)) / np.exp(
      p - p.max(-1, keepdims=True)).sum(-1, keepdims=True)
  return sum(softmax(p) for p in passes)


def canvas(images):
  """Pads images top-left onto one canvas, with garbage (not zeros) in the padding."""
  height = max(i.shape[0] for i in images)
  width = max(i.shape[1] for i in images)
  batch = np.random.default_rng(9).normal(size=(len(images), height, width, 3)).astype(np.float32)
  for k, image in enumerate(images):
    batch[k, :image.shape[0], :image.shape[1]] = image
  sizes = np.array([i.shape[:2] for i in images], np.int32)
  return jnp.asarray(batch), jnp.asarray(sizes)


def random_images(shapes, seed=2):
  rng = np.random.default_rng(seed)
  return [rng.normal(size=(*shape, 3)).astype(np.float32) for shape in shapes]


# --- tests ----------------------------------------------------------------------------------------

scores = jax.jit(inference.scores, static_argnums=(0, 3))  # one compilation, not op by op
predict = jax.jit(inference.predict, static_argnums=(0, 3))


@pytest.mark.parametrize('in_size,out_size', [((7, 9), (7, 9)), ((7, 9), (12, 16)),
                                              ((12, 16), (6, 9)), ((10, 5), (4, 11))])
def test_resize_matches_torch_bilinear_and_ignores_the_padding(in_size, out_size):
  (image,) = random_images([in_size])
  padded, sizes = canvas([image, np.zeros((13, 17, 3), np.float32)])
  out = inference.resize(padded[0], sizes[0], jnp.array(out_size), (16, 17))
  np.testing.assert_allclose(out[:out_size[0], :out_size[1]], torch_resize(image, out_size),
                             atol=1e-5)


def test_mirror_flips_only_the_content():
  x = jnp.arange(2 * 6 * 1).reshape(2, 6, 1)
  np.testing.assert_array_equal(inference.mirror(x, 4)[0, :, 0], [3, 2, 1, 0, 4, 5])


@pytest.mark.parametrize('shapes', [[(20, 24)], [(20, 24), (14, 30), (20, 30)]])
def test_slide_with_one_window_covering_the_image_equals_whole(shapes):
  """One image: the window is the image. Several: the window is the whole canvas, which
  whole mode sees too (padding included)."""
  images, sizes = canvas(random_images(shapes))
  whole = scores(context_model, images, sizes, Settings(mode='whole'))
  for crop in [images.shape[1:3], (64, 64)]:  # the canvas exactly, or larger (clamped to it)
    slide = scores(context_model, images, sizes,
                             Settings(mode='slide', crop_size=crop, stride=(7, 7)))
    for k, (h, w) in enumerate(np.asarray(sizes)):
      np.testing.assert_allclose(slide[k, :h, :w], whole[k, :h, :w], atol=1e-5)
  if len(shapes) == 1:
    np.testing.assert_allclose(whole[0], context_model(random_images(shapes)[0][None])[0],
                               atol=1e-5)


def test_overlapping_windows_match_the_numpy_loop_per_image_of_a_mixed_batch():
  shapes = [(23, 31), (16, 40), (30, 17)]  # grids 3x4, 2x5, 4x2 with crop 10x12, stride 7x9
  settings = Settings(mode='slide', crop_size=(10, 12), stride=(7, 9))
  images = random_images(shapes)
  got = scores(context_model, *canvas(images), settings)
  for k, image in enumerate(images):
    want = numpy_slide(numpy_context_model, image, settings.crop_size, settings.stride)
    np.testing.assert_allclose(got[k, :shapes[k][0], :shapes[k][1]], want, atol=1e-5)
  # Not trivially equal to whole-image inference: the windows change the context.
  whole = numpy_context_model(images[0][None])[0]
  assert np.abs(whole - np.asarray(got[0, :23, :31])).max() > 1e-2


@pytest.mark.parametrize('mode', ['whole', 'slide'])
def test_multi_scale_and_flip_match_the_reference(mode):
  shapes = [(24, 32), (20, 28)] if mode == 'slide' else [(24, 32), (24, 32)]
  settings = Settings(scales=(0.5, 0.75, 1.0, 1.75), flip=True, mode=mode, crop_size=(9, 11),
                      stride=(6, 7))
  images = random_images(shapes)
  got = scores(context_model, *canvas(images), settings)
  for k, image in enumerate(images):
    want = reference_scores(numpy_context_model, image, settings)
    np.testing.assert_allclose(got[k, :shapes[k][0], :shapes[k][1]], want, atol=1e-4)
  assert got.shape == (2, 24, 32, 5)


@pytest.mark.parametrize('settings', [
    Settings(scales=(0.75, 1.25), mode='whole'),
    # Slide: sizes whose window grid is its own mirror image, (L - crop) % stride == 0.
    Settings(mode='slide', crop_size=(8, 10), stride=(5, 8))])
def test_flip_changes_nothing_for_a_flip_equivariant_model(settings):
  images, sizes = canvas(random_images([(18, 26), (13, 18)]))
  flipped = Settings(settings.scales, True, settings.mode, settings.crop_size, settings.stride)

  def mean_probabilities(model, settings):
    total = scores(model, images, sizes, settings)
    passes = len(settings.scales) * (2 if settings.flip else 1)
    return jax.nn.softmax(total, axis=-1) if passes == 1 else total / passes

  np.testing.assert_allclose(mean_probabilities(symmetric_model, flipped),
                             mean_probabilities(symmetric_model, settings), atol=1e-6)
  # ... while for a model that tells left from right, the flipped pass is a different one.
  assert not np.allclose(mean_probabilities(context_model, flipped),
                         mean_probabilities(context_model, settings), atol=1e-3)


def test_one_pass_gives_its_logits_and_single_scale_is_the_eval_default():
  """One pass (a single scale, no flip) scores with its logits, resized back to the image,
  not a softmax; `eval.multi_scale=False` is one pass at scale 1 whatever eval.scales holds."""
  eval_config = default.get_config().eval
  assert len(eval_config.scales) > 1 and not eval_config.multi_scale
  single = Settings.from_config(eval_config)
  assert (single.scales, single.flip) == ((1.0,), False)
  eval_config.multi_scale = True
  assert Settings.from_config(eval_config).scales == tuple(eval_config.scales)

  images = random_images([(18, 26), (18, 26)])
  for settings in (single, Settings(scales=(0.75,))):  # 18 x 26 -> 14 x 20 -> 18 x 26
    got = scores(context_model, *canvas(images), settings)
    for k, image in enumerate(images):
      want = reference_scores(numpy_context_model, image, settings)
      np.testing.assert_allclose(got[k], want, atol=1e-4)
  np.testing.assert_array_equal(predict(context_model, *canvas(images), single),
                                np.argmax(numpy_context_model(np.stack(images)), axis=-1))
  # With flip on a flip-equivariant model, the two passes agree: same classes again.
  images, sizes = canvas(images)
  symmetric = predict(symmetric_model, images, sizes, Settings(flip=True))
  np.testing.assert_array_equal(symmetric, jnp.argmax(symmetric_model(images), axis=-1))
