"""Every convertible architecture, keyed by the `--arch` name.

To add one: write a key-map module (see resnet.py) that returns an `Arch`, and list it here.
"""

from flanet_jax.convert.core import Arch
from flanet_jax.convert.errors import ConversionError
from flanet_jax.convert.flanet import flanet_arch
from flanet_jax.convert.hrnet import hrnet_arch
from flanet_jax.convert.resnet import backbone_arch
from flanet_jax.convert.shufflenet import shufflenet_arch

ARCHS: dict[str, Arch] = {a.name: a for a in (
    backbone_arch(18, deep_stem=False),
    backbone_arch(50, deep_stem=False),
    backbone_arch(101, deep_stem=False),
    backbone_arch(50, deep_stem=True),
    backbone_arch(101, deep_stem=True),
    hrnet_arch('hrnet_w18_small'),
    hrnet_arch('hrnet_w18'),
    hrnet_arch('hrnet_w32'),
    hrnet_arch('hrnet_w48'),
    shufflenet_arch(),
    flanet_arch(50),
    flanet_arch(101),
)}


def get_arch(name: str) -> Arch:
  if name not in ARCHS:
    raise ConversionError(f'unknown arch {name!r}; choose one of {sorted(ARCHS)}')
  return ARCHS[name]
