"""One SGD step of FLANet equals one PyTorch step on the same weights and batch (float64).

The PyTorch side is the reference model (convert/torch_reference.py) with the paper's recipe
written out independently: torch.optim.SGD with momentum 0.9, weight decay 5e-4 on conv and
linear weights only, ten times the learning rate outside the backbone, cross-entropy ignoring
255 on the main output plus 0.4 times that of each auxiliary output, BatchNorm in training mode.
The JAX side is the project's own path from a config: build_model, make_optimizer, train_step.

FLANet-ResNet-18 at output stride 8 (layer3 dilated 2, layer4 dilated 4), deep stem, the real
head widths, the FLA block on (gamma != 0), batch 1: the original block pairs a sample with
another sample's priors when the batch is larger. Dropout is off on both sides. Both compute in
float64; parameters are stored in float32 on the JAX side, so each updated value may differ by
its float32 rounding, plus 1e-5 of the tensor's update for the float32 gradient and momentum.

It runs for the plain XLA operations ('xla') and the CPU-tuned kernels ('tuned', which 'auto'
selects on CPU; tests/test_kernels.py checks that); the PyTorch step runs once for both.
"""

import functools

import jax
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from configs import default
from flanet_jax import optim, step
from flanet_jax.convert import core, torch_reference
from flanet_jax.convert.flanet import flanet_arch
from flanet_jax.labels import IGNORE_INDEX
from flanet_jax.models import build_model
from tests import support

KERNEL_SETTINGS = ('xla', 'tuned')

NUM_CLASSES = 5
# (height, width): odd sizes along the way (max-pool 18x26 -> 9x13, layer2 -> 5x7), and at
# stride 8 at least 5 pixels each way, so that every tap of layer4's 4-dilated 3x3 convs counts.
IMAGE_SIZE = (36, 52)
LEARNING_RATE = 0.01
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4
HEAD_LR_MULTIPLIER = 10.0
AUX_WEIGHT = 0.4
ARCH = flanet_arch(18)  # key map of the official layout, for FLANet-ResNet-18


def _batch():
  rng = np.random.default_rng(0)
  image = rng.normal(size=(1, *IMAGE_SIZE, 3)).astype(np.float32)
  label = rng.integers(0, NUM_CLASSES, size=(1, *IMAGE_SIZE)).astype(np.int32)
  label[:, :10] = IGNORE_INDEX  # a band of ignored rows ...
  label[rng.random(label.shape) < 0.1] = IGNORE_INDEX  # ... and scattered ignored pixels
  return {'image': image, 'label': label}


def _torch_step(net, batch):
  """(loss, pixels per channel of each BatchNorm) of one training step of `net` in place."""
  backbone = lambda name: name.startswith('backbone.')
  decayed = lambda p: p.ndim > 1  # conv and linear weights; not BN, biases, gamma
  named = list(net.named_parameters())
  groups = [{'params': [p for n, p in named if backbone(n) == in_backbone and decayed(p) == decay],
             'lr': LEARNING_RATE * (1.0 if in_backbone else HEAD_LR_MULTIPLIER),
             'weight_decay': WEIGHT_DECAY if decay else 0.0}
            for in_backbone in (True, False) for decay in (True, False)]
  assert sum(len(g['params']) for g in groups) == len(named)
  optimizer = torch.optim.SGD(groups, lr=LEARNING_RATE, momentum=MOMENTUM)

  pixels = {}
  for name, module in net.named_modules():
    if isinstance(module, torch.nn.BatchNorm2d):
      module.register_forward_hook(
          lambda m, inputs, _, name=name: pixels.update({name: inputs[0][:, 0].numel()}))

  image = torch.from_numpy(batch['image'].transpose(0, 3, 1, 2)).double()
  label = torch.from_numpy(batch['label']).long()
  main, aux1, aux2 = net.train()(image)
  ce = lambda logits: F.cross_entropy(logits, label, ignore_index=IGNORE_INDEX)
  loss = ce(main) + AUX_WEIGHT * (ce(aux1) + ce(aux2))
  optimizer.zero_grad()
  loss.backward()
  optimizer.step()
  return loss.item(), pixels


