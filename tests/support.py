"""Shared test helpers: a tiny synthetic dataset and a tiny training config."""

import pathlib

import jax

from configs import default
from flanet_jax.data import synthetic


def write_tiny_dataset(root: pathlib.Path, num_train=16, num_val=6, height=40, width=72,
                       seed=0) -> pathlib.Path:
  return synthetic.write_dataset(str(root), num_train, num_val, height, width, seed)


def tiny_config(data_root, **overrides):
  """A seconds-per-step FLANet-ResNet18 config on the synthetic dataset."""
  config = default.get_config()
  config.batch_size = 8
  config.num_train_steps = 6
  config.log_every_steps = 2
  config.eval_every_steps = 1000
  config.checkpoint_every_steps = 3
  config.model.backbone = 'resnet18'
  config.model.deep_stem = False
  config.model.head_features = 16
  config.model.aux_features = 8
  config.data.root = str(data_root)
  config.data.crop_size = (32, 32)
  config.data.base_size = ()  # scale the tiny images by their own size
  config.data.workers = 0
  config.data.eval_batch_size = 8
  config.optimizer.learning_rate = 0.02
  config.optimizer.head_lr_multiplier = 1.0
  config.loss.name = 'ce'
  for key, value in overrides.items():
    target = config
    *parents, leaf = key.split('.')
    for parent in parents:
      target = target[parent]
    target[leaf] = value
  return config


def randomise_batch_norms_(model, seed: int):
  """Random BatchNorm2d affine parameters and running statistics (never PyTorch's 1/0
  defaults), so that a misplaced BN cannot go unnoticed; returns `model` in eval mode."""
  import torch  # pylint: disable=import-outside-toplevel  (only the PyTorch parity tests)
  generator = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, torch.nn.BatchNorm2d):
        channels = module.num_features
        module.running_mean.copy_(0.1 * torch.randn(channels, generator=generator))
        module.running_var.copy_(torch.rand(channels, generator=generator) + 0.5)
        module.weight.copy_(torch.rand(channels, generator=generator) + 0.5)
        module.bias.copy_(0.1 * torch.randn(channels, generator=generator))
  return model.eval()


def flanet_loss_and_grads(model, variables, images, labels, num_classes: int):
  """(loss, gradients w.r.t. params) of a plain cross-entropy summed over FLANet's three
  outputs, in training mode (batch statistics, dropout on)."""

  def loss_fn(params):
    outputs, _ = model.apply({'params': params, 'batch_stats': variables['batch_stats']},
                             images, train=True, rngs={'dropout': jax.random.key(1)},
                             mutable=['batch_stats'])
    one_hot = jax.nn.one_hot(labels, num_classes)
    return sum(-(one_hot * jax.nn.log_softmax(o)).sum(-1).mean() for o in outputs)

  return jax.jit(jax.value_and_grad(loss_fn))(variables['params'])
