"""The converter from a clone without installing: the same as `flanet-jax-convert`.

  python scripts/convert_torch_weights.py SRC.pth DST --arch ARCH
"""

from flanet_jax.convert import cli

if __name__ == '__main__':
  cli.run()
