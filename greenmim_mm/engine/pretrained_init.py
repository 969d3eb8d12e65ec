"""``init_cfg=dict(type='GreenMIMPretrained', checkpoint=..., prefix='backbone.')``: load
pretrained backbone weights and *fail* when they do not fit.

mmengine's ``Pretrained`` initializer loads with ``strict=False``: a checkpoint of
another architecture (Swin-B weights in a Swin-T config, a wrong ``prefix``) only logs a
warning, and training silently starts from random weights. This initializer reads the
checkpoint with mmengine's loader (``_load_checkpoint``: local files, URLs, the
``torch.load`` of :mod:`greenmim_mm.engine.compat`), loads it with the module's own
``load_state_dict`` (so the stock backbones' load hooks still run: mmpretrain's Swin
resizes ``relative_position_bias_table`` on a window change and drops the checkpoint's
index buffer), and then raises :class:`CheckpointMismatchError` naming every unexpected
key, shape mismatch and missing key, with the architecture the checkpoint looks like
next to the configured one (the text is built in :mod:`greenmim_mm.engine.load_report`).

What a downstream backbone legitimately lacks in a pretraining checkpoint is listed
explicitly (``allowed_missing``, regular expressions on the names below ``prefix``):

* ``relative_position_index`` (and Swin V2's ``relative_coords_table``) buffers:
  rebuilt by the backbone for its own window (Swin V2's load hook drops both);
* ``norm{i}`` (Swin), ``norm_after_stage{i}`` (Twins-SVT) and ``out_norm{i}``
  (:class:`~greenmim_mm.models.backbones.SVTWithOutNorms`) output norms of stages the
  pretraining did not output (it outputs only the last stage): a detector with
  ``out_indices=(0, 1, 2, 3)`` starts those at their default values.

The initializer is registered in mmengine's root ``WEIGHT_INITIALIZERS``, so
``type='GreenMIMPretrained'`` resolves under ``default_scope='mmpretrain'`` and
``default_scope='mmdet'`` alike (their registries are children of the root one).
"""
import os.path as osp
import re
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from mmengine.logging import print_log
from mmengine.model.weight_init import PretrainedInit, update_init_info
from mmengine.registry import WEIGHT_INITIALIZERS
from mmengine.runner.checkpoint import _load_checkpoint
from torch import nn

from ..errors import CheckpointMismatchError
from .load_report import LoadReport, mismatch_message

DEFAULT_ALLOWED_MISSING: Tuple[str, ...] = (
    r'(^|\.)relative_position_index$',  # buffer, rebuilt for the configured window
    r'(^|\.)relative_coords_table$',  # Swin V2's buffer, rebuilt likewise
    r'^norm\d+\.(weight|bias)$',  # Swin output norm of a stage pretraining did not output
    r'^norm_after_stage\d+\.(weight|bias)$',  # the same for Twins-SVT
    r'^out_norm\d+\.(weight|bias)$',  # the same for SVTWithOutNorms (off the path)
)


def load_and_check(module: nn.Module, state_dict: Dict[str, torch.Tensor]) -> LoadReport:
    """Load ``state_dict`` into ``module`` as ``strict=False`` does, and report misfits.

    ``module.load_state_dict`` walks the module tree and runs every module's load
    pre-hooks; one more pre-hook per module, registered after the module's own (so it
    sees the entries they resized), sets aside the entries whose shape differs from the
    module's tensor. So every tensor that fits is copied, nothing raises half-way, and
    each shape mismatch is reported with both shapes as the module's hooks left them
    (a bias table that a hook resized is not a mismatch).
    """
    report = LoadReport()

    def set_aside_mismatches(mod: nn.Module, entries: Dict[str, torch.Tensor],
                             prefix: str, *args) -> None:
        own = {**mod._parameters, **{n: b for n, b in mod._buffers.items()
                                     if n not in mod._non_persistent_buffers_set}}
        for name, tensor in own.items():
            key = prefix + name
            if (tensor is not None and key in entries
                    and entries[key].shape != tensor.shape):
                report.mismatched.append(
                    (key, tuple(entries.pop(key).shape), tuple(tensor.shape)))

    handles = [m.register_load_state_dict_pre_hook(set_aside_mismatches)
               for m in module.modules()]
    try:
        incompatible = module.load_state_dict(state_dict, strict=False)
    except RuntimeError as error:  # torch's other errors, e.g. a failed copy
        report.other_errors = [line.strip() for line in str(error).splitlines()[1:]]
        return report
    finally:
        for handle in handles:
            handle.remove()
    set_aside = {key for key, _, _ in report.mismatched}
    report.missing = [k for k in incompatible.missing_keys if k not in set_aside]
    report.unexpected = list(incompatible.unexpected_keys)
    absent = set(report.missing) | set_aside
    report.loaded = [k for k in module.state_dict() if k not in absent]
    return report


