"""What ``tools/train.py`` and ``tools/test.py`` share: config checks that fail before
anything is written, and distributed set-up that also works on machines without GPUs.

Every check here runs *before* the mmengine ``Runner`` exists, so a bad argument never
leaves a half-written work dir behind.
"""
import difflib
import os
import os.path as osp
from typing import Any, Dict, Optional

import torch
import torch.distributed as torch_dist
from mmengine.config import Config


class UsageError(ValueError):
    """A bad command-line argument; the tools print it as one line and exit 2."""


def load_config(path: str, cfg_options: Optional[Dict[str, Any]] = None) -> Config:
    """Read a config and merge ``--cfg-options``, rejecting keys that do not exist;
    then bind ``greenmim_collate`` to the model's backbone (one source of geometry)."""
    from ..datasets.collate import bind_collate_backbone
    if not osp.isfile(path):
        raise UsageError(f'config file not found: {path} '
                         '(give the path of a .py file under configs/)')
    cfg = Config.fromfile(path)
    if cfg_options:
        for key in cfg_options:
            _check_key_exists(cfg, key)
        cfg.merge_from_dict(cfg_options)
    bind_collate_backbone(cfg)
    return cfg


def _check_key_exists(cfg: Config, dotted_key: str) -> None:
    """Raise ``UsageError`` unless ``dotted_key`` (``a.b.0.c``) names an existing entry."""
    node: Any = cfg
    walked = []
    for part in dotted_key.split('.'):
        if isinstance(node, (list, tuple)) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, (dict, Config)) and part in node:  # a Config is not a dict
            node = node[part]
        else:
            where = '.'.join(walked) or 'the top level'
            choices = list(node.keys()) if isinstance(node, (dict, Config)) else []
            close = difflib.get_close_matches(part, choices, n=3)
            hint = f'; did you mean {", ".join(close)}?' if close else ''
            raise UsageError(
                f'--cfg-options key "{dotted_key}" does not exist: no "{part}" in '
                f'{where}{hint} (add new keys in a config that inherits this one)')
        walked.append(part)


def require_file(path: Optional[str], what: str) -> None:
    """Raise ``UsageError`` if ``path`` is given and is not a readable file."""
    if path is not None and not osp.isfile(path):
        raise UsageError(f'{what} not found: {path} (check the path: training writes '
                         'its checkpoints into the work dir, e.g. iter_1000.pth)')


def default_work_dir(cfg: Config, config_path: str, work_dir: Optional[str]) -> str:
    """CLI > config > ``./work_dirs/<config name>``, as in mmpretrain/mmdet."""
    if work_dir is not None:
        return work_dir
    if cfg.get('work_dir') is not None:
        return cfg.work_dir
    return osp.join('./work_dirs', osp.splitext(osp.basename(config_path))[0])


def setup_distributed(cfg: Config, launcher: str) -> None:
    """Make ``launcher='pytorch'`` (torchrun) work on CPU-only machines too.

    mmengine initialises the process group with ``torch.cuda.set_device`` and wraps the
    model in DDP with ``device_ids=[LOCAL_RANK]``; both fail without a GPU. On such a
    machine we initialise a gloo group ourselves (mmengine then skips its own
    ``init_dist``) and build the DDP wrapper with ``device_ids=None``.
    """
    if launcher == 'none' or torch.cuda.is_available():
        return
    cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})['backend'] = 'gloo'
    if not torch_dist.is_initialized():
        if launcher != 'pytorch':
            raise UsageError(f'--launcher {launcher} needs GPUs; on a CPU-only '
                             'machine use tools/dist_train.sh (torchrun, gloo)')
        torch_dist.init_process_group(backend='gloo')
    wrapper = cfg.get('model_wrapper_cfg') or dict(type='MMDistributedDataParallel')
    wrapper.setdefault('broadcast_buffers', False)
    wrapper.setdefault('find_unused_parameters', cfg.get('find_unused_parameters', False))
    wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper
    os.environ.setdefault('LOCAL_RANK', '0')
