"""Metrics out: `metrics.jsonl` (one JSON object per logged step), TensorBoard, console."""

import json
import math
import pathlib

import jax
import numpy as np


class MetricWriter:
  """Writes scalars (and TensorBoard images) from process 0 only; a no-op on the others."""

  def __init__(self, workdir: pathlib.Path, resume_step: int = 0):
    self.enabled = jax.process_index() == 0
    self.path = workdir / 'metrics.jsonl'
    if not self.enabled:
      return
    _drop_records_after(self.path, resume_step)
    # Imported here: tensorboardX imports torch where it is installed, a cost that only a run
    # writing metrics should pay (not eval, export, --help or an early error).
    from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
    self.tensorboard = SummaryWriter(str(workdir / 'tensorboard'))

  def write(self, step: int, scalars: dict) -> None:
    if not self.enabled:
      return
    record = {'step': int(step), **{k: float(v) for k, v in scalars.items()}}
    with self.path.open('a') as f:
      f.write(json.dumps(record) + '\n')
    for key, value in scalars.items():
      if math.isfinite(float(value)):
        self.tensorboard.add_scalar(key, float(value), int(step))
    self.tensorboard.flush()

  def image(self, step: int, tag: str, image: np.ndarray) -> None:
    """A uint8 (H, W, 3) RGB image in TensorBoard (not in metrics.jsonl)."""
    if self.enabled:
      self.tensorboard.add_image(tag, image, int(step), dataformats='HWC')
      self.tensorboard.flush()

  def close(self) -> None:
    if self.enabled:
      self.tensorboard.close()


def _drop_records_after(path: pathlib.Path, step: int) -> None:
  """A resumed run recomputes the steps after its checkpoint: drop their stale records."""
  if not path.exists():
    return
  lines = path.read_text().splitlines(keepends=True)
  kept = [line for line in lines if json.loads(line)['step'] <= step]
  if len(kept) != len(lines):
    tmp = path.with_suffix('.jsonl.tmp')
    tmp.write_text(''.join(kept))
    tmp.replace(path)
