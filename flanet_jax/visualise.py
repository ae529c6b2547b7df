"""`--mode visualise`: what the attention block does (Figure 6 of the FLANet paper).

For the first visualise.num_images images of data.eval_split, one PNG each:
  image | ground truth | prediction | the attention block's output, averaged over channels
in workdir/visualise/step_<N>/<image name>.png (a new folder each time). The block's output is
read from the model itself (Flax `capture_intermediates` on the submodule named 'attention'),
so any `model.attention` can be shown, e.g. FLA beside Channel NL. The prediction comes from
the same single whole-image pass at the image's own size (no multi-scale, flip or windows),
so the map and the classes belong together.
"""

import functools
import pathlib

import jax
import jax.numpy as jnp
import matplotlib
from tqdm import tqdm

from flanet_jax import data, errors, evaluate, parallel, weights
from flanet_jax.data.transforms import normalize
from flanet_jax.models import build_model

matplotlib.use('Agg')  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

ATTENTION_MODULE = 'attention'  # FLANet's name for its block (models/flanet.py)


def _is_attention_block(module, method_name: str) -> bool:
  return module.path == (ATTENTION_MODULE,) and method_name == '__call__'


@functools.partial(jax.jit, static_argnums=0)
def prediction_and_attention(model, variables, image):
  """(class map (B, H, W), channel mean of the attention block's output (B, h, w)) of a batch
  of normalised images (B, H, W, 3), in one inference pass."""
  (logits, _, _), state = model.apply(variables, image, train=False,
                                      capture_intermediates=_is_attention_block)
  (attended,) = state['intermediates'][ATTENTION_MODULE]['__call__']
  return jnp.argmax(logits, axis=-1), attended.astype(jnp.float32).mean(axis=-1)


def draw_panel(path: pathlib.Path, image, label, class_map, heatmap, palette, attention: str):
  """Writes image | ground truth | prediction | heatmap side by side (no ground truth panel
  for an unlabelled image). The heatmap, at feature resolution, is stretched over the image."""
  height, width = image.shape[:2]
  panels = [('image', image)]
  if label is not None:
    panels.append(('ground truth', evaluate.colourise(label, palette)))
  panels.append(('prediction', evaluate.colourise(class_map, palette)))
  figure, axes = plt.subplots(1, len(panels) + 1, figsize=(3.2 * (len(panels) + 1),
                                                           3.2 * height / width + 0.5))
  for axis, (title, picture) in zip(axes, panels):
    axis.imshow(picture)
    axis.set_title(title)
  shown = axes[-1].imshow(heatmap, cmap='jet', extent=(0, width, height, 0),
                         interpolation='bilinear')
  figure.colorbar(shown, ax=axes[-1], fraction=0.046, pad=0.02)
  axes[-1].set_title(f'{attention} output\n(channel mean)')
  for axis in axes:
    axis.set_axis_off()
  figure.tight_layout()
  figure.savefig(path)
  plt.close(figure)


def visualise(config, workdir) -> pathlib.Path | None:
  """Writes the panels; returns their folder (None on processes other than 0)."""
  if config.model.attention == 'none':
    raise errors.UserValueError("--mode visualise shows the attention block's output, but "
                                "model.attention='none' has no block")
  if config.visualise.num_images < 1:
    raise errors.UserValueError(
        f'visualise.num_images must be >= 1, got {config.visualise.num_images}')
  data.check_num_classes(config)
  workdir = pathlib.Path(workdir)
  info = data.dataset_info(config.data.name)
  source = data.source(config.data, config.data.eval_split)
  model = build_model(config.model, config.dtype)
  loaded = weights.load(config, workdir, model, parallel.make_mesh())
  if jax.process_index() != 0:
    return None
  # One image at a time on one device (each at its own size): this process's copy of the
  # replicated variables.
  variables = jax.tree.map(lambda array: array.addressable_data(0), loaded.variables)
  out_dir = evaluate.new_output_dir(workdir / 'visualise' / loaded.name)
  out_dir.mkdir(parents=True)
  count = min(config.visualise.num_images, len(source))
  for index in tqdm(range(count), desc='visualise', dynamic_ncols=True):
    example = source[index]
    class_map, heatmap = jax.device_get(prediction_and_attention(
        model, variables, normalize(example['image'])[None]))
    draw_panel(out_dir / f'{source.name(index)}.png', example['image'], example.get('label'),
               class_map[0], heatmap[0], info.palette, config.model.attention)
  print(f'Wrote {count} panels to {out_dir}')
  return out_dir
