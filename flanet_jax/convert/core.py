"""Strict PyTorch state_dict <-> Flax variables conversion, generic over architectures.

An architecture (`Arch`) says which Flax module the weights are for and how each Flax module
path is named in PyTorch (a *naming*; some checkpoints exist under several). Everything else is
shared: leaf names (`kernel` <-> `weight`, `mean` <-> `running_mean`, ...) and layouts
(conv OIHW <-> HWIO, Linear [out, in] <-> Dense [in, out], a [1]-shaped scalar <-> shape ()).

The expected keys come from the Flax module's own variables (abstract `init`), so a checkpoint
converts only if it covers the model exactly: missing keys, unexpected keys and shape
mismatches are collected and raised together as one `ConversionError`.
"""

import dataclasses
import functools
import re
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from flanet_jax.convert.errors import ConversionError
from flanet_jax.convert.torch_io import clean_state_dict

# Flax (collection, leaf) -> PyTorch parameter/buffer name; other leaves keep their name.
_LEAF_NAMES = {
    ('params', 'kernel'): 'weight',
    ('params', 'scale'): 'weight',
    ('params', 'bias'): 'bias',
    ('batch_stats', 'mean'): 'running_mean',
    ('batch_stats', 'var'): 'running_var',
}
COLLECTIONS = ('params', 'batch_stats')


@dataclasses.dataclass(frozen=True)
class Arch:
  """One convertible architecture.

  build: state_dict -> the Flax module the weights are for (it may read sizes such as the
    number of classes from the checkpoint, and must cope with keys being absent).
  namings: name -> function mapping a Flax module path (tuple of names) to the PyTorch module
    name, e.g. ('layer3_5', 'conv2') -> 'layer3.5.conv2'. The first naming is the default.
  ignored: PyTorch key prefixes dropped on conversion (e.g. an ImageNet classifier 'fc.').
  """
  name: str
  description: str
  build: Callable[[Mapping[str, np.ndarray]], nn.Module]
  namings: Mapping[str, Callable[[tuple[str, ...]], str]]
  ignored: tuple[str, ...] = ()
  input_size: int = 64  # spatial size used to trace the module's variables

  def template(self, state_dict: Mapping[str, np.ndarray]) -> dict[tuple[str, ...], Any]:
    """Flat {(collection, *module_path, leaf): ShapeDtypeStruct} of the target module."""
    return dict(_abstract_variables(self.build(state_dict), self.input_size))


@functools.lru_cache(maxsize=8)
def _abstract_variables(module: nn.Module, input_size: int) -> dict[tuple[str, ...], Any]:
  """Cached: tracing a large model takes seconds, and `export` converts its result back."""
  x = jnp.zeros((1, input_size, input_size, 3), jnp.float32)
  abstract = jax.eval_shape(lambda: module.init(jax.random.key(0), x, train=False))
  return traverse_util.flatten_dict({c: abstract[c] for c in COLLECTIONS if c in abstract})


@dataclasses.dataclass(frozen=True)
class Conversion:
  """Converted variables and what happened on the way."""
  arch: str
  naming: str
  variables: dict  # {'params': ..., 'batch_stats': ...} of float32 numpy arrays
  ignored: tuple[str, ...]  # checkpoint keys dropped on purpose (e.g. 'fc.weight')

  def summary(self) -> str:
    lines = [f'arch {self.arch} (naming {self.naming!r})']
    for collection, tree in self.variables.items():
      leaves = jax.tree.leaves(tree)
      lines.append(f'  {collection}: {len(leaves)} arrays, '
                   f'{sum(a.size for a in leaves):,} values')
    if self.ignored:
      lines.append(f'  dropped {len(self.ignored)} keys: {", ".join(self.ignored)}')
    return '\n'.join(lines)


def torch_key(path: tuple[str, ...], module_name: Callable[[tuple[str, ...]], str]) -> str:
  """PyTorch key of the Flax leaf at (collection, *module_path, leaf)."""
  collection, *module_path, leaf = path
  module = module_name(tuple(module_path))
  name = _LEAF_NAMES.get((collection, leaf), leaf)
  return f'{module}.{name}' if module else name


def indexed_module_name(path: tuple[str, ...], renames: Mapping[str, str] | None = None) -> str:
  """('stage3_2', 'branches_1_3', 'conv1') -> 'stage3.2.branches.1.3.conv1'.

  The mechanical rule of models/hrnet.py and models/shufflenet.py: the numeric indices that follow
  a PyTorch module name (Sequential/ModuleList positions) are joined to it with '_' in Flax.
  `renames` maps whole Flax names first (e.g. 'downsample_conv' -> 'downsample_0').
  """
  renames = renames or {}
  return '.'.join(re.sub(r'_(?=\d+(?:_|$))', '.', renames.get(name, name)) for name in path)


def _torch_shape(leaf: str, shape: tuple[int, ...]) -> tuple[int, ...]:
  """The PyTorch shape of a Flax leaf of `shape`."""
  if leaf == 'kernel' and len(shape) == 4:  # HWIO -> OIHW
    return (shape[3], shape[2], shape[0], shape[1])
  if leaf == 'kernel' and len(shape) == 2:  # Dense [in, out] -> Linear [out, in]
    return (shape[1], shape[0])
  if not shape:  # PyTorch stores scalar parameters (FLA's gamma) with shape [1]
    return (1,)
  return tuple(shape)


