"""Initialising a model's variables from converted (pretrained) weights.

  variables = model.init(...)
  variables, report = init_from(variables, 'weights/resnet101_deep')   # a save_variables dir
  logging.info(report.summary())

The pretrained tree is placed at the top of the model (a whole model) or under one submodule,
by default whichever of '' and 'backbone' fits; every pretrained array must land on an
existing variable of the same shape, and everything else keeps its initial value.
"""

import dataclasses
import os
from typing import Any, Mapping

import jax
import numpy as np
from flax import traverse_util

from flanet_jax import errors
from flanet_jax.checkpoint import load_variables

# Where pretrained trees are tried when no prefix is given: a whole model, then a backbone.
AUTO_PREFIXES = ('', 'backbone')


@dataclasses.dataclass(frozen=True)
class InitReport:
  """Which model variables came from the pretrained weights ('/'-joined paths)."""
  prefix: str
  initialised: tuple[str, ...]
  not_initialised: tuple[str, ...]

  def summary(self) -> str:
    where = f'under {self.prefix!r}' if self.prefix else 'at the top level'
    lines = [f'init_from: {len(self.initialised)} arrays loaded {where}; '
             f'{len(self.not_initialised)} keep their initial values']
    modules = sorted({p.split('/')[1] for p in self.not_initialised})
    if modules:
      lines.append('  not initialised: ' + ', '.join(modules))
    return '\n'.join(lines)


def require_converted(path) -> None:
  """`config.init_from` must name a converted-weights directory."""
  if not os.path.isdir(path):
    raise errors.UserFileNotFoundError(f'init_from={str(path)!r} does not exist; convert PyTorch '
                                       'weights there with flanet-jax-convert (see README)')


def _join(path) -> str:
  return '/'.join(path)


def _place(flat_model, flat_pretrained, prefix: str):
  """(targets, problems): model path of each pretrained leaf, and why some do not fit."""
  parts = tuple(p for p in prefix.split('/') if p)
  targets, problems = {}, []
  for path, value in flat_pretrained.items():
    target = (path[0], *parts, *path[1:])
    if target not in flat_model:
      problems.append(f'{_join(target)}: not in the model')
    elif tuple(flat_model[target].shape) != tuple(np.shape(value)):
      problems.append(f'{_join(target)}: pretrained {tuple(np.shape(value))}, '
                      f'model {tuple(flat_model[target].shape)}')
    else:
      targets[path] = target
  return targets, problems


def _like(value, old):
  """`value` with the dtype (and, for jax arrays, the sharding) of the variable it replaces."""
  value = np.asarray(value, dtype=old.dtype)
  return jax.device_put(value, old.sharding) if isinstance(old, jax.Array) else value


def init_from(variables: Mapping[str, Any], pretrained: str | os.PathLike | Mapping[str, Any],
              prefix: str | None = None) -> tuple[dict, InitReport]:
  """Returns (variables with the pretrained subtree filled in, report).

  variables: the model's {'params', 'batch_stats'} (e.g. from `model.init`); not modified.
  pretrained: a `checkpoint.save_variables` directory or an in-memory {'params', ...} tree,
    e.g. converted ImageNet backbone weights or a whole converted FLANet.
  prefix: the submodule the pretrained tree belongs to ('' = whole model, 'backbone');
    None tries '' and then 'backbone' and uses the first where everything fits.
  Raises ValueError when no pretrained array matches, or when some do not fit (absent from the
  model or of another shape); the message lists every such array.
  """
  if not isinstance(pretrained, Mapping):
    pretrained = load_variables(pretrained)
  flat_model = traverse_util.flatten_dict(dict(variables))
  flat_pretrained = traverse_util.flatten_dict(dict(pretrained))
  if not flat_pretrained:
    raise errors.UserValueError('the pretrained variables are empty')

  candidates = AUTO_PREFIXES if prefix is None else (prefix,)
  placements = {p: _place(flat_model, flat_pretrained, p) for p in candidates}
  fitting = [p for p in candidates if not placements[p][1]]
  if not fitting:
    best = max(candidates, key=lambda p: len(placements[p][0]))
    targets, problems = placements[best]
    if not targets:
      raise errors.UserValueError(f'no pretrained array matches the model (tried prefixes '
                                  f'{candidates}); e.g. {problems[0]}')
    raise errors.UserValueError(f'{len(problems)} pretrained arrays do not fit the model under '
                                f'prefix {best!r}:\n' + '\n'.join(f'  {p}' for p in problems))

  prefix = fitting[0]
  targets = placements[prefix][0]
  new = dict(flat_model)
  for path, target in targets.items():
    new[target] = _like(flat_pretrained[path], flat_model[target])
  loaded = set(targets.values())
  report = InitReport(prefix, tuple(sorted(_join(t) for t in loaded)),
                      tuple(sorted(_join(p) for p in flat_model if p not in loaded)))
  return traverse_util.unflatten_dict(new), report
