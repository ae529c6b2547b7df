"""Shared by the benchmarks: median wall times of repeated compiled calls, and the compiler
option under which XLA:CPU's memory analysis sees every buffer."""

import statistics
import time

import jax

# XLA:CPU hands some fusions to the YNNPACK library, whose internal buffers its compile-time
# memory analysis does not report; an empty list of fusion types turns them off, so
# `memory_analysis()` counts all temporaries.
NO_LIBRARY_FUSIONS = {'xla_cpu_experimental_ynn_fusion_type': ''}


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
