"""Configs by file path or from the installed package: ``greenmim_mm::pretrain/NAME.py``.

The configs ship inside the package as mmpretrain ships its own, under
``greenmim_mm/.mim/configs`` (a link to the repository's ``configs/`` in a source
checkout, a copy in a wheel), so the tools run from any directory after ``pip install``.
"""
import os.path as osp

from greenmim_mm.errors import UsageError

SCOPE = 'greenmim_mm::'


def installed_config_root() -> str:
    """The ``configs`` folder of the installed ``greenmim_mm`` package."""
    import greenmim_mm
    return osp.join(osp.dirname(osp.abspath(greenmim_mm.__file__)), '.mim', 'configs')


def resolve_config(path: str) -> str:
    """The file of the config ``path``: a file path as it is, ``greenmim_mm::REL`` the
    installed config ``REL`` (e.g. ``greenmim_mm::pretrain/NAME.py``).

    Raises:
        UsageError: neither names a file.
    """
    if path.startswith(SCOPE):
        relative = path[len(SCOPE):].lstrip('/')
        if relative.startswith('configs/'):  # the repository's path, accepted as well
            relative = relative[len('configs/'):]
        installed = osp.join(installed_config_root(), relative)
        if osp.isfile(installed):
            return installed
        raise UsageError(f'no installed config {path}; the installed ones are under '
                         f'{installed_config_root()} (e.g. {SCOPE}pretrain/'
                         'greenmim_swin-demo-w4_1xb16-400it_photos-128px.py)')
    if osp.isfile(path):
        return path
    raise UsageError(f'config file not found: {path}; give the path of a .py file under '
                     f'configs/, or an installed config as {SCOPE}pretrain/NAME.py')