def from_torch_layout(leaf: str, array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
  """A PyTorch array -> the Flax leaf `leaf` of `shape` (float32)."""
  if leaf == 'kernel' and array.ndim == 4:
    array = array.transpose(2, 3, 1, 0)
  elif leaf == 'kernel' and array.ndim == 2:
    array = array.T
  return np.array(array.reshape(shape), np.float32, order='C')  # ascontiguousarray makes 0-d 1-d


def to_torch_layout(leaf: str, array: np.ndarray) -> np.ndarray:
  """The Flax leaf `leaf` -> its PyTorch layout (float32)."""
  array = np.asarray(array, np.float32)
  if leaf == 'kernel' and array.ndim == 4:  # HWIO -> OIHW
    return np.ascontiguousarray(array.transpose(3, 2, 0, 1))
  if leaf == 'kernel' and array.ndim == 2:  # Dense [in, out] -> Linear [out, in]
    return np.ascontiguousarray(array.T)
  return array.reshape(_torch_shape(leaf, array.shape))


def expected_keys(template, module_name) -> dict[str, tuple[str, ...]]:
  """{torch key: Flax path}; the map must be one to one (a broken key map fails here)."""
  keys = {}
  for path in template:
    key = torch_key(path, module_name)
    if key in keys:
      raise AssertionError(f'key map sends {keys[key]} and {path} both to {key!r}')
    keys[key] = path
  return keys


def _natural_order(key: str):
  """'layer3.10' after 'layer3.9'."""
  return [int(p) if p.isdigit() else p for p in re.split(r'(\d+)', key)]


def _choose_naming(arch: Arch, template, state_dict, naming: str | None) -> str:
  """The requested naming, or the one that recognises the most checkpoint keys."""
  if naming is not None:
    if naming not in arch.namings:
      raise ConversionError(f'{arch.name}: unknown naming {naming!r}; '
                            f'choose one of {list(arch.namings)}')
    return naming
  return max(arch.namings, key=lambda n: len(
      state_dict.keys() & expected_keys(template, arch.namings[n]).keys()))


def convert(state_dict: Mapping[str, Any], spec: Arch, naming: str | None = None) -> Conversion:
  """PyTorch state_dict (tensors or arrays) -> Flax variables of `spec`, strictly.

  Raises ConversionError listing every missing key, unexpected key and shape mismatch.
  """
  state_dict = clean_state_dict(state_dict)
  template = spec.template(state_dict)
  naming = _choose_naming(spec, template, state_dict, naming)
  keys = expected_keys(template, spec.namings[naming])

  ignored = tuple(k for k in state_dict if k not in keys and k.startswith(spec.ignored))
  unexpected = [k for k in state_dict if k not in keys and k not in ignored]
  missing = [k for k in keys if k not in state_dict]
  wrong_shape = []
  for key, path in keys.items():
    want = _torch_shape(path[-1], template[path].shape)
    if key in state_dict and state_dict[key].shape != want:
      wrong_shape.append(f'{key}: checkpoint {tuple(state_dict[key].shape)}, expected {want}')

  problems = [('missing keys', missing), ('unexpected keys', unexpected),
              ('keys with the wrong shape', wrong_shape)]
  if missing or unexpected or wrong_shape:
    lines = [f'checkpoint does not match arch {spec.name!r} (naming {naming!r}):']
    if len(missing) + len(wrong_shape) > len(keys) // 2:
      lines[0] += f' most keys differ; is {spec.name!r} the right arch?'
    for title, items in problems:
      if items:
        lines.append(f'  {title} ({len(items)}):')
        lines.extend(f'    {item}' for item in sorted(items, key=_natural_order))
    raise ConversionError('\n'.join(lines))

  flat = {path: from_torch_layout(path[-1], state_dict[key], template[path].shape)
          for key, path in keys.items()}
  return Conversion(spec.name, naming, traverse_util.unflatten_dict(flat), ignored)


def export(variables: Mapping[str, Any], spec: Arch,
           naming: str | None = None) -> dict[str, np.ndarray]:
  """Flax variables of `spec` -> PyTorch state_dict (numpy arrays, float32).

  BatchNorm layers also get `num_batches_tracked` (0) so that `load_state_dict` is strict-clean.
  The result is checked by converting it back: variables that do not fit `spec` raise
  ConversionError.
  """
  naming = naming or next(iter(spec.namings))
  if naming not in spec.namings:
    raise ConversionError(f'{spec.name}: unknown naming {naming!r}; '
                          f'choose one of {list(spec.namings)}')
  flat = traverse_util.flatten_dict({c: variables[c] for c in COLLECTIONS if c in variables})
  state_dict = {}
  for path, value in flat.items():
    try:
      key = torch_key(path, spec.namings[naming])
    except (KeyError, ValueError) as e:  # a module the key map does not know
      raise ConversionError(f'{"/".join(path)} is not a variable of arch {spec.name!r}') from e
    state_dict[key] = to_torch_layout(path[-1], jax.device_get(value))
    if path[0] == 'batch_stats' and path[-1] == 'mean':
      state_dict[key.removesuffix('running_mean') + 'num_batches_tracked'] = np.zeros((), np.int64)
  convert(state_dict, spec, naming)  # raises if the variables do not fit `spec`
  return state_dict
