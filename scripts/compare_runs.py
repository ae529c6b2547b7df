"""Per-class IoU of several evaluated runs as grouped bars (Figure 2 of the FLANet paper).

  python scripts/compare_runs.py RUN_DIR [RUN_DIR ...] --out FILE.png

A RUN_DIR is a workdir (its newest evaluation, workdir/eval/step_<N>[.k]/, is used), one
evaluation folder, or a results.json written by `--mode eval`. Each run's bars are labelled
with its name (the workdir's, or 'workdir/step_N' for one evaluation) and its mIoU; classes
without an IoU (null: neither in the labels nor predicted) get no bar.
"""

import argparse
import json
import pathlib
import re

import matplotlib
import numpy as np

matplotlib.use('Agg')  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

_EVAL_FOLDER = re.compile(r'step_(\d+)(?:\.(\d+))?')  # evaluate.new_output_dir's names


def find_results(run: pathlib.Path) -> pathlib.Path:
  """The results.json that `run` (a workdir, an eval folder or the file) stands for."""
  if not run.exists():
    raise SystemExit(f'error: {run} does not exist')
  if run.is_file():
    return run
  if (run / 'results.json').is_file():
    return run / 'results.json'
  folders = [(int(m[1]), int(m[2] or 1), p) for p in (run / 'eval').glob('step_*')
             if (m := _EVAL_FOLDER.fullmatch(p.name)) and (p / 'results.json').is_file()]
  if not folders:
    raise SystemExit(f'error: no results.json in {run} nor in {run / "eval"}/step_*/ '
                     '(evaluate it with --mode eval)')
  return max(folders)[2] / 'results.json'  # the highest step, then its latest evaluation


def run_label(run: pathlib.Path, results: pathlib.Path) -> str:
  """A workdir's name; 'workdir/step_N' for one evaluation folder of a workdir (or its
  results.json); else the name of the folder holding results.json."""
  run, folder = run.resolve(), results.resolve().parent
  if run not in (folder, folder / results.name):
    return run.name  # a workdir
  if folder.parent.name == 'eval':
    return f'{folder.parent.parent.name}/{folder.name}'
  return folder.name


def read_results(path: pathlib.Path) -> dict:
  """{'miou': float, 'iou': {class: float or None}} of a results.json, checked."""
  try:
    results = json.loads(path.read_text())
    miou, iou = float(results['miou']), dict(results['iou'])
    iou = {str(name): None if value is None else float(value) for name, value in iou.items()}
  except (OSError, ValueError, KeyError, TypeError) as error:
    raise SystemExit(f'error: {path} is not a results.json of --mode eval ({error!r})') from None
  return {'miou': miou, 'iou': iou}


def plot(runs: list[tuple[str, dict]]):
  """Figure of grouped per-class IoU bars (in %), one colour per (label, results) run."""
  classes = list(runs[0][1]['iou'])
  positions = np.arange(len(classes))
  width = 0.8 / len(runs)
  # Room per class for its rotated name and its bars: 150 ADE20K classes need a wide figure.
  inches = max(8.0, len(classes) * (0.15 + 0.1 * len(runs)) + 1.5)
  figure, axis = plt.subplots(figsize=(inches, 4.5))
  for k, (label, results) in enumerate(runs):
    heights = [np.nan if results['iou'][c] is None else 100 * results['iou'][c] for c in classes]
    axis.bar(positions + (k - (len(runs) - 1) / 2) * width, heights, width,
             label=f'{label} (mIoU {100 * results["miou"]:.2f})')
  axis.set_xticks(positions, classes, rotation=90)
  axis.set_xlim(-0.5, len(classes) - 0.5)
  axis.set_ylim(0, 100)
  axis.set_ylabel('IoU (%)')
  axis.legend(loc='lower left', bbox_to_anchor=(0, 1.01), ncol=len(runs), frameon=False)
  figure.tight_layout()
  return figure


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('runs', nargs='+', type=pathlib.Path, metavar='RUN_DIR',
                      help='workdir, eval folder or results.json')
  parser.add_argument('--out', required=True, type=pathlib.Path, help='image to write (.png)')
  args = parser.parse_args(argv)
  if args.out.exists():
    raise SystemExit(f'error: {args.out} already exists; choose another --out')
  paths = [find_results(run) for run in args.runs]
  runs = [(run_label(run, path), read_results(path)) for run, path in zip(args.runs, paths)]
  for path, (_, results) in zip(paths[1:], runs[1:]):
    if list(results['iou']) != list(runs[0][1]['iou']):
      raise SystemExit(f'error: {path} has other classes than {paths[0]}')
  args.out.parent.mkdir(parents=True, exist_ok=True)
  figure = plot(runs)
  figure.savefig(args.out)
  print(f'Wrote {args.out}')


if __name__ == '__main__':
  main()
