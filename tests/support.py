"""Shared test helpers: a tiny synthetic dataset and a tiny training config."""

import io
import json
import os
import pathlib
import struct
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
from tensorboardX.proto import event_pb2

from configs import default
from flanet_jax import optim, parallel, step
from flanet_jax.data import synthetic
from flanet_jax.models import build_model


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


REPO = pathlib.Path(__file__).resolve().parents[1]


def write_tiny_config_file(path: pathlib.Path, data_root, **overrides) -> pathlib.Path:
  """A config file for `--config`: its get_config() is `tiny_config(data_root, **overrides)`."""
  path.write_text('from tests import support\n\n\ndef get_config():\n'
                  f'  return support.tiny_config({str(data_root)!r}, **{overrides!r})\n')
  return path


def launch_main(config_file, workdir, devices: int, *flags, cache=None, env=None):
  """`python -m flanet_jax.main` in a new process with `devices` simulated CPU devices; with
  `cache`, it shares the suite's compilation cache (runs of one topology compile once)."""
  env = dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}',
             JAX_PLATFORMS='cpu', **(env or {}))
  if cache:
    env.update(JAX_COMPILATION_CACHE_DIR=str(cache),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0.5')
  command = [sys.executable, '-m', 'flanet_jax.main', '--config', str(config_file),
             '--workdir', str(workdir), *flags]
  return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


def records(workdir, key='loss') -> list[tuple[int, float]]:
  """(step, value) of `key` in a run's metrics.jsonl."""
  lines = (pathlib.Path(workdir) / 'metrics.jsonl').read_text().splitlines()
  return [(r['step'], r[key]) for r in map(json.loads, lines) if key in r]


def wait(process) -> str:
  """The output of a `launch_main` process, which must succeed."""
  output, _ = process.communicate(timeout=900)
  assert process.returncode == 0, output
  return output


def fails(process) -> str:
  """The output of a `launch_main` process, which must fail (a bad flag or input)."""
  output, _ = process.communicate(timeout=120)
  assert process.returncode != 0, output
  return output


def user_error(process) -> str:
  """The `error: ...` line of a `launch_main` process that refused its input (launched with
  `COMPILES_LOGGED`): exit status 1, that line last, no traceback, nothing compiled."""
  output = fails(process)
  last = output.rstrip().splitlines()[-1]
  assert process.returncode == 1 and last.startswith('error: '), output
  assert 'Traceback' not in output and 'Compiling' not in output, output
  return last


COMPILES_LOGGED = {'JAX_LOG_COMPILES': '1'}  # each compilation logs a 'Compiling ...' line


def abstract_train_step(config):
  """(state, new state, metrics) of one train step of `config`'s model at its batch and crop
  size, traced (`jax.eval_shape`): nothing compiled."""
  model = build_model(config.model, config.dtype)
  batch = {'image': jax.ShapeDtypeStruct((config.batch_size, *config.data.crop_size, 3),
                                         jnp.float32),
           'label': jax.ShapeDtypeStruct((config.batch_size, *config.data.crop_size), jnp.int32)}

  def init_and_step(batch):
    variables = step.init_variables(model, config.seed)
    tx, schedule = optim.make_optimizer(config.optimizer, config.num_train_steps,
                                        variables['params'])
    state = step.create_train_state(variables, tx, config.seed)
    new_state, metrics = step.train_step(state, batch, model=model, tx=tx, schedule=schedule,
                                         loss_config=config.loss)
    return state, new_state, metrics

  return jax.eval_shape(init_and_step, batch)


def softmax64(e):
  """Softmax over the last axis in float64, for the NumPy references."""
  e = np.asarray(e, np.float64)
  p = np.exp(e - e.max(axis=-1, keepdims=True))
  return p / p.sum(axis=-1, keepdims=True)


def assert_gradients_finite_and_nonzero(grads):
  """Every parameter gets a finite gradient that is not all zeros (it reaches the loss)."""
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    g = np.asarray(g)
    assert np.isfinite(g).all(), jax.tree_util.keystr(path)
    assert np.abs(g).max() > 0, jax.tree_util.keystr(path)


def random_variables(rng, variables):
  """`variables` (arrays or the ShapeDtypeStructs of `jax.eval_shape(model.init...)`) with
  every leaf replaced by fresh random values: BN variances in [0.5, 1.5], attention gammas
  of magnitude 0.5 to 1 (0, their init, would hide the block), EMANet bases ~ N(0, 0.2),
  everything else ~ N(0, 0.1). Cheaper than running a model's initialisers, which compiles
  a random generator per parameter."""

  def randomise(path, leaf):
    name = jax.tree_util.keystr(path)
    if name.endswith("['var']"):
      value = rng.uniform(0.5, 1.5, leaf.shape)
    elif name.endswith("['gamma']"):
      value = rng.choice([-1, 1]) * rng.uniform(0.5, 1.0, leaf.shape)
    else:
      value = rng.normal(0.0, 0.2 if name.endswith("['bases']") else 0.1, leaf.shape)
    return jnp.asarray(value, jnp.float32)

  return jax.tree_util.tree_map_with_path(randomise, variables)


def random_init(rng, module, inputs):
  """`random_variables` shaped like `module`'s for `inputs`, without running its init."""
  abstract = jax.eval_shape(lambda: module.init(jax.random.key(0), inputs, train=False))
  return random_variables(rng, abstract)


def replicated_random_variables(model, mesh, edit=lambda variables: None):
  """`random_init` variables of a FLANet `model` (seed 0), changed in place by `edit`, then
  placed on every device of `mesh` as evaluation wants them (no init compiled)."""
  variables = random_init(np.random.default_rng(0), model, jnp.zeros((1, 32, 32, 3)))
  edit(variables)
  return jax.device_put(variables, parallel.replicated(mesh))


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


def flanet_loss_fn(model, variables, images, labels, num_classes: int):
  """params -> (loss, new batch statistics): a plain cross-entropy summed over FLANet's three
  outputs, in training mode (batch statistics, dropout on)."""

  def loss_fn(params):
    outputs, updates = model.apply({'params': params, 'batch_stats': variables['batch_stats']},
                                   images, train=True, rngs={'dropout': jax.random.key(1)},
                                   mutable=['batch_stats'])
    one_hot = jax.nn.one_hot(labels, num_classes)
    loss = sum(-(one_hot * jax.nn.log_softmax(o)).sum(-1).mean() for o in outputs)
    return loss, updates['batch_stats']

  return loss_fn


def flanet_loss_and_grads(model, variables, images, labels, num_classes: int):
  """((loss, new batch statistics), gradients w.r.t. params) of `flanet_loss_fn`."""
  loss_fn = flanet_loss_fn(model, variables, images, labels, num_classes)
  return jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(variables['params'])


def tensorboard_images(directory) -> dict[str, list[tuple[int, np.ndarray]]]:
  """tag -> [(step, RGB image)] of the image summaries in a TensorBoard folder's event files
  (TFRecord framing: length u64, its CRC u32, the Event proto, its CRC u32)."""
  images = {}
  for path in sorted(pathlib.Path(directory).glob('events.out.tfevents.*')):
    data, offset = path.read_bytes(), 0
    while offset < len(data):
      (length,) = struct.unpack('<Q', data[offset:offset + 8])
      event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
      offset += 12 + length + 4
      for value in event.summary.value:
        if value.HasField('image'):
          image = Image.open(io.BytesIO(value.image.encoded_image_string))
          images.setdefault(value.tag, []).append((event.step, np.asarray(image)))
  return images
