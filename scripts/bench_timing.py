"""Shared by the benchmark scripts: median wall times of repeated compiled calls."""

import statistics
import time

import jax


def median_step_time(compiled, state, batch, steps: int):
  """Runs `compiled(state, batch)` once untimed (allocations), then `steps` timed times.

  Returns (state, metrics, median seconds per step)."""
  state, metrics = compiled(state, batch)
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    state, metrics = compiled(state, batch)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - start)
  return state, metrics, statistics.median(times)


def round_robin_medians(runs, repeats: int):
  """{name: median seconds} of `runs` ({name: zero-argument call}): each called once untimed
  (compilation), then `repeats` rounds timing each once, so slow drifts hit all alike."""
  for run in runs.values():
    jax.block_until_ready(run())
  times = {name: [] for name in runs}
  for _ in range(repeats):
    for name, run in runs.items():
      start = time.perf_counter()
      jax.block_until_ready(run())
      times[name].append(time.perf_counter() - start)
  return {name: statistics.median(t) for name, t in times.items()}


def print_ratio_header(label_title, baseline_title, candidate_title):
  """The Markdown header of the table `print_ratio_rows` fills."""
  print(f'| {label_title} | pass | {baseline_title} (ms) | {candidate_title} (ms) | '
        f'{baseline_title} / {candidate_title} |')
  print('| --- | --- | ---: | ---: | ---: |')


def print_ratio_rows(label, times, baseline, candidate, passes):
  """One Markdown row per pass of `times` ({(form, pass): seconds}): label, pass, the two
  forms' milliseconds and baseline / candidate."""
  for kind in passes:
    t_base, t_cand = times[baseline, kind], times[candidate, kind]
    print(f'| {label} | {kind} | {t_base * 1e3:.1f} | {t_cand * 1e3:.1f} | '
          f'{t_base / t_cand:.2f} |', flush=True)
