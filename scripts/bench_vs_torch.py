"""Ours against the original PyTorch FLANet, same weights, same inputs, same process.

The PyTorch side is `flanet_jax/convert/torch_reference.py` (the official structure, BatchNorm2d
for SyncBN); its weights reach our model through the converter (`convert_state_dict`,
'flanet_resnet101'). PyTorch gets `torch.set_num_threads(<cores this process may use>)`; XLA:CPU
uses one thread per core by default. Cases (fp32):
  FLA block forward          1x512x96x96, eval mode (gamma 0.5, so the attention counts)
  FLA block forward+backward 1x512x96x96, train-mode BN, gradients of input and parameters
  FLANet-R101 train step     batch 2, 256x256, CE + 0.4/0.4 aux CE, SGD momentum 0.9, wd 5e-4
  FLANet-R101 eval forward   batch 1, 512x512
  FLA block parts            (`--cases fla_parts`) forward+backward of the attention alone
                             and of the 3x3 conv-BN-ReLU alone (input gradient compared)
Dropout is 0 on both sides (their random masks cannot match); the train step starts from
gamma 0 (the init), where the original's batch defect (the FLA block pairs sample i with
another sample's priors at batch > 1) does not change the result, so both compute the same.
Each case: one untimed call of each (compilation; its outputs are compared: ||ours - torch||
over ||torch||, for the block's backward the worst of the input and parameter gradients), then
--repeats timed calls of PyTorch, then --repeats of ours (see `median_times`); medians.
Usage:  python scripts/bench_vs_torch.py [--repeats 3] [--out table.md]
        [--cases fla,train,eval[,fla_parts]] [--fla-chunk-size N (train, eval)]
"""

import argparse
import copy
import datetime
import functools
import os
import pathlib
import platform
import statistics
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # configs/
from configs import default  # noqa: E402
from flanet_jax import optim, step  # noqa: E402
from flanet_jax.convert import convert_state_dict, torch_reference  # noqa: E402
from flanet_jax.models import build_model  # noqa: E402
from flanet_jax.models.fla import FullyAttentionalBlock  # noqa: E402
from flanet_jax.models.layers import ConvBN  # noqa: E402

THREADS = len(os.sched_getaffinity(0))
CLASSES = 19


def _nchw(x):
  return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))


def _nhwc(t):
  return t.detach().numpy().transpose(0, 2, 3, 1)


def rel_diff(ours, theirs):
  """||ours - theirs|| / ||theirs||. (Not a max: where a pre-ReLU value lies within float32
  rounding of 0, the two sides may take the other branch; one such pixel makes a max-norm
  gradient difference of ~1e-2 while the computations agree (float64 on both: 1e-15).)"""
  ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
  return float(np.linalg.norm(ours - theirs) / np.linalg.norm(theirs))


def torch_flanet(gamma: float):
  """The reference FLANet-R101 (seeded init), dropout off, and its converted variables."""
  torch.manual_seed(0)
  net = torch_reference.FLANet(num_classes=CLASSES, depth=101)
  for module in net.modules():
    if isinstance(module, torch.nn.Dropout2d):
      module.p = 0.0
  with torch.no_grad():
    net.fully.gamma.fill_(gamma)
  variables = convert_state_dict(net.state_dict(), 'flanet_resnet101').variables
  return net, jax.tree.map(jnp.asarray, variables)


def median_times(torch_fn, jax_fn, repeats):
  """Median seconds of torch_fn and of jax_fn (each runs one iteration to completion): first
  `repeats` calls of one, then of the other. Not alternated call by call: a JAX train step run
  right after a PyTorch one took 6.7-7.5 s against 6.1-6.4 s after another JAX step (the
  PyTorch step was not affected), so alternating measures the interference, not the code."""
  times = {}
  for name, fn in (('torch', torch_fn), ('jax', jax_fn)):
    times[name] = []
    for _ in range(repeats):
      start = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - start)
  return statistics.median(times['torch']), statistics.median(times['jax'])


def _fla_setup():
  """The reference FLA block (gamma 0.5), our variables of it, a 1x96x96x512 input and a
  cotangent for the backward pass (NHWC numpy), and both as NCHW tensors."""
  net, variables = torch_flanet(gamma=0.5)
  block_vars = {c: variables[c]['attention'] for c in variables}
  x = np.random.default_rng(0).normal(size=(1, 96, 96, 512)).astype(np.float32)
  cotangent = np.random.default_rng(1).normal(size=x.shape).astype(np.float32)
  return net.fully, block_vars, x, cotangent, _nchw(x), _nchw(cotangent)


