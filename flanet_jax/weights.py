"""The model variables that eval, export and predict use: a training checkpoint or converted
weights.

A workdir's training checkpoint comes first (`eval.checkpoint_step`, by default the latest).
When the workdir has none, `init_from` names converted weights (scripts/convert_torch_weights.py,
e.g. an official FLANet), which must cover the whole model: a backbone alone would leave the
head at its random initial values.
"""

import dataclasses
import pathlib
from typing import Any

import jax

from flanet_jax import checkpoint, errors, optim, parallel, pretrained, step


@dataclasses.dataclass(frozen=True)
class Weights:
  """Variables {'params', 'batch_stats'} and where they came from (a step or a directory)."""
  variables: Any
  step: int | None = None  # the training checkpoint's step, or
  init_from: str | None = None  # the converted weights' directory

  @property
  def name(self) -> str:
    """Output folder name: 'step_<N>' or 'init_from_<directory name>'."""
    if self.step is not None:
      return f'step_{self.step}'
    return f'init_from_{pathlib.Path(self.init_from).name}'

  def origin(self) -> dict:
    return {'step': self.step, 'init_from': self.init_from}

  def __str__(self) -> str:
    if self.step is not None:
      return f'checkpoint step {self.step}'
    return f'converted weights {self.init_from}'


def train_state_shapes(config, model):
  """Abstract train state of this config (the optimizer state shapes follow the config)."""
  variables = jax.eval_shape(lambda: step.init_variables(model, config.seed))
  tx, _ = optim.make_optimizer(config.optimizer, config.num_train_steps, variables['params'])
  return jax.eval_shape(lambda v: step.create_train_state(v, tx, config.seed), variables)


def _checkpoint_steps(config, workdir: pathlib.Path) -> list[int]:
  if not (workdir / 'checkpoints').is_dir():
    return []
  return checkpoint.manager(workdir, config.keep_checkpoints, read_only=True).all_steps()


def restore_variables(config, workdir: pathlib.Path, model, mesh):
  """(step, variables) of the configured checkpoint (latest if eval.checkpoint_step < 0)."""
  workdir = pathlib.Path(workdir)
  steps = _checkpoint_steps(config, workdir)
  if not steps:
    raise errors.UserFileNotFoundError(f'No checkpoint in {workdir / "checkpoints"}; train '
                                       'first, or set init_from to converted weights')
  wanted = config.eval.checkpoint_step
  step_number = max(steps) if wanted < 0 else wanted
  if step_number not in steps:
    raise errors.UserFileNotFoundError(f'No checkpoint for step {wanted} in '
                                       f'{workdir / "checkpoints"}; available: {sorted(steps)}')
  mngr = checkpoint.manager(workdir, config.keep_checkpoints, read_only=True)
  target = checkpoint.abstract_like(train_state_shapes(config, model), parallel.replicated(mesh))
  state = checkpoint.restore_state(mngr, step_number, target)
  return step_number, state.variables


def converted(path, model, mesh) -> Weights:
  """The whole-model variables in a converted-weights directory, replicated over `mesh`."""
  path = str(path)
  pretrained.require_converted(path)
  shapes = jax.eval_shape(lambda: step.init_variables(model, 0))  # nothing is initialised
  try:
    variables, report = pretrained.init_from(shapes, path)
  except ValueError as error:
    raise errors.UserValueError(f'init_from={path!r} does not fit the model: {error}') from error
  if report.not_initialised:
    missing = sorted({p.split('/')[1] for p in report.not_initialised})
    raise errors.UserValueError(f'init_from={path!r} covers only part of the model (nothing '
                                f'for {", ".join(missing)}); evaluating or predicting needs a '
                                'whole converted FLANet matching model.*')
  return Weights(jax.device_put(variables, parallel.replicated(mesh)), init_from=path)


def load(config, workdir, model, mesh) -> Weights:
  """The workdir's checkpoint (see `restore_variables`) or, when it has none and no step is
  asked for (eval.checkpoint_step < 0), the converted weights at `init_from`."""
  workdir = pathlib.Path(workdir)
  if (config.init_from and config.eval.checkpoint_step < 0 and
      not _checkpoint_steps(config, workdir)):
    try:
      return converted(config.init_from, model, mesh)
    except (FileNotFoundError, ValueError) as error:  # e.g. a wrong workdir: say both
      raise type(error)(f'No checkpoint in {workdir / "checkpoints"}, and {error}') from error
  step_number, variables = restore_variables(config, workdir, model, mesh)
  return Weights(variables, step=step_number)


def from_path(path, config, model, mesh) -> Weights:
  """A training workdir (it holds checkpoints/) or a converted-weights directory."""
  path = pathlib.Path(path)
  if (path / 'checkpoints').is_dir():
    step_number, variables = restore_variables(config, path, model, mesh)
    return Weights(variables, step=step_number)
  return converted(path, model, mesh)
