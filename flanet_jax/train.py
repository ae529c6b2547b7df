"""The training loop: data -> jitted data-parallel step -> metrics -> checkpoint -> eval."""

import dataclasses
import functools
import pathlib
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from flanet_jax import (checkpoint, data, evaluate, metrics, optim, parallel, pretrained,
                        step, weights)
from flanet_jax.data import pipeline, transforms
from flanet_jax.models import build_model
from flanet_jax.reporting import MetricWriter


def train_dataset(config):
  """This host's share of the global training stream (see data/pipeline.py)."""
  return pipeline.train_dataset(data.source(config.data, config.data.train_split),
                                transforms.from_config(config.data),
                                global_batch=config.batch_size, seed=config.seed,
                                process_index=jax.process_index(),
                                process_count=jax.process_count())


def _load_pretrained(variables, path: str):
  """Fills the backbone (or whole model) from converted weights at `config.init_from`."""
  variables, report = pretrained.init_from(variables, path)
  if jax.process_index() == 0:
    print(report.summary())
  return variables


def initial_state(config, model, mesh, load_pretrained: bool = True):
  """Initialised (and `init_from`-filled), replicated train state, optimizer and schedule."""
  replicated = parallel.replicated(mesh)
  init_from = config.init_from if load_pretrained else ''
  if init_from:
    pretrained.require_converted(init_from)  # before the (compiled) initialisation
  variables = step.initial_variables(model, config.seed, replicated)
  if init_from:
    variables = _load_pretrained(variables, init_from)
  tx, schedule = optim.make_optimizer(config.optimizer, config.num_train_steps,
                                      variables['params'])
  state = jax.jit(lambda v: step.create_train_state(v, tx, config.seed),
                  out_shardings=replicated)(variables)
  return state, tx, schedule


def _start_state(config, model, mesh, mngr):
  """(state, tx, schedule): initialised for a fresh run; when resuming, only the shapes and
  shardings that the restore fills (nothing to compile or run)."""
  if mngr.latest_step() is None:
    return initial_state(config, model, mesh)
  shapes = weights.train_state_shapes(config, model)
  tx, schedule = optim.make_optimizer(config.optimizer, config.num_train_steps, shapes.params)
  return checkpoint.abstract_like(shapes, parallel.replicated(mesh)), tx, schedule


def restore_or_start(mngr, state, dataset, workers: int):
  """(state, data iterator) at the latest checkpoint, or at step 0 when there is none;
  `state` is the fresh state or the restore target (`_start_state`)."""
  latest = mngr.latest_step()
  if latest is None:
    return state, pipeline.iterator(dataset, workers)
  state = checkpoint.restore_state(mngr, latest, state)
  iterator = pipeline.iterator(dataset, workers)
  if not checkpoint.restore_data_iterator(mngr, latest, iterator):
    # Saved with another process count: the stream position is the step (pipeline.py).
    iterator = pipeline.iterator(dataset[latest:], workers)
  print(f'Resumed from step {latest} in {mngr.directory}')
  return state, iterator


def _make_train_step(config, model, tx, schedule, mesh):
  replicated = parallel.replicated(mesh)
  return jax.jit(functools.partial(step.train_step, model=model, tx=tx, schedule=schedule,
                                   loss_config=config.loss),
                 in_shardings=(replicated, parallel.batch_sharding(mesh)),
                 out_shardings=(replicated, replicated), donate_argnums=0)


def _stop_step(config) -> int:
  if config.stop_at_step > 0:
    return min(config.stop_at_step, config.num_train_steps)
  return config.num_train_steps


def _raise_nonfinite(mngr, step_number):
  mngr.wait_until_finished()
  raise FloatingPointError(
      f'Non-finite loss by step {step_number}; training stopped. The last good checkpoint '
      f'(step {mngr.latest_step()}) in {mngr.directory} is intact.')


def _print_table(result, class_names):
  if jax.process_index() == 0:
    print(metrics.format_table(result, class_names))


@dataclasses.dataclass
class _Run:
  """Everything the training loop works with."""
  config: Any
  mesh: Any
  state: step.TrainState
  iterator: Any
  train_step: Any
  evaluator: evaluate.Evaluator
  mngr: Any
  writer: MetricWriter