def _torch_input_grad(module_t, x_t, g_t):
  """One PyTorch forward+backward of module_t (every .grad filled); the input's gradient."""
  module_t.zero_grad()
  x_grad = x_t.clone().requires_grad_(True)
  module_t(x_grad).backward(g_t)
  return x_grad.grad


def fla_cases(repeats, chunk_sizes=(None, 4, 16)):
  block_ref, block_vars, x, cotangent, x_t, g_t = _fla_setup()
  block_t, block_train_t = block_ref.eval(), copy.deepcopy(block_ref).train()  # train mode
  rows = []

  def torch_forward():
    with torch.no_grad():
      return block_t(x_t)

  # (the train copy's BN running statistics move; the eval copy's do not)
  torch_backward = functools.partial(_torch_input_grad, block_train_t, x_t, g_t)

  for chunk in chunk_sizes:
    block = FullyAttentionalBlock(512, chunk_size=chunk)
    forward = jax.jit(lambda v, x: block.apply(v, x, train=False))

    def loss(params, x, block=block):
      y, _ = block.apply({'params': params, 'batch_stats': block_vars['batch_stats']}, x,
                         train=True, mutable=['batch_stats'])
      return jnp.sum(y * cotangent)

    backward = jax.jit(jax.grad(loss, argnums=(0, 1)))
    label = 'all at once' if chunk is None else f'fla_chunk_size={chunk}'
    agree = rel_diff(forward(block_vars, x), _nhwc(torch_forward()))
    rows.append((f'FLA block forward, 1x512x96x96 (ours: {label})', *median_times(
        torch_forward, lambda: forward(block_vars, x).block_until_ready(), repeats), agree))
    d_params, dx = backward(block_vars['params'], x)
    dx_t = torch_backward()
    grads_t = {name: p.grad.numpy() for name, p in block_train_t.named_parameters()}
    agree = max(rel_diff(dx, _nhwc(dx_t)),
                rel_diff(d_params['row_prior']['kernel'], grads_t['conv1.weight'].T),
                rel_diff(d_params['col_prior']['kernel'], grads_t['conv2.weight'].T),
                rel_diff(d_params['fuse']['conv']['kernel'],
                         grads_t['conv.0.weight'].transpose(2, 3, 1, 0)),
                rel_diff(d_params['gamma'], grads_t['gamma'][0]))
    rows.append((f'FLA block forward+backward (ours: {label})', *median_times(
        torch_backward, lambda: jax.block_until_ready(backward(block_vars['params'], x)),
        repeats), agree))
  return rows


def _without_fuse(next_fun, args, kwargs, context):
  """Flax method interceptor: the FLA block's `fuse` conv-BN-ReLU passes its input through."""
  if context.module.name == 'fuse' and context.method_name == '__call__':
    return args[0]
  return next_fun(*args, **kwargs)


def fla_parts_case(repeats, chunk=4):
  """The FLA block's forward+backward split in two: the attention (priors, maps, gamma
  residual: everything before the 3x3 `conv`) and the `conv` 3x3-BN-ReLU alone."""
  block_ref, block_vars, x, cotangent, x_t, g_t = _fla_setup()
  attention_t = copy.deepcopy(block_ref).train()
  attention_t.conv = torch.nn.Identity()
  conv_t = copy.deepcopy(block_ref.conv).train()
  block = FullyAttentionalBlock(512, chunk_size=chunk)
  fuse = ConvBN(512, 3)

  def attention_loss(params, x):
    with nn.intercept_methods(_without_fuse):
      y = block.apply({'params': params, 'batch_stats': block_vars['batch_stats']}, x,
                      train=True)
    return jnp.sum(y * cotangent)

  def fuse_loss(params, x):
    y, _ = fuse.apply({'params': params, 'batch_stats': block_vars['batch_stats']['fuse']}, x,
                      train=True, mutable=['batch_stats'])
    return jnp.sum(y * cotangent)

  rows = []
  for label, module_t, loss, params in (
      ('attention (before `conv`)', attention_t, attention_loss, block_vars['params']),
      ('`conv` 3x3-BN-ReLU', conv_t, fuse_loss, block_vars['params']['fuse'])):
    backward = jax.jit(jax.grad(loss, argnums=(0, 1)))  # PyTorch's fills every .grad too

    torch_backward = functools.partial(_torch_input_grad, module_t, x_t, g_t)
    agree = rel_diff(backward(params, x)[1], _nhwc(torch_backward()))
    rows.append((f'FLA block part forward+backward: {label}, fla_chunk_size={chunk}',
                 *median_times(torch_backward,
                               lambda: jax.block_until_ready(backward(params, x)), repeats),
                 agree))
  return rows


