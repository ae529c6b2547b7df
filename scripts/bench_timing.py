"""Shared by the benchmark scripts: the median wall time of repeated compiled train steps."""

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
