"""Ours against the original PyTorch FLANet, same weights, same inputs, same process.

The PyTorch side is `flanet_jax/convert/torch_reference.py` (the official structure, BatchNorm2d
for SyncBN); its weights reach our model through the converter (`convert_state_dict`,
'flanet_resnet101'). Both run on the GPU when PyTorch sees one (JAX on its default backend),
else on the CPU, where PyTorch gets `torch.set_num_threads(<cores this process may use>)` and
XLA:CPU uses one thread per core by default. Cases, in --dtype (float32; bfloat16: our
`config.dtype`, PyTorch's autocast; on GPU float32 convolutions and matmuls run in TF32 on
both sides, JAX's default):
  FLA block forward          1x512x--fla-size^2 (96^2, the paper's), eval mode (gamma 0.5, so
                             the attention counts)
  FLA block forward+backward the same, train-mode BN, gradients of input and parameters
  FLANet-R101 train step     --train-batch x --train-size^2 (2 x 256^2), CE + 0.4/0.4 aux CE,
                             SGD momentum 0.9, wd 5e-4; also images/s, our model TFLOP/s and,
                             with --peak-tflops (the chip's peak at --dtype), our model FLOP
                             utilisation (model FLOPs: 3 x the forward's, XLA's count)
  FLANet-R101 eval forward   batch 1, --eval-size^2 (512^2)
  FLA block parts            (`--cases fla_parts`) forward+backward of the attention alone
                             and of the 3x3 conv-BN-ReLU alone (input gradient compared)
The FLA cases also give model GFLOP/s of both sides (model FLOPs: XLA's count of our forward,
x3 with the backward) beside the best rate of a 4096^2 matmul on the same machine, which
bounds what any implementation of the block can reach.
Dropout is 0 on both sides (their random masks cannot match); the train step starts from
gamma 0 (the init), where the original's batch defect (the FLA block pairs sample i with
another sample's priors at batch > 1) does not change the result, so both compute the same.
Each case: one untimed call of each (compilation; its outputs are compared: ||ours - torch||
over ||torch||, for the block's backward the worst of the input and parameter gradients), then
--repeats timed calls of PyTorch, then --repeats of ours (see `median_times`); medians.
Usage:  python benchmarks/bench_vs_torch.py [--repeats 3] [--out table.md]
        [--cases fla,train,eval[,fla_parts]] [--fla-chunk-size N (train, eval)]
        [--dtype float32|bfloat16] [--fla-size 96] [--train-batch 2] [--train-size 256]
        [--eval-size 512] [--peak-tflops T]
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

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # configs/
from configs import default  # noqa: E402
from flanet_jax import kernels, optim, step  # noqa: E402
from flanet_jax.convert import convert_state_dict, torch_reference  # noqa: E402
from flanet_jax.labels import IGNORE_INDEX  # noqa: E402
from flanet_jax.models import build_model  # noqa: E402
from flanet_jax.models.fla import FullyAttentionalBlock  # noqa: E402
from flanet_jax.models.flanet import attention_only  # noqa: E402
from flanet_jax.models.layers import ConvBN  # noqa: E402

THREADS = len(os.sched_getaffinity(0))
CLASSES = 19
DEVICE = torch.device('cuda' if torch.cuda.is_available() else 'cpu')  # JAX: its default
DTYPE = 'float32'  # compute dtype of both sides (--dtype)
KERNELS = 'auto'  # model.kernels of our side (--kernels)


def _nchw(x):
  return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2))).to(DEVICE)


def _numpy(t):
  return t.detach().float().cpu().numpy()


def _nhwc(t):
  return _numpy(t).transpose(0, 2, 3, 1)


def _torch_precision():
  """PyTorch's side of --dtype bfloat16: autocast (bf16 convolutions and matmuls)."""
  return torch.autocast(DEVICE.type, dtype=torch.bfloat16, enabled=DTYPE == 'bfloat16')


def _synced(fn):
  """fn, then wait for the GPU (PyTorch's calls return before the GPU is done)."""
  def run():
    out = fn()
    if DEVICE.type == 'cuda':
      torch.cuda.synchronize()
    return out
  return run


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
  net.to(DEVICE)
  variables = convert_state_dict(net.state_dict(), 'flanet_resnet101').variables
  return net, jax.tree.map(jnp.asarray, variables)


