"""Checks of a merged config that the tools run before mmengine's ``Runner`` exists, so a
mistake is one line (:class:`UsageError`) and nothing is written: checkpoint files, the
schedule's lengths, batch sizes, checkpoint intervals, data folders and the geometry of
a GreenMIM pretraining run (crop, mask unit, windows)."""
import os.path as osp
from typing import Any, Optional, Sequence, Tuple

from mmengine.config import Config

from greenmim_mm.engine.checkpoint import checkpoint_problem
from greenmim_mm.errors import UsageError


def require_checkpoint(path: Optional[str], what: str,
                       fix: str = 'give a complete checkpoint file') -> None:
    """Raise :class:`UsageError` unless ``path`` (if given) is a complete checkpoint file
    (``fix``: what to do about a broken one).

    URLs (``https://``, ``open-mmlab://``, ...) are left to mmengine's loader.
    """
    if path is None or '://' in str(path):
        return
    if not osp.isfile(path):
        raise UsageError(f'{what} not found: {path}; check the path (training writes its '
                         'checkpoints into the work dir, e.g. iter_1000.pth)')
    problem = checkpoint_problem(path)
    if problem is not None:
        raise UsageError(f'{what} {path} is {problem}; {fix}')


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def check_schedule(cfg: Config) -> None:
    """At least one iteration/epoch, a batch of at least one image, a checkpoint interval
    that is not 0 (mmengine divides by it; -1 means never)."""
    train_cfg = cfg.get('train_cfg') or {}
    for key, unit in (('max_iters', 'iteration'), ('max_epochs', 'epoch')):
        value = train_cfg.get(key)
        if value is not None and not _positive_int(value):
            raise UsageError(f'train_cfg.{key}={value!r}: training needs at least one '
                             f'{unit}; set train_cfg.{key} to 1 or more')
    batch_size = (cfg.get('train_dataloader') or {}).get('batch_size')
    if batch_size is not None and not _positive_int(batch_size):
        raise UsageError(f'train_dataloader.batch_size={batch_size!r}: a batch needs at '
                         'least one image; set it to 1 or more')
    checkpoint = (cfg.get('default_hooks') or {}).get('checkpoint') or {}
    if checkpoint.get('interval') == 0:
        raise UsageError('default_hooks.checkpoint.interval=0: a checkpoint every 0 steps '
                         'is not a schedule; set it to 1 or more (-1: never)')


def check_data_roots(cfg: Config, loaders: Sequence[str]) -> None:
    """Every ``<loader>.dataset.data_root`` that names a local folder exists."""
    for name in loaders:
        dataset = (cfg.get(name) or {}).get('dataset') or {}
        root = dataset.get('data_root') if isinstance(dataset, dict) else None
        if isinstance(root, str) and root and '://' not in root and not osp.isdir(root):
            flag = ('--data-root DIR' if name == 'train_dataloader' else
                    f'--cfg-options {name}.dataset.data_root=DIR')
            raise UsageError(f'{name}.dataset.data_root not found: {root}; put the data '
                             f'there or give its folder with {flag}')


def set_data_root(cfg: Config, folder: str) -> None:
    """``--data-root``: the folder of the training set (``train_dataloader.dataset``)."""
    dataset = (cfg.get('train_dataloader') or {}).get('dataset')
    if not isinstance(dataset, dict):
        raise UsageError('--data-root: the config has no train_dataloader.dataset; set the '
                         'data with --cfg-options')
    dataset['data_root'] = folder


def _crop(cfg: Config) -> Optional[Tuple[str, Any, Tuple[int, int]]]:
    """``(its --cfg-options key, its value, (height, width))`` of the training crop: the
    last ``*RandomResizedCrop`` of ``train_dataloader.dataset.pipeline`` (mmpretrain's
    ``scale``: an int, or ``(h, w)``); None without one."""
    dataset = (cfg.get('train_dataloader') or {}).get('dataset') or {}
    pipeline = dataset.get('pipeline') if isinstance(dataset, dict) else None
    found = None
    for index, transform in enumerate(pipeline or []):
        kind = str(transform.get('type', '')).split('.')[-1]
        scale = transform.get('scale')
        if kind.endswith('RandomResizedCrop') and scale is not None:  # Tensor-, Deferred-
            hw = (scale, scale) if isinstance(scale, int) else tuple(scale)[:2]
            found = (f'train_dataloader.dataset.pipeline.{index}.scale', scale, hw)
    return found


def _mask_unit(cfg: Config) -> Optional[int]:
    """``mask_unit`` of the pipeline's ``GreenMIMMaskGenerator`` (None: no GreenMIM run)."""
    dataset = (cfg.get('train_dataloader') or {}).get('dataset') or {}
    for transform in (dataset.get('pipeline') if isinstance(dataset, dict) else None) or []:
        if str(transform.get('type', '')).split('.')[-1] == 'GreenMIMMaskGenerator':
            return transform.get('mask_unit', 32)
    return None


def check_geometry(cfg: Config) -> None:
    """A GreenMIM pretraining run's crop fits its mask unit, its head and every window
    of its backbone (the backbone is built on the meta device to ask it): the mistakes
    that otherwise end the first step with a traceback."""
    unit, crop = _mask_unit(cfg), _crop(cfg)
    if unit is None or crop is None:
        return
    key, value, (height, width) = crop
    if not all(isinstance(side, int) and side > 0 for side in (height, width)):
        raise UsageError(f'{key}={value!r}: a crop size is a positive int or (h, w) of '
                         'ints; e.g. 224 or (224, 224)')
    if height % unit or width % unit:
        fix = (max(unit, round(height / unit) * unit), max(unit, round(width / unit) * unit))
        shown = fix[0] if isinstance(value, int) else str(fix).replace(' ', '')
        raise UsageError(f'{key}={value!r}: the crop {height}x{width} is not a multiple '
                         f'of the {unit} px mask unit (the encoder\'s stride); set '
                         f'{key}={shown}')
    model = cfg.get('model') or {}
    head = str((model.get('head') or {}).get('type', '')).split('.')[-1]
    if head == 'MAEPretrainHead' and height != width:
        raise UsageError(f'{key}={value!r}: mmpretrain\'s MAEPretrainHead patchifies '
                         f'square images only, the crop is {height}x{width}; use a square '
                         f'crop, e.g. {key}={max(height, width)}')
    backbone = model.get('backbone')
    if not isinstance(backbone, dict):
        return
    from greenmim_mm.datasets.collate import collate_geometry
    try:
        collate_geometry(dict(backbone), (height, width))
    except (ValueError, NotImplementedError) as error:
        window = backbone.get('window_size')
        raise UsageError(f'{key}={value!r} does not fit model.backbone'
                         f'{"" if window is None else f" (window_size={window})"}: '
                         f'{error}') from error
    except TypeError:  # not a visible-only backbone: the Runner says so
        return