def _config(fla_chunk_size=0):
  config = default.get_config()
  config.model.fla_chunk_size = fla_chunk_size
  config.model.dropout_rate = 0.0
  config.model.num_classes = CLASSES
  config.loss.name = 'ce'
  return config


def _chunk_label(fla_chunk_size):
  return f' (ours: fla_chunk_size={fla_chunk_size})' if fla_chunk_size else ''


def train_case(repeats, fla_chunk_size=0, batch=2, size=256):
  net, variables = torch_flanet(gamma=0.0)
  config = _config(fla_chunk_size)
  model = build_model(config.model)
  tx, schedule = optim.make_optimizer(config.optimizer, 1000, variables['params'])
  train_step = jax.jit(functools.partial(step.train_step, model=model, tx=tx, schedule=schedule,
                                         loss_config=config.loss), donate_argnums=0)
  rng = np.random.default_rng(2)
  images = rng.normal(size=(batch, size, size, 3)).astype(np.float32)
  labels = rng.integers(0, CLASSES, size=(batch, size, size)).astype(np.int32)
  data = {'image': jnp.asarray(images), 'label': jnp.asarray(labels)}
  images_t, labels_t = _nchw(images), torch.from_numpy(labels).long()
  sgd = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

  def torch_step():
    net.train()
    sgd.zero_grad()
    main, aux1, aux2 = net(images_t)
    loss = (F.cross_entropy(main, labels_t, ignore_index=255) +
            0.4 * F.cross_entropy(aux1, labels_t, ignore_index=255) +
            0.4 * F.cross_entropy(aux2, labels_t, ignore_index=255))
    loss.backward()
    sgd.step()
    return loss.item()

  state = {'state': step.create_train_state(variables, tx, 0)}

  def jax_step():
    state['state'], metrics = train_step(state['state'], data)
    return jax.block_until_ready(metrics)['loss']

  agree = rel_diff(jax_step(), torch_step())  # the first step: same weights, same batch
  label = f'FLANet-R101 train step, batch {batch}, {size}x{size}, SGD'
  return [(label + _chunk_label(fla_chunk_size),
           *median_times(torch_step, jax_step, repeats), agree)]


def eval_case(repeats, fla_chunk_size=0, size=512):
  net, variables = torch_flanet(gamma=0.5)
  model = build_model(_config(fla_chunk_size).model)
  forward = jax.jit(lambda v, x: model.apply(v, x, train=False)[0])
  x = np.random.default_rng(3).normal(size=(1, size, size, 3)).astype(np.float32)
  x_t = _nchw(x)

  def torch_forward():
    with torch.no_grad():
      return net.eval()(x_t)[0]

  agree = rel_diff(forward(variables, x), _nhwc(torch_forward()))
  return [(f'FLANet-R101 eval forward, batch 1, {size}x{size}{_chunk_label(fla_chunk_size)}',
           *median_times(torch_forward, lambda: forward(variables, x).block_until_ready(),
                        repeats), agree)]


def markdown(rows, repeats):
  lines = [f'Machine: {THREADS} CPU cores ({platform.processor() or platform.machine()}), '
           f'no GPU; torch {torch.__version__} with {torch.get_num_threads()} threads, '
           f'jax {jax.__version__}; fp32; median of {repeats}; '
           f'{datetime.date.today().isoformat()}.', '',
           '| Case | PyTorch (s) | Ours (s) | Speed-up | Rel. difference of outputs |',
           '| --- | ---: | ---: | ---: | ---: |']
  for name, t_torch, t_jax, agree in rows:
    lines.append(f'| {name} | {t_torch:.3f} | {t_jax:.3f} | {t_torch / t_jax:.2f}x | '
                 f'{agree:.1e} |')
  return '\n'.join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--cases', default='fla,train,eval')
  parser.add_argument('--out', default='', help='also write the Markdown table here')
  parser.add_argument('--fla-chunk-size', type=int, default=0,
                      help="our model's fla_chunk_size in the train and eval cases")
  args = parser.parse_args()
  torch.set_num_threads(THREADS)
  chunk = args.fla_chunk_size
  cases = {'fla': fla_cases, 'fla_parts': fla_parts_case,
           'train': functools.partial(train_case, fla_chunk_size=chunk),
           'eval': functools.partial(eval_case, fla_chunk_size=chunk)}
  rows = []
  for name in args.cases.split(','):
    rows += cases[name](args.repeats)
    print(markdown(rows, args.repeats), flush=True)
  if args.out:
    with open(args.out, 'w') as f:
      f.write(markdown(rows, args.repeats) + '\n')


if __name__ == '__main__':
  main()