def median_times(torch_fn, jax_fn, repeats):
  """Median seconds of torch_fn and of jax_fn (each runs one iteration to completion): first
  `repeats` calls of one, then of the other. Not alternated call by call: a JAX train step run
  right after a PyTorch one is slower than after another JAX step (the PyTorch step is not
  affected), so alternating measures the interference, not the code."""
  times = {}
  for name, fn in (('torch', _synced(torch_fn)), ('jax', jax_fn)):
    times[name] = []
    for _ in range(repeats):
      start = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - start)
  return statistics.median(times['torch']), statistics.median(times['jax'])


def _fla_setup(size):
  """The reference FLA block (gamma 0.5), our variables of it, a 1 x size^2 x 512 input and a
  cotangent for the backward pass (NHWC numpy), and both as NCHW tensors."""
  net, variables = torch_flanet(gamma=0.5)
  block_vars = {c: variables[c]['attention'] for c in variables}
  x = np.random.default_rng(0).normal(size=(1, size, size, 512)).astype(np.float32)
  cotangent = np.random.default_rng(1).normal(size=x.shape).astype(np.float32)
  return net.fully, block_vars, x, cotangent, _nchw(x), _nchw(cotangent)


def _torch_input_grad(module_t, x_t, g_t):
  """One PyTorch forward+backward of module_t (every .grad filled); the input's gradient."""
  module_t.zero_grad()
  x_grad = x_t.clone().requires_grad_(True)
  with _torch_precision():
    y = module_t(x_grad)
  (y.float() * g_t).sum().backward()  # as ours: the sum of output x cotangent
  return x_grad.grad


def fla_cases(repeats, size=96, chunk_sizes=(None, 4, 16)):
  block_ref, block_vars, x, cotangent, x_t, g_t = _fla_setup(size)
  block_t, block_train_t = block_ref.eval(), copy.deepcopy(block_ref).train()  # train mode
  rows = []

  def torch_forward():
    with torch.no_grad(), _torch_precision():
      return block_t(x_t)

  # (the train copy's BN running statistics move; the eval copy's do not)
  torch_backward = functools.partial(_torch_input_grad, block_train_t, x_t, g_t)
  # Model FLOPs of the unchunked block: XLA counts a loop's body once, not per iteration.
  unchunked = FullyAttentionalBlock(512, dtype=jnp.dtype(DTYPE), ops=kernels.select(KERNELS))
  eval_flops = forward_flops(lambda v, x: unchunked.apply(v, x, train=False), block_vars, x)
  train_flops = 3 * forward_flops(
      lambda v, x: unchunked.apply(v, x, train=True, mutable=['batch_stats']), block_vars, x)

  for chunk in chunk_sizes:
    block = FullyAttentionalBlock(512, dtype=jnp.dtype(DTYPE), chunk_size=chunk,
                                  ops=kernels.select(KERNELS))
    forward = jax.jit(lambda v, x: block.apply(v, x, train=False))

    def loss(params, x, block=block):
      y, _ = block.apply({'params': params, 'batch_stats': block_vars['batch_stats']}, x,
                         train=True, mutable=['batch_stats'])
      return jnp.sum(y * cotangent)

    backward = jax.jit(jax.grad(loss, argnums=(0, 1)))
    label = 'all at once' if chunk is None else f'fla_chunk_size={chunk}'
    agree = rel_diff(forward(block_vars, x), _nhwc(torch_forward()))
    rows.append((f'FLA block forward, 1x512x{size}x{size} (ours: {label})', *median_times(
        torch_forward, lambda: forward(block_vars, x).block_until_ready(), repeats), agree))
    RATES.append((rows[-1][0], eval_flops, *rows[-1][1:3]))
    d_params, dx = backward(block_vars['params'], x)
    dx_t = torch_backward()
    grads_t = {name: _numpy(p.grad) for name, p in block_train_t.named_parameters()}
    agree = max(rel_diff(dx, _nhwc(dx_t)),
                rel_diff(d_params['row_prior']['kernel'], grads_t['conv1.weight'].T),
                rel_diff(d_params['col_prior']['kernel'], grads_t['conv2.weight'].T),
                rel_diff(d_params['fuse']['conv']['kernel'],
                         grads_t['conv.0.weight'].transpose(2, 3, 1, 0)),
                rel_diff(d_params['gamma'], grads_t['gamma'][0]))
    rows.append((f'FLA block forward+backward (ours: {label})', *median_times(
        torch_backward, lambda: jax.block_until_ready(backward(block_vars['params'], x)),
        repeats), agree))
    RATES.append((rows[-1][0], train_flops, *rows[-1][1:3]))
  return rows


