"""Files: read a published checkpoint safely, write the converted one atomically."""
import argparse
import os
import os.path as osp
import re
import tempfile
from datetime import datetime
from typing import Any, Mapping, Optional

import torch
from torch import Tensor

from ...fileio import commit
from .common import OfficialCheckpointError, list_keys, plural
from .convert import Conversion, convert_official


def load_official_checkpoint(path: str) -> Any:
    """``torch.load(path)`` with ``weights_only``: published checkpoints also pickle
    their ``argparse.Namespace`` of training arguments, which is allowed explicitly.

    Raises:
        OfficialCheckpointError: ``path`` is not a file, or not a checkpoint the safe
            loader reads (one line, with what to do).
    """
    if not osp.isfile(path):
        raise OfficialCheckpointError(
            f'{path} ' + ('is a directory, not a checkpoint file' if osp.isdir(path)
                          else 'does not exist'))
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location='cpu', weights_only=True)
    except Exception as error:  # torch raises many types for a file it cannot read
        text = str(error)
        refused = re.search(r'Unsupported global: GLOBAL (\S+)', text)
        if refused:
            raise OfficialCheckpointError(
                f'{path} pickles a {refused.group(1)}, which torch.load(weights_only=True) '
                'refuses; if you trust the file, re-save its state dict: '
                "torch.save({'model': torch.load(SRC, weights_only=False)['model']}, NEW)"
            ) from error
        reason = re.search(r'WeightsUnpickler error:\s*(\S[^\n]*)', text)
        lines = [line for line in text.splitlines() if line.strip()]
        detail = reason.group(1) if reason else (lines[0] if lines else '')
        raise OfficialCheckpointError(
            f'{path} is not a PyTorch checkpoint ({type(error).__name__}: {detail.strip()})'
        ) from error


def checkpoint_state_dict(checkpoint: Any, path: str = 'the checkpoint'
                          ) -> Mapping[str, Tensor]:
    """The model state dict inside a loaded published checkpoint.

    Published checkpoints are ``{'model': state_dict, 'optimizer': ..., 'epoch': ...,
    'scaler': ..., 'args': ...}``; a bare state dict or ``{'state_dict': ...}`` is
    accepted too.
    """
    if not isinstance(checkpoint, Mapping):
        raise OfficialCheckpointError(
            f'{path} holds a {type(checkpoint).__name__}, not a checkpoint dict '
            "({'model': state_dict, ...})")
    for key in ('model', 'state_dict'):
        if isinstance(checkpoint.get(key), Mapping):
            return checkpoint[key]
    if checkpoint and all(isinstance(v, Tensor) for v in checkpoint.values()):
        return checkpoint
    raise OfficialCheckpointError(
        f"{path} has no state dict: expected a 'model' entry (published GreenMIM) or "
        f'a bare state dict, got entries {sorted(map(str, checkpoint))[:10]}')


def save_atomic(obj: dict, dst: str) -> None:
    """Write ``obj`` to a temporary file next to ``dst``, then rename it to ``dst``
    (``dst`` is never left half-written; a failed write leaves no file behind)."""
    if osp.isdir(dst):
        raise OfficialCheckpointError(f'{dst} is a directory: give the output file name')
    folder = osp.dirname(osp.abspath(dst))
    try:
        os.makedirs(folder, exist_ok=True)
        handle, tmp = tempfile.mkstemp(prefix='.' + osp.basename(dst) + '.', dir=folder)
    except OSError as error:
        raise OfficialCheckpointError(f'cannot write {dst}: {error.strerror}') from error
    os.close(handle)
    try:
        torch.save(obj, tmp)
        commit(tmp, dst)  # fsync, then one rename
    except BaseException as error:
        if osp.exists(tmp):
            os.remove(tmp)
        if isinstance(error, OSError):
            raise OfficialCheckpointError(f'cannot write {dst}: {error}') from error
        raise


def check_fits_config(state_dict: Mapping[str, Tensor], config: str) -> None:
    """Raise unless ``state_dict`` has exactly the keys and shapes of the model of the
    pretraining ``config``: what ``load_from`` needs, checked at conversion rather than
    when a training run loads it."""
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS

    if not osp.isfile(config):
        raise OfficialCheckpointError(f'config file not found: {config}')
    cfg = Config.fromfile(config)
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope') or 'mmpretrain'):
        model = MODELS.build(cfg.model)
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in state_dict.items()}
    found = []
    missing, unexpected = sorted(set(own) - set(theirs)), sorted(set(theirs) - set(own))
    if missing:
        found.append(f'{plural(len(missing), "missing key")}: {list_keys(missing)}')
    if unexpected:
        found.append(f'{plural(len(unexpected), "unexpected key")}: '
                     f'{list_keys(unexpected)}')
    mismatched = [f'{k} {theirs[k]} vs {own[k]}' for k in sorted(set(own) & set(theirs))
                  if own[k] != theirs[k]]
    if mismatched:
        shown = ', '.join(mismatched[:4]) + (' ...' if len(mismatched) > 4 else '')
        found.append(f'{plural(len(mismatched), "shape mismatch", "shape mismatches")} '
                     f'(converted vs configured): {shown}')
    if found:
        raise OfficialCheckpointError(
            f'the converted checkpoint does not fit the model of {config}: '
            + '; '.join(found))


def convert_official_checkpoint(src: str, dst: str, merge_layout: Optional[str] = None,
                                config: Optional[str] = None) -> Conversion:
    """Convert the published checkpoint file ``src`` into an mmengine checkpoint
    ``dst`` (``{'state_dict': ..., 'meta': ...}``): ``load_from=dst`` resumes
    pretraining, ``init_cfg=dict(type='GreenMIMPretrained', checkpoint=dst,
    prefix='backbone.')`` fine-tunes. With ``config``, the result must also fit that
    pretraining config's model exactly (:func:`check_fits_config`).

    Raises:
        OfficialCheckpointError: anything wrong with ``src``, ``dst`` or the fit
            (one line); nothing is written then.
    """
    if osp.abspath(src) == osp.abspath(dst):
        raise OfficialCheckpointError(
            f'the output {dst} is the source checkpoint: give another file name')
    official = checkpoint_state_dict(load_official_checkpoint(src), src)
    try:
        conversion = convert_official(official, merge_layout)
    except OfficialCheckpointError as error:
        raise OfficialCheckpointError(f'{src}: {error}') from error
    if config is not None:
        check_fits_config(conversion.state_dict, config)
    meta = dict(converted_from=osp.abspath(src), converter='greenmim_official_to_mm',
                family=conversion.family, merge_layout=conversion.merge_layout,
                source_keys=len(official), time=datetime.now().isoformat())
    save_atomic(dict(state_dict=conversion.state_dict, meta=meta), dst)
    return conversion