@pytest.fixture(scope='module')
def reference():
  """Initial weights (official keys, float32), the batch, and PyTorch's step from them."""
  torch.manual_seed(0)
  net = torch_reference.FLANet(NUM_CLASSES, depth=18, deep_stem=True, dropout_rate=0.0)
  support.randomise_batch_norms_(net, seed=1)
  with torch.no_grad():
    net.fully.gamma.fill_(0.7)  # 0 would leave the attention out of the output
  initial = {k: v.numpy().copy() for k, v in net.state_dict().items()}
  batch = _batch()
  loss, pixels = _torch_step(net.double(), batch)
  final = {k: v.numpy() for k, v in net.state_dict().items()}
  return initial, batch, loss, pixels, final


def _config(kernels):
  config = default.get_config()
  config.dtype = 'float64'
  config.model.num_classes = NUM_CLASSES
  config.model.backbone = 'resnet18'
  config.model.deep_stem = True
  config.model.output_stride = 8
  config.model.attention = 'fla'
  config.model.dropout_rate = 0.0
  config.model.kernels = kernels
  config.optimizer.learning_rate = LEARNING_RATE
  config.optimizer.momentum = MOMENTUM
  config.optimizer.weight_decay = WEIGHT_DECAY
  config.optimizer.decay_norm_and_bias = False
  config.optimizer.head_lr_multiplier = HEAD_LR_MULTIPLIER
  config.optimizer.warmup_steps = 0
  config.loss.name = 'ce'
  config.loss.aux_weights = (AUX_WEIGHT, AUX_WEIGHT)
  return config


def _jax_step(config, variables, batch):
  """(loss, variables after one step) through the project's training path."""
  with jax.enable_x64(True):
    model = build_model(config.model, config.dtype)
    tx, schedule = optim.make_optimizer(config.optimizer, config.num_train_steps,
                                        variables['params'])
    state = step.create_train_state(variables, tx, config.seed)
    train_step = jax.jit(functools.partial(step.train_step, model=model, tx=tx,
                                           schedule=schedule, loss_config=config.loss))
    new_state, metrics = jax.device_get(train_step(state, batch))
  return float(metrics['loss']), new_state.variables


def _expected(key, initial, final, pixels):
  """PyTorch's new value of `key` as the JAX side stores it. Flax's running variance takes
  the biased batch variance v; PyTorch's the unbiased n/(n-1) v, with n pixels per channel:
  0.9 old + 0.1 v = PyTorch's new value - (PyTorch's new value - 0.9 old) / n."""
  if not key.endswith('running_var'):
    return final[key]
  n = pixels[key.removesuffix('.running_var')]
  return final[key] - (final[key] - 0.9 * initial[key]) / n


@pytest.mark.parametrize('kernels', KERNEL_SETTINGS)
def test_train_step_matches_pytorch_in_float64(reference, kernels):
  initial, batch, torch_loss, pixels, final = reference
  variables = core.convert(initial, ARCH).variables
  loss, new_variables = _jax_step(_config(kernels), variables, batch)
  assert abs(loss - torch_loss) <= 1e-9 * abs(torch_loss)

  # Every parameter and running statistic, named as in PyTorch by the converter's key map.
  ours = {k: v for k, v in core.export(new_variables, ARCH).items()
          if not k.endswith('num_batches_tracked')}
  assert ours.keys() == {k for k in final if not k.endswith('num_batches_tracked')}
  bad = {}
  for key, value in ours.items():
    assert value.dtype == np.float32, key
    want = _expected(key, initial, final, pixels)
    update = np.abs(want - initial[key]).max()
    assert update > 0, key  # every tensor moved: none is compared with itself
    error = np.abs(value - want)
    allowed = 1e-5 * update + 0.5 * np.spacing(np.abs(value))  # np.spacing of float32
    if np.any(error > allowed):
      bad[key] = f'error {error.max():.3g}, update {update:.3g}'
  assert not bad, f'{len(bad)} of {len(ours)} tensors differ: {bad}'