def fla_parts_case(repeats, size=96, chunk=4):
  """The FLA block's forward+backward split in two: the attention (priors, maps, gamma
  residual: everything before the 3x3 `conv`) and the `conv` 3x3-BN-ReLU alone."""
  block_ref, block_vars, x, cotangent, x_t, g_t = _fla_setup(size)
  attention_t = copy.deepcopy(block_ref).train()
  attention_t.conv = torch.nn.Identity()
  conv_t = copy.deepcopy(block_ref.conv).train()
  block = FullyAttentionalBlock(512, dtype=jnp.dtype(DTYPE), chunk_size=chunk,
                                  ops=kernels.select(KERNELS))
  unchunked = FullyAttentionalBlock(512, dtype=jnp.dtype(DTYPE), ops=kernels.select(KERNELS))
  fuse = ConvBN(512, 3, dtype=jnp.dtype(DTYPE), ops=kernels.select(KERNELS))

  def attention_loss(params, x, block=block):
    with attention_only():
      y = block.apply({'params': params, 'batch_stats': block_vars['batch_stats']}, x,
                      train=True)
    return jnp.sum(y * cotangent)

  def fuse_loss(params, x):
    y, _ = fuse.apply({'params': params, 'batch_stats': block_vars['batch_stats']['fuse']}, x,
                      train=True, mutable=['batch_stats'])
    return jnp.sum(y * cotangent)

  rows = []
  # FLOPs of the attention counted without chunks: XLA counts a loop's body once, not per
  # iteration.
  for label, module_t, loss, flops_loss, params in (
      ('attention (before `conv`)', attention_t, attention_loss,
       functools.partial(attention_loss, block=unchunked), block_vars['params']),
      ('`conv` 3x3-BN-ReLU', conv_t, fuse_loss, fuse_loss, block_vars['params']['fuse'])):
    backward = jax.jit(jax.grad(loss, argnums=(0, 1)))  # PyTorch's fills every .grad too

    torch_backward = functools.partial(_torch_input_grad, module_t, x_t, g_t)
    agree = rel_diff(backward(params, x)[1], _nhwc(torch_backward()))
    rows.append((f'FLA block part forward+backward: {label}, fla_chunk_size={chunk}',
                 *median_times(torch_backward,
                               lambda: jax.block_until_ready(backward(params, x)), repeats),
                 agree))
    RATES.append((rows[-1][0], 3 * forward_flops(flops_loss, params, x), *rows[-1][1:3]))
  return rows


def _config(fla_chunk_size=0):
  config = default.get_config()
  config.model.fla_chunk_size = fla_chunk_size
  config.model.dropout_rate = 0.0
  config.model.kernels = KERNELS
  config.model.num_classes = CLASSES
  config.loss.name = 'ce'
  config.dtype = DTYPE
  return config


def _chunk_label(fla_chunk_size):
  return f' (ours: fla_chunk_size={fla_chunk_size})' if fla_chunk_size else ''


THROUGHPUT = []  # (label, batch, PyTorch s, ours s, model FLOPs per step) of train cases
RATES = []  # (label, model FLOPs, PyTorch s, ours s) of the FLA block cases


def forward_flops(forward, *args):
  """XLA's FLOP count of forward(*args), of the program before any backend rewrite. "Model
  FLOPs" of a forward+backward are 3x the forward's (the backward counted as twice the
  forward, whatever either side recomputes)."""
  return jax.jit(forward).lower(*args).cost_analysis()['flops']


def model_flops_per_step(model, variables, images):
  """Model FLOPs of a train step: 3 x the training-mode forward pass's."""
  def forward(variables, images):
    return model.apply(variables, images, train=True, mutable=['batch_stats'])
  return 3 * forward_flops(forward, variables, images)


