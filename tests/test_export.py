"""Test-server export (Cityscapes, ADE20K, VOC), and our mIoU against the official Cityscapes
evaluator."""

import glob
import pathlib
import re
import shutil

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from flanet_jax import checkpoint, export, parallel, train
from flanet_jax.data import ade20k, cityscapes, pipeline, synthetic, transforms, voc
from flanet_jax.evaluate import Evaluator
from flanet_jax.models import build_model
from tests import layouts, support


class ColourModel:
  """Stands in for FLANet: classifies pixels by their distance to a colour per class (the
  synthetic scenes' colours, a decoy sidewalk close to road, random ones for the rest), with
  a pixel-dependent wobble. Mostly right, with true and false positives and negatives."""

  def __init__(self):
    rng = np.random.default_rng(5)
    centres = rng.uniform(0, 255, (19, 3)).astype(np.float32)
    for label_id, colour in synthetic._COLOURS.items():
      train_id = cityscapes.LABEL_TABLE[label_id]
      if train_id < 19:
        centres[train_id] = colour
    centres[cityscapes.LABEL_TABLE[8]] = (100, 100, 112)  # labelId 8: sidewalk
    self.centres = centres
    self.wobble = rng.normal(size=(3, 19)).astype(np.float32)

  def apply(self, variables, images, train=False):
    rgb = images * transforms.IMAGENET_STD + transforms.IMAGENET_MEAN
    distance = jnp.sqrt(((rgb[..., None, :] - self.centres) ** 2).sum(-1))
    logits = 20 * jnp.sin(rgb @ self.wobble) - distance
    return logits, logits, logits


def official_scores(gt_root: pathlib.Path, prediction_dir: pathlib.Path, monkeypatch) -> dict:
  """cityscapesscripts' evalPixelLevelSemanticLabeling on the val split, via its Python API."""
  monkeypatch.setenv('CITYSCAPES_DATASET', str(gt_root))
  monkeypatch.setenv('CITYSCAPES_RESULTS', str(prediction_dir))
  from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as official
  for name, value in {'predictionPath': str(prediction_dir), 'predictionWalk': None,
                      'evalInstLevelScore': False, 'JSONOutput': False, 'quiet': True}.items():
    monkeypatch.setattr(official.args, name, value)
  ground_truth = sorted(glob.glob(str(gt_root / 'gtFine' / 'val' / '*' / '*_gtFine_labelIds.png')))
  predictions = [official.getPrediction(official.args, gt) for gt in ground_truth]
  return official.evaluateImgLists(predictions, ground_truth, official.args)


def test_our_miou_equals_the_official_cityscapes_evaluator(tiny_dataset, tmp_path, monkeypatch):
  config = support.tiny_config(tiny_dataset)
  mesh = parallel.make_mesh()
  evaluator = Evaluator(config, ColourModel(), mesh)
  ours = evaluator.run({})
  export.write_predictions(evaluator, {}, tmp_path / 'predictions')
  theirs = official_scores(tiny_dataset, tmp_path / 'predictions' / 'labelIds', monkeypatch)

  for train_id, name in enumerate(cityscapes.CLASS_NAMES):
    if np.isnan(ours['iou'][train_id]):
      assert np.isnan(theirs['classScores'][name]), name
    else:
      assert ours['iou'][train_id] == pytest.approx(theirs['classScores'][name], abs=1e-12), name
  assert ours['miou'] == pytest.approx(theirs['averageScoreClasses'], abs=1e-12)
  # A meaningful comparison: six classes found, imperfectly, and falsely predicted ones.
  confusion = ours['confusion']
  assert (np.diag(confusion) > 0).sum() == 6 and (~np.isnan(ours['iou'])).sum() >= 15
  assert ((confusion.sum(1) - np.diag(confusion)) > 0).sum() >= 4  # misses
  assert 0.2 < ours['miou'] < 0.6
  assert ours['iou'][cityscapes.CLASS_NAMES.index('sidewalk')] == 0.0


def _save_checkpoint(config, workdir):
  model = build_model(config.model)
  state, _, _ = train.initial_state(config, model, parallel.make_mesh())
  mngr = checkpoint.manager(workdir, keep=1)
  checkpoint.save(mngr, 7, state, pipeline.iterator(train.train_dataset(config), 0))
  mngr.wait_until_finished()


