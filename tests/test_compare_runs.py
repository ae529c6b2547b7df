"""scripts/compare_runs.py: per-class IoU bars of evaluated runs (results.json of --mode eval)."""

import importlib.util
import json
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests import support

_SPEC = importlib.util.spec_from_file_location('compare_runs',
                                               support.REPO / 'scripts' / 'compare_runs.py')
compare_runs = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(compare_runs)


def _write_results(folder, miou, iou):
  folder.mkdir(parents=True)
  (folder / 'results.json').write_text(json.dumps({'step': 1, 'miou': miou, 'iou': iou}))
  return folder / 'results.json'


@pytest.fixture
def two_runs(tmp_path):
  """A workdir evaluated at steps 30 and 60 (twice), and a lone results.json."""
  workdir = tmp_path / 'fla_run'
  _write_results(workdir / 'eval' / 'step_30', 0.1, {'road': 0.1, 'car': 0.1, 'bus': None})
  _write_results(workdir / 'eval' / 'step_60', 0.2, {'road': 0.2, 'car': 0.2, 'bus': None})
  _write_results(workdir / 'eval' / 'step_60.2', 0.55, {'road': 0.9, 'car': 0.2, 'bus': None})
  _write_results(workdir / 'eval' / 'step_9', 0.3, {'road': 0.3, 'car': 0.3, 'bus': None})
  other = _write_results(tmp_path / 'baseline' / 'eval' / 'step_60', 0.4,
                         {'road': 0.8, 'car': 0.4, 'bus': 0.0})
  return workdir, other


def test_bars_of_the_latest_evaluation_of_each_run(two_runs, tmp_path):
  workdir, other = two_runs
  out = tmp_path / 'figures' / 'compare.png'
  compare_runs.main([str(workdir), str(other), '--out', str(out)])
  assert np.asarray(Image.open(out)).ndim == 3

  runs = [(compare_runs.run_label(run, path), compare_runs.read_results(path))
          for run in (workdir, other) for path in [compare_runs.find_results(run)]]
  assert compare_runs.find_results(workdir) == workdir / 'eval' / 'step_60.2' / 'results.json'
  axis = compare_runs.plot(runs).axes[0]
  assert [t.get_text() for t in axis.get_legend().get_texts()] == [
      'fla_run (mIoU 55.00)', 'baseline/step_60 (mIoU 40.00)']
  heights = [bar.get_height() for bar in axis.patches]
  np.testing.assert_allclose(heights, [90, 20, np.nan, 80, 40, 0])  # run by run, class by class
  assert [t.get_text() for t in axis.get_xticklabels()] == ['road', 'car', 'bus']

  with pytest.raises(SystemExit, match='already exists'):
    compare_runs.main([str(workdir), '--out', str(out)])


@pytest.mark.parametrize('content', [
    '{"miou": 0.5', '{"miou": 0.5}', '{"miou": 0.5, "iou": 3}',
    '{"miou": "x", "iou": {"road": 0.5}}',
    '{"miou": 0.5, "iou": {"road": 0.5, "car": 0.5}}'])  # not the first run's classes
def test_a_bad_results_file_is_named(content, two_runs, tmp_path):
  workdir, other = two_runs
  other.write_text(content)
  out = tmp_path / 'compare.png'
  with pytest.raises(SystemExit, match=f'^error: {re.escape(str(other))} '):
    compare_runs.main([str(workdir), str(other), '--out', str(out)])
  assert not out.exists()


def test_a_run_without_results_is_one_line_and_status_1(two_runs, tmp_path):
  workdir, _ = two_runs
  result = subprocess.run([sys.executable, str(support.REPO / 'scripts' / 'compare_runs.py'),
                           str(workdir), str(tmp_path), '--out', str(tmp_path / 'compare.png')],
                          capture_output=True, text=True, check=False, timeout=120)
  assert result.returncode == 1
  assert result.stderr.startswith(f'error: no results.json in {tmp_path} ')
  assert result.stderr.count('\n') == 1 and not (tmp_path / 'compare.png').exists()