def best_matmul_gflops(size=4096, repeats=7):
  """{side: best GFLOP/s of a size x size matmul in --dtype}: what this machine's matmul
  reaches, against which the FLA rows' model GFLOP/s can be read."""
  a = np.random.default_rng(4).normal(size=(size, size)).astype(np.float32)
  matmul_jax = jax.jit(jnp.matmul)
  a_jax = jnp.asarray(a, DTYPE)
  a_t = torch.from_numpy(a).to(DEVICE, getattr(torch, DTYPE))
  rates = {}
  for side, fn in (('torch', _synced(lambda: torch.matmul(a_t, a_t))),
                   ('jax', lambda: matmul_jax(a_jax, a_jax).block_until_ready())):
    fn()
    times = []
    for _ in range(repeats):
      start = time.perf_counter()
      fn()
      times.append(time.perf_counter() - start)
    rates[side] = 2 * size**3 / min(times) / 1e9
  return rates


def train_case(repeats, fla_chunk_size=0, batch=2, size=256):
  net, variables = torch_flanet(gamma=0.0)
  config = _config(fla_chunk_size)
  model = build_model(config.model, config.dtype)
  tx, schedule = optim.make_optimizer(config.optimizer, 1000, variables['params'])
  train_step = jax.jit(functools.partial(step.train_step, model=model, tx=tx, schedule=schedule,
                                         loss_config=config.loss), donate_argnums=0)
  rng = np.random.default_rng(2)
  images = rng.normal(size=(batch, size, size, 3)).astype(np.float32)
  labels = rng.integers(0, CLASSES, size=(batch, size, size)).astype(np.int32)
  data = {'image': jnp.asarray(images), 'label': jnp.asarray(labels)}
  images_t, labels_t = _nchw(images), torch.from_numpy(labels).long().to(DEVICE)
  sgd = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

  def torch_step():
    net.train()
    sgd.zero_grad()
    with _torch_precision():
      main, aux1, aux2 = net(images_t)
      loss = (F.cross_entropy(main, labels_t, ignore_index=IGNORE_INDEX) +
              0.4 * F.cross_entropy(aux1, labels_t, ignore_index=IGNORE_INDEX) +
              0.4 * F.cross_entropy(aux2, labels_t, ignore_index=IGNORE_INDEX))
    loss.backward()
    sgd.step()
    return loss.item()

  flops = model_flops_per_step(model, variables, data['image'])
  state = {'state': step.create_train_state(variables, tx, 0)}

  def jax_step():
    state['state'], metrics = train_step(state['state'], data)
    return jax.block_until_ready(metrics)['loss']

  agree = rel_diff(jax_step(), torch_step())  # the first step: same weights, same batch
  label = f'FLANet-R101 train step, batch {batch}, {size}x{size}, SGD'
  label += _chunk_label(fla_chunk_size)
  times = median_times(torch_step, jax_step, repeats)
  THROUGHPUT.append((label, batch, *times, flops))
  return [(label, *times, agree)]


def eval_case(repeats, fla_chunk_size=0, size=512):
  net, variables = torch_flanet(gamma=0.5)
  config = _config(fla_chunk_size)
  model = build_model(config.model, config.dtype)
  forward = jax.jit(lambda v, x: model.apply(v, x, train=False)[0])
  x = np.random.default_rng(3).normal(size=(1, size, size, 3)).astype(np.float32)
  x_t = _nchw(x)

  def torch_forward():
    with torch.no_grad(), _torch_precision():
      return net.eval()(x_t)[0]

  agree = rel_diff(forward(variables, x), _nhwc(torch_forward()))
  return [(f'FLANet-R101 eval forward, batch 1, {size}x{size}{_chunk_label(fla_chunk_size)}',
           *median_times(torch_forward, lambda: forward(variables, x).block_until_ready(),
                        repeats), agree)]


def _machine():
  if DEVICE.type == 'cuda':
    return (f'{torch.cuda.get_device_name()} (PyTorch), {jax.devices()[0].device_kind} (JAX); '
            f'torch {torch.__version__}')
  return (f'{THREADS} CPU cores ({platform.processor() or platform.machine()}), no GPU; '
          f'torch {torch.__version__} with {torch.get_num_threads()} threads')