def _strip_prefix(state_dict: Dict[str, torch.Tensor],
                  prefix: str) -> 'OrderedDict[str, torch.Tensor]':
    """The entries under ``prefix`` with it removed, version metadata included."""
    stripped = OrderedDict(
        (k[len(prefix):], v) for k, v in state_dict.items() if k.startswith(prefix))
    metadata = getattr(state_dict, '_metadata', None)
    if metadata is not None:
        stripped._metadata = OrderedDict(  # type: ignore[attr-defined]
            (k[len(prefix):] if k.startswith(prefix) else '', v)
            for k, v in metadata.items() if k.startswith(prefix) or k == prefix[:-1])
    return stripped


@WEIGHT_INITIALIZERS.register_module(name='GreenMIMPretrained')
class StrictPretrainedInit(PretrainedInit):
    """Load a pretrained checkpoint into a module; raise if it does not fit.

    Args:
        checkpoint: path (or URL) of the checkpoint; a Runner checkpoint
            (``state_dict`` inside) or a bare state dict.
        prefix: the sub-module of the checkpoint to load, e.g. ``'backbone.'``;
            ``None`` loads the whole state dict.
        map_location: as ``torch.load``.
        allowed_missing: regular expressions (``re.search``) on module-relative names
            that may be absent from the checkpoint; they keep their initial values
            and are logged. Defaults to :data:`DEFAULT_ALLOWED_MISSING`.
        allowed_unexpected: regular expressions on checkpoint names (below
            ``prefix``) that the module may ignore. Defaults to none.

    Raises:
        CheckpointMismatchError: on any unexpected key, shape mismatch or missing key
            that is not allowed (before the first training step: the run stops).
        FileNotFoundError: when ``checkpoint`` is empty or not a file.
    """

    def __init__(self, checkpoint: str, prefix: Optional[str] = None,
                 map_location: str = 'cpu',
                 allowed_missing: Sequence[str] = DEFAULT_ALLOWED_MISSING,
                 allowed_unexpected: Sequence[str] = ()) -> None:
        super().__init__(checkpoint, prefix=prefix, map_location=map_location)
        if self.prefix is not None and not self.prefix.endswith('.'):
            self.prefix += '.'
        self.allowed_missing = list(allowed_missing)
        self.allowed_unexpected = list(allowed_unexpected)

    def _source(self) -> str:
        where = f" (prefix '{self.prefix}')" if self.prefix else ''
        return f'checkpoint {self.checkpoint}{where}'

    def read_state_dict(self) -> Dict[str, torch.Tensor]:
        """The checkpoint's tensors below ``prefix``, names relative to it."""
        if not self.checkpoint:
            raise FileNotFoundError(
                'no pretrained checkpoint given: set '
                'model.backbone.init_cfg.checkpoint=PRETRAIN.pth (--cfg-options)')
        if '://' not in self.checkpoint and not osp.isfile(self.checkpoint):
            raise FileNotFoundError(
                f'pretrained checkpoint not found: {self.checkpoint} (set '
                'model.backbone.init_cfg.checkpoint=PRETRAIN.pth with --cfg-options)')
        checkpoint = _load_checkpoint(self.checkpoint, map_location=self.map_location)
        state_dict = checkpoint.get('state_dict', checkpoint)
        if self.prefix is None:
            return state_dict
        stripped = _strip_prefix(state_dict, self.prefix)
        if not stripped:
            heads = sorted({k.split('.')[0] + '.' for k in state_dict})
            raise CheckpointMismatchError(
                f'{self._source()} has no key starting with {self.prefix!r}; its keys '
                f'start with {", ".join(heads[:8])}. A backbone-only checkpoint '
                'loads with prefix=None.')
        return stripped

    def _split_allowed(self, report: LoadReport) -> Tuple[LoadReport, List[str]]:
        """The report without the allowed keys, and the allowed missing ones."""
        def allowed(name: str, patterns: Sequence[str]) -> bool:
            return any(re.search(p, name) for p in patterns)

        new = [k for k in report.missing if allowed(k, self.allowed_missing)]
        report.missing = [k for k in report.missing if k not in new]
        report.unexpected = [k for k in report.unexpected
                             if not allowed(k, self.allowed_unexpected)]
        return report, new

    def __call__(self, module: nn.Module) -> None:
        state_dict = self.read_state_dict()
        print_log(f'load {self.prefix or "all keys"} of {self.checkpoint} into '
                  f'{type(module).__name__} (strict)', logger='current')
        ckpt_shapes = {k: tuple(v.shape) for k, v in state_dict.items()
                       if isinstance(v, torch.Tensor)}
        report, new = self._split_allowed(load_and_check(module, state_dict))
        if not report.fits:
            raise CheckpointMismatchError(
                mismatch_message(self._source(), module, report, ckpt_shapes))
        print_log(f'loaded {len(report.loaded)} tensors from {self._source()}'
                  + (f'; not in the checkpoint, kept at their initial values '
                     f'(allowed): {", ".join(new)}' if new else ''), logger='current')

        # mmengine runs a child's own init_weights *after* its parent's init_cfg unless
        # the type is literally 'Pretrained' (base_module.py); mark the children as
        # initialised so that their default init (e.g. trunc_normal_ of the bias
        # tables) does not overwrite what was just loaded.
        for child in module.modules():
            if child is not module and hasattr(child, '_is_init'):
                child._is_init = True
        if hasattr(module, '_params_init_info'):
            update_init_info(module, init_info=self._get_init_info())
