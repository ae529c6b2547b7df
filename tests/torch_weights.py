"""PyTorch state_dict -> Flax variables by the naming rule of hrnet.py and shufflenet.py.

Used by the parity tests: it proves the parameter names map key by key, mechanically.
"""

import numpy as np

# resnet.py names the residual shortcut explicitly; everything else follows the rule.
_RENAMES = {'downsample_0': 'downsample_conv', 'downsample_1': 'downsample_bn'}


def flax_module_path(torch_module_path: str) -> tuple[str, ...]:
  """'stage2.0.branches.1.2.conv1' -> ('stage2_0', 'branches_1_2', 'conv1')."""
  names = []
  for token in torch_module_path.split('.'):
    if token.isdigit():
      names[-1] += f'_{token}'
    else:
      names.append(token)
  return tuple(_RENAMES.get(n, n) for n in names)


def torch_to_flax(state_dict) -> dict:
  """{'params': ..., 'batch_stats': ...} nested dicts of float32 NumPy arrays."""
  variables = {'params': {}, 'batch_stats': {}}
  for key, tensor in state_dict.items():
    module, leaf = key.rsplit('.', 1)
    value = tensor.detach().cpu().numpy()
    if leaf == 'num_batches_tracked':
      continue
    if leaf == 'weight' and value.ndim == 4:  # conv [out, in, kh, kw] -> [kh, kw, in, out]
      collection, name, value = 'params', 'kernel', np.transpose(value, (2, 3, 1, 0))
    else:
      collection, name = {'weight': ('params', 'scale'), 'bias': ('params', 'bias'),
                          'running_mean': ('batch_stats', 'mean'),
                          'running_var': ('batch_stats', 'var')}[leaf]
    node = variables[collection]
    for part in flax_module_path(module):
      node = node.setdefault(part, {})
    assert name not in node, key
    node[name] = np.ascontiguousarray(value, np.float32)
  return variables
