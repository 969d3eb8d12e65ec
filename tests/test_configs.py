"""The config tree: short variants over shallow ``_base_`` files, and every earlier
config name still working as an alias listed in the README."""
import os.path as osp
import re

import pytest
from mmengine.config import Config

from config_files import REPO_ROOT, config_files, is_alias, own_bases, own_depth

FOLDERS = ('pretrain', 'classification', 'detection')
CONFIGS = [p for folder in FOLDERS for p in config_files(folder)]
ALIASES = [p for p in CONFIGS if is_alias(p)]


def readme_renames():
    """The README's ``| `old` | `new` |`` rows (section "Config names")."""
    with open(osp.join(REPO_ROOT, 'README.md')) as f:
        return re.findall(r'^\| `(configs/\S+\.py)` \| `(configs/\S+\.py)` \|$',
                          f.read(), flags=re.M)


def rel(path: str) -> str:
    return osp.relpath(path, REPO_ROOT)


@pytest.mark.parametrize('path', [p for p in CONFIGS if not is_alias(p)], ids=rel)
def test_at_most_two_levels_of_own_bases(path):
    """DESIGN: ``_base_`` configs no more than two levels deep (mmpretrain's and mmdet's
    own bases, ``pkg::...``, do not count)."""
    assert own_depth(path) <= 2


def test_readme_lists_every_alias():
    assert sorted(old for old, _ in readme_renames()) == sorted(map(rel, ALIASES))


@pytest.mark.parametrize('old, new', readme_renames(), ids=lambda p: osp.basename(p))
def test_alias_inherits_its_new_name(old, new):
    """The old name is one line, ``_base_ = ['./<new name>']``: it adds nothing."""
    assert is_alias(osp.join(REPO_ROOT, old)) and not is_alias(osp.join(REPO_ROOT, new))
    assert own_bases(osp.join(REPO_ROOT, old)) == [osp.join(REPO_ROOT, new)]


def test_the_promised_command_still_resolves_to_the_paper_config():
    """``tools/dist_train.sh configs/pretrain/greenmim_swin_b.py 8`` trains what
    the new name does."""
    old = Config.fromfile(osp.join(REPO_ROOT, 'configs/pretrain/greenmim_swin_b.py'))
    new = Config.fromfile(osp.join(
        REPO_ROOT, 'configs/pretrain/greenmim_swin-base-w7_8xb256-amp-coslr-800e_in1k.py'))
    assert old.to_dict() == new.to_dict()
