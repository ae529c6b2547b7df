"""`--mode predict`: class maps of your own images (a file, a folder or a glob).

  workdir/predict/<weights>/classes/<image name>.png   class indices (uint8, 0..K-1)
  workdir/predict/<weights>/colour/<image name>.png    the classes in the dataset's colours
  workdir/predict/<weights>/overlay/<image name>.png   those colours over the photo
  workdir/predict/<weights>/legend.png                 class names and colours

<weights> is `step_<N>` (the workdir's checkpoint) or `init_from_<name>` (converted weights,
used when the workdir has none), or `predict.output_name`. The folder is new (`.2`, `.3`, ...
if taken) and appears only when complete. Every input is opened and checked (header and, for
PNG, every chunk's checksum) before the model is loaded; an image that fails to decode later
stops the run, and its partial folder is removed. Inference follows `config.eval`.
"""

import glob
import os
import pathlib
import shutil

import grain
import jax
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from tqdm import tqdm

from flanet_jax import data, errors, parallel, weights
from flanet_jax.data import image_io, pipeline
from flanet_jax.evaluate import colourise, new_output_dir
from flanet_jax.models import build_model
from flanet_jax.segmenter import Segmenter

IMAGE_SUFFIXES = {suffix for suffix, image_format in Image.registered_extensions().items()
                  if image_format in Image.OPEN}


def input_paths(pattern: str) -> list[pathlib.Path]:
  """The images `predict.input` names: a file, the images in a folder (and its subfolders),
  or the files a glob matches ('**' spans folders)."""
  if not pattern:
    raise errors.UserValueError('predict.input is empty; set '
                                '--config.predict.input=FILE, FOLDER or GLOB')
  path = pathlib.Path(pattern).expanduser()
  if path.is_dir():
    paths = sorted(p for p in path.rglob('*') if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
  elif path.is_file():
    paths = [path]
  elif glob.has_magic(pattern):
    paths = sorted(pathlib.Path(p) for p in glob.glob(str(path), recursive=True)
                   if os.path.isfile(p))
  else:
    raise errors.UserFileNotFoundError(f'predict.input={pattern!r}: no such file or folder')
  if not paths:
    raise errors.UserFileNotFoundError(f'predict.input={pattern!r} matches no image')
  return paths


def checked_size(path: pathlib.Path) -> tuple[int, int]:
  """(height, width) of an image that opens and verifies; else ValueError naming it."""
  try:
    with Image.open(path) as image:
      size = image.height, image.width
      image.verify()
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
    raise errors.UserValueError(f'Cannot read image {path}: {error}') from error
  return size


def output_names(paths: list[pathlib.Path]) -> list[pathlib.Path]:
  """'<relative path>.png' names, relative to the inputs' common folder; the original suffix
  is kept (a.jpg.png) when dropping it would give two images one name."""
  parents = [p.resolve().parent for p in paths]
  common = pathlib.Path(os.path.commonpath(parents))
  relative = [p.resolve().relative_to(common) for p in paths]
  names = [r.with_suffix('.png') for r in relative]
  if len(set(names)) < len(names):
    names = [r.with_name(r.name + '.png') for r in relative]
  return names


def overlay(image: np.ndarray, colours: np.ndarray, opacity: float) -> np.ndarray:
  blend = (1 - opacity) * image.astype(np.float32) + opacity * colours.astype(np.float32)
  return np.round(blend).astype(np.uint8)


def legend(class_names, palette: np.ndarray, rows_per_column: int = 25) -> Image.Image:
  """A swatch and the name of each class, in columns of `rows_per_column`."""
  font = ImageFont.load_default(size=14)
  row, swatch, gap = 20, 28, 8
  column = swatch + gap + max(int(font.getlength(n)) for n in class_names) + 2 * gap
  columns = -(-len(class_names) // rows_per_column)
  rows = min(len(class_names), rows_per_column)
  image = Image.new('RGB', (columns * column + gap, rows * row + 2 * gap), 'white')
  draw = ImageDraw.Draw(image)
  for i, (name, colour) in enumerate(zip(class_names, palette)):
    x, y = gap + (i // rows_per_column) * column, gap + (i % rows_per_column) * row
    draw.rectangle([x, y + 2, x + swatch, y + row - 3], fill=tuple(int(c) for c in colour),
                   outline='black')
    draw.text((x + swatch + gap, y + 2), name, fill='black', font=font)
  return image


def _decoded(paths: list[pathlib.Path], workers: int):
  """Iterator over the images (uint8 RGB) in order, decoded by grain (in `workers` processes)."""
  dataset = grain.MapDataset.source(paths).map(image_io.read_rgb)
  return pipeline.iterator(dataset, workers)


def _write(out_dir: pathlib.Path, name: pathlib.Path, image, class_map, palette, opacity):
  colours = colourise(class_map, palette)
  for sub, array in (('classes', class_map.astype(np.uint8)), ('colour', colours),
                     ('overlay', overlay(image, colours, opacity))):
    (out_dir / sub / name).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(out_dir / sub / name)


def _predict_all(segmenter: Segmenter, paths, sizes, names, out_dir, config, info):
  """Images of equal size are read one after another and predicted together."""
  order = sorted(range(len(paths)), key=lambda i: sizes[i])
  images = _decoded([paths[i] for i in order], config.data.workers)
  legend(info.class_names, info.palette).save(out_dir / 'legend.png')
  pending = []  # (input index, image) of one size, fewer than a batch
  progress = tqdm(total=len(paths), desc='predict', unit='image', dynamic_ncols=True)

  def flush():
    class_maps = segmenter.predict_batch([image for _, image in pending])
    for (i, image), class_map in zip(pending, class_maps):
      _write(out_dir, names[i], image, class_map, info.palette, config.predict.overlay_opacity)
    progress.update(len(pending))
    pending.clear()

  try:
    for i in order:
      image = next(images)
      if pending and (pending[0][1].shape != image.shape or len(pending) == segmenter.batch_size):
        flush()
      pending.append((i, image))
    flush()
  finally:
    images.close()  # stops the decoding workers
    progress.close()


def predict(config, workdir) -> pathlib.Path:
  """Predicts the images of `predict.input`; returns the new output folder."""
  if jax.process_count() > 1:
    raise errors.UserValueError('--mode predict runs in a single process; unset distributed.*')
  if not 0 <= config.predict.overlay_opacity <= 1:
    raise errors.UserValueError(
        f'predict.overlay_opacity={config.predict.overlay_opacity} must be in [0, 1]')
  info = data.dataset_info(config.data.name)  # the class names and colours
  data.check_num_classes(config)
  paths = input_paths(config.predict.input)
  sizes = [checked_size(p) for p in paths]  # every input, before anything is loaded or written
  names = output_names(paths)

  workdir = pathlib.Path(workdir)
  mesh = parallel.make_mesh(jax.local_devices())
  loaded = weights.load(config, workdir, build_model(config.model, config.dtype), mesh)
  segmenter = Segmenter(config, loaded.variables, mesh)
  out_dir = new_output_dir(workdir / 'predict' / (config.predict.output_name or loaded.name))
  staging = out_dir.with_name(out_dir.name + '.partial')
  staging.mkdir(parents=True)  # fails, leaving it alone, if an interrupted run left one
  try:
    _predict_all(segmenter, paths, sizes, names, staging, config, info)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  staging.rename(out_dir)
  print(f'Predicted {len(paths)} images with {loaded} into {out_dir}')
  return out_dir
