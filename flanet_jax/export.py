"""`--mode export`: predictions of a split as PNGs for a benchmark server.

  workdir/export/<split>_step_<N>/labelIds/<image name>.png   the dataset's submission ids
  workdir/export/<split>_step_<N>/colour/<image name>.png     colourised, to look at

(`<split>_init_from_<name>` for converted weights, used when the workdir has no checkpoint.)

Cityscapes: labelIds, one file per image named like the image (`*_leftImg8bit.png`), which
is what the test server and `cityscapesscripts` match. ADE20K: 1..150. VOC: class indices.
Inference follows `config.eval` (e.g. multi-scale + flip). The folder is new (`.2`, `.3`, ...
if taken) and appears only when complete; a failure leaves nothing behind.
"""

import pathlib
import shutil

import jax
from jax.experimental import multihost_utils
from PIL import Image

from flanet_jax import parallel, weights
from flanet_jax.evaluate import Evaluator, colourise, new_output_dir
from flanet_jax.models import build_model


def _write(out_dir: pathlib.Path, file_name: str, class_map, info) -> None:
  Image.fromarray(info.submission_ids[class_map]).save(out_dir / 'labelIds' / file_name)
  Image.fromarray(colourise(class_map, info.palette)).save(out_dir / 'colour' / file_name)


def write_predictions(evaluator: Evaluator, variables, out_dir: pathlib.Path) -> None:
  """This host's predictions, cropped to each image, into out_dir/labelIds and out_dir/colour."""
  for sub in ('labelIds', 'colour'):
    (out_dir / sub).mkdir(parents=True, exist_ok=True)
  for indices, class_maps in evaluator.predictions(variables):
    for index, class_map in zip(indices, class_maps):
      height, width = evaluator.source.image_size(index)
      file_name = evaluator.source.samples[index].image.with_suffix('.png').name
      _write(out_dir, file_name, class_map[:height, :width], evaluator.info)


def export(config, workdir) -> pathlib.Path:
  """Predicts `config.eval.export_split` with the configured checkpoint (or `init_from`);
  returns the folder."""
  workdir = pathlib.Path(workdir)
  mesh = parallel.make_mesh()
  model = build_model(config.model, config.dtype)
  evaluator = Evaluator(config, model, mesh, split=config.eval.export_split)  # data first
  loaded = weights.load(config, workdir, model, mesh)
  out_dir = new_output_dir(workdir / 'export' / f'{evaluator.split}_{loaded.name}')
  staging = out_dir.with_name(out_dir.name + '.partial')
  try:
    write_predictions(evaluator, loaded.variables, staging)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  multihost_utils.sync_global_devices('export written')  # every host's files are in place
  if jax.process_index() == 0:
    staging.rename(out_dir)
    print(f'Exported {len(evaluator.source)} predictions of split {evaluator.split!r} '
          f'({loaded}) to {out_dir}')
  return out_dir
