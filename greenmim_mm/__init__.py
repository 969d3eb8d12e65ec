"""greenmim_mm: GreenMIM (visible-only masked image modeling for hierarchical ViTs)
as an OpenMMLab plug-in.

``import greenmim_mm`` (or ``custom_imports=dict(imports=['greenmim_mm'])`` in a
config) registers the backbones, necks, algorithm, transforms and hooks into the
mmpretrain and mmdet registries and applies the named stack fixes of
:mod:`greenmim_mm.engine.compat` once; it changes nothing else in the host program (no
warning filters, no logging set-up). The tools' layer is :mod:`greenmim_cli`, the
benchmarks and experiments are ``greenmim_lab`` (in the repository, not installed).
"""
from .version import __version__
from .engine import compat  # noqa: F401  (first: checkpoint loading under torch>=2.6)
from . import datasets, engine, models  # noqa: F401,E402  (registration side effects)

__all__ = ['__version__']