def test_export_writes_server_pngs_into_a_new_folder_each_time(tiny_dataset, tmp_path):
  root = tmp_path / 'cityscapes'
  shutil.copytree(tiny_dataset, root)
  shutil.copytree(root / 'leftImg8bit' / 'val', root / 'leftImg8bit' / 'test')  # unlabelled
  config = support.tiny_config(root)
  workdir = tmp_path / 'work'
  _save_checkpoint(config, workdir)

  out = export.export(config, workdir)
  assert out == workdir / 'export' / 'test_step_7'
  images = sorted((root / 'leftImg8bit' / 'test').glob('*/*_leftImg8bit.png'))
  label_ids = sorted((out / 'labelIds').iterdir())
  assert [p.name for p in label_ids] == sorted(p.name for p in images)  # server naming
  for path in label_ids:
    prediction = np.asarray(Image.open(path))
    assert prediction.shape == (40, 72) and prediction.dtype == np.uint8
    assert set(np.unique(prediction)) <= set(cityscapes.TRAIN_ID_TO_LABEL_ID.tolist())
    colour = np.asarray(Image.open(out / 'colour' / path.name))
    train_ids = np.argmax(prediction[..., None] == cityscapes.TRAIN_ID_TO_LABEL_ID, axis=-1)
    np.testing.assert_array_equal(colour, cityscapes.PALETTE[train_ids])

  assert export.export(config, workdir) == workdir / 'export' / 'test_step_7.2'
  first = {p.name: p.read_bytes() for p in label_ids}
  assert first == {p.name: p.read_bytes() for p in (out / 'labelIds').iterdir()}  # untouched

  broken = images[3]
  broken.write_bytes(broken.read_bytes()[:200])
  with pytest.raises(ValueError, match=re.escape(str(broken))):
    export.export(config, workdir)
  assert sorted(p.name for p in (workdir / 'export').iterdir()) == ['test_step_7',
                                                                   'test_step_7.2']


def test_export_mode_of_the_entry_point(tiny_dataset, tmp_path):
  error = support.user_error(support.launch_main(
      'configs/demo.py', tmp_path, 1, '--mode', 'export', f'--config.data.root={tiny_dataset}',
      '--config.eval.export_split=val', env=support.COMPILES_LOGGED))
  assert error.startswith('error: No checkpoint')  # it got as far as restoring
  assert not (tmp_path / 'export').exists()


class NearestColourModel:
  """Stands in for FLANet: each pixel gets the class of the nearest of random colours (one
  per class, or the given colour for the classes in `anchors`), so its class maps follow
  from the image files alone (`classes`)."""

  def __init__(self, num_classes: int, anchors: dict, seed: int = 0):
    self.centres = np.random.default_rng(seed).uniform(0, 255, (num_classes, 3))
    for class_index, colour in anchors.items():
      self.centres[class_index] = colour

  def classes(self, image: np.ndarray) -> np.ndarray:
    return ((image[..., None, :] - self.centres) ** 2).sum(-1).argmin(-1)

  def apply(self, variables, images, train=False):
    rgb = images * transforms.IMAGENET_STD + transforms.IMAGENET_MEAN
    logits = -((rgb[..., None, :] - self.centres.astype(np.float32)) ** 2).sum(-1)
    return logits, logits, logits


def _ade20k_val(parent):
  root = layouts.write_ade20k(parent)
  return root, 'val', sorted((root / 'images' / 'validation').glob('*.jpg'))


def _voc_test(parent):
  root = layouts.write_voc(parent)  # its two extra images, unlabelled, as the test split
  voc.split_file(root, 'test').write_text('2009_000001\n2009_000002\n')
  return root, 'test', [root / 'JPEGImages' / f'{i}.jpg' for i in ('2009_000001', '2009_000002')]


# data.name -> (tiny dataset writer, class -> value the benchmark server expects)
SERVER_IDS = {'ade20k': (_ade20k_val, lambda classes: classes + 1),  # 1..150; 0 is "other"
              'voc': (_voc_test, lambda classes: classes)}  # the class indices 0..20


@pytest.mark.parametrize('dataset', sorted(SERVER_IDS))
def test_export_files_of_ade20k_and_voc(dataset, tmp_path):
  """One labelIds PNG per image, named like it, holding the server's value of each pixel's
  predicted class at the image's own size; and the colourised prediction beside it."""
  write, server_ids = SERVER_IDS[dataset]
  root, split, images = write(tmp_path)
  info = {'ade20k': ade20k, 'voc': voc}[dataset]
  config = support.tiny_config(root, **{'data.name': dataset,
                                        'model.num_classes': info.NUM_CLASSES})
  read = lambda path: np.asarray(Image.open(path)).astype(np.float64)
  last = info.NUM_CLASSES - 1  # both ends of the class range predicted somewhere
  model = NearestColourModel(info.NUM_CLASSES, {0: read(images[0])[0, 0],
                                                last: read(images[-1])[-1, -1]})
  export.write_predictions(Evaluator(config, model, parallel.make_mesh(), split=split), {},
                           tmp_path / 'export')

  label_ids = sorted((tmp_path / 'export' / 'labelIds').iterdir())
  assert [p.name for p in label_ids] == [p.with_suffix('.png').name for p in images]
  predicted = set()
  for image_path, path in zip(images, label_ids):
    classes = model.classes(read(image_path))
    prediction = np.asarray(Image.open(path))
    assert prediction.dtype == np.uint8
    np.testing.assert_array_equal(prediction, server_ids(classes))
    colour = np.asarray(Image.open(tmp_path / 'export' / 'colour' / path.name))
    np.testing.assert_array_equal(colour, info.PALETTE[classes])
    predicted |= set(np.unique(classes).tolist())
  assert {0, last} <= predicted and len(predicted) > 10