def markdown(rows, repeats, peak_tflops=0.0, matmul=None):
  lines = [f'Machine: {_machine()}, jax {jax.__version__}; {DTYPE} compute, '
           f'model.kernels={KERNELS}; median of {repeats}; {datetime.date.today().isoformat()}.',
           '',
           '| Case | PyTorch (s) | Ours (s) | Speed-up | Rel. difference of outputs |',
           '| --- | ---: | ---: | ---: | ---: |']
  for name, t_torch, t_jax, agree in rows:
    lines.append(f'| {name} | {t_torch:.3f} | {t_jax:.3f} | {t_torch / t_jax:.2f}x | '
                 f'{agree:.1e} |')
  if THROUGHPUT:
    lines += ['', '| Train step | PyTorch images/s | Ours images/s | Model TFLOP per step | '
              'Ours model TFLOP/s | Ours MFU |', '| --- | ---: | ---: | ---: | ---: | ---: |']
    for name, batch, t_torch, t_jax, flops in THROUGHPUT:
      achieved = flops / t_jax / 1e12
      mfu = f'{achieved / peak_tflops:.1%}' if peak_tflops else 'n/a (no --peak-tflops)'
      lines.append(f'| {name} | {batch / t_torch:.2f} | {batch / t_jax:.2f} | '
                   f'{flops / 1e12:.3g} | {achieved:.3g} | {mfu} |')
  if RATES:  # (`matmul`: best_matmul_gflops(), measured with them)
    lines += ['', f'Best 4096x4096 {DTYPE} matmul on this machine: PyTorch '
              f'{matmul["torch"]:.0f}, ours (XLA) {matmul["jax"]:.0f} GFLOP/s. Model FLOPs: '
              "XLA's count of our forward (x3 with the backward), the same for both sides.", '',
              '| FLA case | Model GFLOP | PyTorch GFLOP/s | Ours GFLOP/s |',
              '| --- | ---: | ---: | ---: |']
    for name, flops, t_torch, t_jax in RATES:
      lines.append(f'| {name} | {flops / 1e9:.1f} | {flops / t_torch / 1e9:.0f} | '
                   f'{flops / t_jax / 1e9:.0f} |')
  return '\n'.join(lines)


def main():
  global DTYPE, KERNELS
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--cases', default='fla,train,eval')
  parser.add_argument('--out', default='', help='also write the Markdown table here')
  parser.add_argument('--fla-chunk-size', type=int, default=0,
                      help="our model's fla_chunk_size in the train and eval cases")
  parser.add_argument('--dtype', default='float32', choices=('float32', 'bfloat16'))
  parser.add_argument('--kernels', default='auto', choices=kernels.CHOICES,
                      help="our side's model.kernels")
  parser.add_argument('--fla-size', type=int, default=96)
  parser.add_argument('--train-batch', type=int, default=2)
  parser.add_argument('--train-size', type=int, default=256)
  parser.add_argument('--eval-size', type=int, default=512)
  parser.add_argument('--peak-tflops', type=float, default=0.0,
                      help="the chip's peak at --dtype, for the model FLOP utilisation")
  args = parser.parse_args()
  DTYPE, KERNELS = args.dtype, args.kernels
  torch.set_num_threads(THREADS)
  # JAX computes float32 convolutions and matmuls in TF32 on recent GPUs by default; PyTorch's
  # default leaves its matmuls (not its cuDNN convolutions) in full float32. Both TF32 here.
  torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
  chunk = args.fla_chunk_size
  cases = {'fla': functools.partial(fla_cases, size=args.fla_size),
           'fla_parts': functools.partial(fla_parts_case, size=args.fla_size),
           'train': functools.partial(train_case, fla_chunk_size=chunk, batch=args.train_batch,
                                      size=args.train_size),
           'eval': functools.partial(eval_case, fla_chunk_size=chunk, size=args.eval_size)}
  names = args.cases.split(',')
  matmul = best_matmul_gflops() if {'fla', 'fla_parts'} & set(names) else None
  rows = []
  for name in names:
    rows += cases[name](args.repeats)
    print(markdown(rows, args.repeats, args.peak_tflops, matmul), flush=True)
  if args.out:
    with open(args.out, 'w') as f:
      f.write(markdown(rows, args.repeats, args.peak_tflops, matmul) + '\n')


if __name__ == '__main__':
  main()
