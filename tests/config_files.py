"""The config files of the repository: which are old names kept working (aliases),
and how deep a config's chain of the repository's own ``_base_`` files goes."""
import ast
import glob
import os.path as osp
from typing import List

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG_ROOT = osp.join(REPO_ROOT, 'configs')


def config_files(folder: str) -> List[str]:
    """``configs/<folder>/*.py``, sorted."""
    return sorted(glob.glob(osp.join(CONFIG_ROOT, folder, '*.py')))


def own_bases(path: str) -> List[str]:
    """The ``_base_`` files of ``path`` that are in this repository (not ``pkg::``)."""
    with open(path) as f:
        tree = ast.parse(f.read())
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and getattr(node.targets[0], 'id', None) == '_base_'):
            bases = ast.literal_eval(node.value)
            bases = [bases] if isinstance(bases, str) else bases
            return [osp.normpath(osp.join(osp.dirname(path), b))
                    for b in bases if '::' not in b]
    return []


def is_alias(path: str) -> bool:
    """An old config name kept working: its only statement is ``_base_ = ['./new.py']``."""
    with open(path) as f:
        body = ast.parse(f.read()).body
    if len(body) != 1 or not isinstance(body[0], ast.Assign):
        return False
    bases = ast.literal_eval(body[0].value)
    return isinstance(bases, list) and len(bases) == 1 and bases[0].startswith('./')


def own_depth(path: str) -> int:
    """How many levels of this repository's ``_base_`` files lie below ``path``."""
    return max((1 + own_depth(base) for base in own_bases(path)), default=0)
