"""Table 3 of the FLANet paper: the cost each attention block adds at C=512 on 96x96 features.

(ResNet-50 at 768x768, output stride 8.) For every block, from XLA's analyses of the compiled
forward pass (fp32, inference mode), without allocating anything for batch 8:
  GFLOPs   `cost_analysis()['flops']` at batch 1, of the attention alone and of the whole block;
  memory   `memory_analysis()` temp + output bytes of the attention alone, batch 1 and 8,
           compiled without XLA:CPU's YNNPACK library fusions, whose internal buffers the
           analysis does not report (with them, spatial NL would show no temporaries at all);
  time     measured CPU forward time of the attention alone at batch 1: the median of
           --repeats rounds, each round timing every block once, so drift hits all alike.
"The attention alone" is the block with its 3x3 conv-BN-ReLU `fuse` replaced by the identity
(a Flax method interceptor), which is what the paper's numbers count. Usage:
  python benchmarks/bench_attention.py [--repeats 5]      (prints a Markdown table)
"""

import argparse
import contextlib

import jax
import jax.numpy as jnp
import numpy as np

from measure import NO_LIBRARY_FUSIONS, round_robin_medians  # benchmarks/ is on sys.path
from flanet_jax import kernels
from flanet_jax.models.flanet import ATTENTION_BLOCKS, attention_only

CHANNELS, SIZE = 512, 96
# Paper, Table 3: added GFLOPs and memory (MB).
PAPER = {'fla': (19.37, 436), 'channel_nl': (9.66, 40), 'spatial_nl': (103.90, 1320),
         'dual_nl': (113.56, 1378), 'cs_nl': (113.56, 1378), 'rcca': (16.18, 174),
         'ema': (13.91, 98)}


def compile_block(name, batch, with_fuse, compiler_options=None):
  """(compiled forward, abstract variables) of block `name` on (batch, 96, 96, 512) fp32."""
  block = ATTENTION_BLOCKS[name](CHANNELS, ops=kernels.select('auto'))
  x = jax.ShapeDtypeStruct((batch, SIZE, SIZE, CHANNELS), jnp.float32)
  interceptor = contextlib.nullcontext() if with_fuse else attention_only()
  with interceptor:
    variables = jax.eval_shape(
        lambda: block.init(jax.random.key(0), jnp.zeros(x.shape), train=False))
    forward = jax.jit(lambda v, x: block.apply(v, x, train=False))
    return forward.lower(variables, x).compile(compiler_options), variables


def memory_mb(compiled):
  stats = compiled.memory_analysis()
  return (stats.temp_size_in_bytes + stats.output_size_in_bytes) / 2**20


def forward_seconds(compiled_blocks, repeats):
  """{name: median seconds} for {name: (compiled, abstract variables)}, timed round-robin."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(1, SIZE, SIZE, CHANNELS)), jnp.float32)
  runs = {}
  for name, (compiled, variables) in compiled_blocks.items():
    concrete = jax.tree.map(lambda s: jnp.asarray(rng.normal(0, 0.05, s.shape), s.dtype),
                            variables)
    runs[name] = lambda compiled=compiled, concrete=concrete: compiled(concrete, x)
  return round_robin_medians(runs, repeats)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--repeats', type=int, default=5)
  args = parser.parse_args()

  attention = {name: compile_block(name, 1, with_fuse=False) for name in PAPER}
  seconds = forward_seconds(attention, args.repeats)
  rows = []
  for name, (paper_gflops, paper_mb) in PAPER.items():
    block, _ = compile_block(name, 1, with_fuse=True)
    rows.append(dict(
        name=name, gflops=attention[name][0].cost_analysis()['flops'] / 1e9,
        block_gflops=block.cost_analysis()['flops'] / 1e9,
        mb1=memory_mb(compile_block(name, 1, False, NO_LIBRARY_FUSIONS)[0]),
        mb8=memory_mb(compile_block(name, 8, False, NO_LIBRARY_FUSIONS)[0]),
        seconds=seconds[name], paper_gflops=paper_gflops, paper_mb=paper_mb))

  fla = rows[0]
  header = ('| block | GFLOPs (paper) | GFLOPs with 3x3 fuse | memory MiB b=1 (paper MB) | '
            'memory MiB b=8 | CPU ms b=1 | time / FLA |')
  print(header)
  print('|' + ' --- |' * 7)
  for r in rows:
    print(f"| {r['name']} | {r['gflops']:.2f} ({r['paper_gflops']:.2f}) | "
          f"{r['block_gflops']:.2f} | {r['mb1']:.0f} ({r['paper_mb']}) | {r['mb8']:.0f} | "
          f"{1e3 * r['seconds']:.0f} | {r['seconds'] / fla['seconds']:.2f} |")


if __name__ == '__main__':
  main()
