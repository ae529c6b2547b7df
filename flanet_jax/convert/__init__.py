"""PyTorch checkpoints <-> Flax variables, strictly (every key accounted for).

  conversion = convert_file('resnet101-imagenet.pth', 'resnet101_deep')
  conversion.variables          # {'params': ..., 'batch_stats': ...}, float32 numpy
  export_state_dict(variables, 'flanet_resnet101')   # back to the official PyTorch layout

Architectures are listed in `ARCHS` (registry.py). torch is needed only to read .pth files.
"""

import os
from typing import Any, Mapping

import numpy as np

from flanet_jax.convert import core
from flanet_jax.convert.core import Arch, Conversion
from flanet_jax.convert.errors import ConversionError
from flanet_jax.convert.registry import ARCHS, get_arch
from flanet_jax.convert.torch_io import clean_state_dict, load_torch_state_dict

__all__ = ['ARCHS', 'Arch', 'Conversion', 'ConversionError', 'clean_state_dict',
           'convert_file', 'convert_state_dict', 'export_state_dict', 'get_arch',
           'load_torch_state_dict']


def convert_state_dict(state_dict: Mapping[str, Any], arch: str,
                       naming: str | None = None) -> Conversion:
  """state_dict (tensors or arrays) -> Conversion; raises ConversionError on any mismatch.

  `naming` picks one of the arch's key namings; by default the one matching most keys.
  """
  return core.convert(state_dict, get_arch(arch), naming)


def convert_file(path: str | os.PathLike, arch: str, naming: str | None = None) -> Conversion:
  """A .pth file -> Conversion (see `convert_state_dict`)."""
  spec = get_arch(arch)  # an unknown arch fails before the (slow) load
  return core.convert(load_torch_state_dict(path), spec, naming)


def export_state_dict(variables: Mapping[str, Any], arch: str,
                      naming: str | None = None) -> dict[str, np.ndarray]:
  """Flax variables -> PyTorch state_dict of numpy arrays (default naming: the arch's first).

  Save it for PyTorch with `torch.save({k: torch.from_numpy(v) for k, v in sd.items()}, path)`.
  """
  return core.export(variables, get_arch(arch), naming)