def _setup(config, workdir: pathlib.Path) -> _Run:
  data.prepare(config.data)
  parallel.check_batch_size('batch_size', config.batch_size)
  mesh = parallel.make_mesh()
  model = build_model(config.model, config.dtype)
  dataset = train_dataset(config)  # a missing or inconsistent dataset fails here,
  evaluator = evaluate.Evaluator(config, model, mesh)  # before anything is written
  workdir.mkdir(parents=True, exist_ok=True)
  mngr = checkpoint.manager(workdir, config.keep_checkpoints)
  # Resuming restores every variable, so converted weights are only read for a fresh run.
  state, tx, schedule = _start_state(config, model, mesh, mngr)
  state, iterator = restore_or_start(mngr, state, dataset, config.data.workers)
  return _Run(config, mesh, state, iterator, _make_train_step(config, model, tx, schedule, mesh),
              evaluator, mngr, MetricWriter(workdir, int(state.step)))


def _all_finite(mesh):
  """The loop's non-finite flag at its start: False, replicated like the step's metrics, so
  that combining the two moves nothing between devices."""
  return jax.device_put(jnp.zeros((), bool), parallel.replicated(mesh))


def _hot_step(run: _Run, window, nonfinite):
  """One step between log points: the next batch, the update, metrics summed on device.
  Nothing here waits for the device or reads a value back (tests/test_hot_loop.py)."""
  batch = parallel.to_global(next(run.iterator), run.mesh)
  run.state, step_metrics = run.train_step(run.state, batch)
  nonfinite = nonfinite | ~jnp.isfinite(step_metrics['loss'])
  window = step_metrics if window is None else jax.tree.map(jnp.add, window, step_metrics)
  return window, nonfinite


def _prediction_logger(run: _Run, step_number: int):
  """`Evaluator.run` callback: image | ground truth | prediction of the first
  eval.num_prediction_images images this process predicts, to TensorBoard (process 0)."""
  evaluator, logged = run.evaluator, []

  def log(indices, class_maps):
    for index, class_map in zip(indices, class_maps):
      if not run.writer.enabled or len(logged) >= run.config.eval.num_prediction_images:
        return
      example = evaluator.source[index]
      height, width = example['label'].shape
      palette = evaluator.info.palette
      panel = np.concatenate([example['image'], evaluate.colourise(example['label'], palette),
                              evaluate.colourise(class_map[:height, :width], palette)], axis=1)
      run.writer.image(step_number, f'eval_predictions/{evaluator.source.name(index)}', panel)
      logged.append(index)

  return log


def _train(run: _Run, start: int, stop: int) -> dict | None:
  """Steps start+1..stop with periodic logging, checkpoints and evaluation."""
  config, result = run.config, None
  progress = tqdm(total=config.num_train_steps, initial=start, desc='train',
                  disable=jax.process_index() != 0, dynamic_ncols=True)
  nonfinite = _all_finite(run.mesh)  # any non-finite loss so far, on device
  window, window_start, timer = None, start, time.perf_counter()  # metrics summed since a log
  for step_number in range(start + 1, stop + 1):  # the step count after this update
    window, nonfinite = _hot_step(run, window, nonfinite)
    progress.update(1)
    log = step_number % config.log_every_steps == 0 or step_number == stop
    save = step_number % config.checkpoint_every_steps == 0 or step_number == stop
    if (log or save) and bool(nonfinite):
      _raise_nonfinite(run.mngr, step_number)
    if log:
      means = {k: float(v) / (step_number - window_start)
               for k, v in jax.device_get(window).items()}
      means['images_per_sec'] = ((step_number - window_start) * config.batch_size /
                                 (time.perf_counter() - timer))
      run.writer.write(step_number, means)
      progress.set_postfix(loss=f'{means["loss"]:.4f}', lr=f'{means["lr"]:.2e}',
                           img_s=f'{means["images_per_sec"]:.1f}')
      window, window_start, timer = None, step_number, time.perf_counter()
    if save:
      checkpoint.save(run.mngr, step_number, run.state, run.iterator)
    if step_number % config.eval_every_steps == 0 or step_number == config.num_train_steps:
      result = run.evaluator.run(run.state.variables, _prediction_logger(run, step_number))
      run.writer.write(step_number, {'miou': result['miou'],
                                     'pixel_accuracy': result['pixel_accuracy']})
      timer = time.perf_counter()  # evaluation time is not training throughput
  progress.close()
  return result


def train_and_evaluate(config, workdir) -> dict | None:
  """Trains (resuming from `workdir` when it holds checkpoints); returns the last eval scores."""
  run = _setup(config, pathlib.Path(workdir))
  start = int(run.state.step)
  if start >= config.num_train_steps:
    print(f'Training already complete at step {start}; evaluating.')
    result = run.evaluator.run(run.state.variables)
  else:
    result = _train(run, start, _stop_step(config))
  run.mngr.wait_until_finished()
  run.writer.close()
  if result is not None:
    _print_table(result, run.evaluator.info.class_names)
  return result
