"""``init_cfg=dict(type='GreenMIMPretrained', checkpoint=..., prefix='backbone.')``: load
pretrained backbone weights and *fail* when they do not fit.

mmengine's ``Pretrained`` initializer loads with ``strict=False``: a checkpoint of
another architecture (Swin-B weights in a Swin-T config, a wrong ``prefix``) only logs a
warning, and training silently starts from random weights. This initializer loads the
same way (through the module's own ``_load_from_state_dict``, so the stock backbones'
load hooks still run: mmpretrain's Swin resizes ``relative_position_bias_table`` on a
window change and drops the checkpoint's index buffer) and then raises
:class:`CheckpointMismatchError` naming every unexpected key, shape mismatch and missing
key, with the architecture the checkpoint looks like next to the configured one.

What a downstream backbone legitimately lacks in a pretraining checkpoint is listed
explicitly (``allowed_missing``, regular expressions on the names below ``prefix``):

* ``relative_position_index`` buffers: rebuilt by the backbone for its own window;
* ``norm{i}`` (Swin) and ``norm_after_stage{i}`` (Twins-SVT) output norms of stages the
  pretraining did not output (it outputs only the last stage): a detector with
  ``out_indices=(0, 1, 2, 3)`` starts those at their default values.

The initializer is registered in mmengine's root ``WEIGHT_INITIALIZERS``, so
``type='GreenMIMPretrained'`` resolves under ``default_scope='mmpretrain'`` and
``default_scope='mmdet'`` alike (their registries are children of the root one).

Importing this module also repairs the window change itself: mmpretrain 1.2 resizes the
bias tables with ``scipy.interpolate.interp2d``, which SciPy 1.14 removed (every window
change on load raised ``NotImplementedError``).
:func:`resize_relative_position_bias_table` is the same resize with ``RectBivariateSpline``, SciPy's documented drop-in for
``interp2d`` on a regular grid (same cubic spline through the points, same clamping
outside them); it replaces mmpretrain's function where Swin and BEiT call it.
"""
import os.path as osp
import re
from collections import OrderedDict, defaultdict
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from mmengine.logging import print_log
from mmengine.model.weight_init import PretrainedInit, update_init_info
from mmengine.registry import WEIGHT_INITIALIZERS
from mmengine.runner.checkpoint import _load_checkpoint
from torch import nn

DEFAULT_ALLOWED_MISSING: Tuple[str, ...] = (
    r'(^|\.)relative_position_index$',  # buffer, rebuilt for the configured window
    r'^norm\d+\.(weight|bias)$',  # Swin output norm of a stage pretraining did not output
    r'^norm_after_stage\d+\.(weight|bias)$',  # the same for Twins-SVT
)

_SIZE_MISMATCH = 'size mismatch for'  # torch's wording in ``_load_from_state_dict``


def resize_relative_position_bias_table(src_shape: int, dst_shape: int,
                                        table: torch.Tensor,
                                        num_head: int) -> torch.Tensor:
    """mmpretrain's bias-table resize (``(src_shape**2, num_head)`` ->
    ``(dst_shape**2, num_head)``, ``src_shape = 2 * window - 1``) without ``interp2d``.

    As upstream: the source offsets are spread on a geometric progression that reaches
    about ``dst_shape // 2``, and each head's table is interpolated by a bicubic spline
    through them at the integer target offsets.
    """
    from scipy.interpolate import RectBivariateSpline

    left, right = 1.01, 1.5  # ratio q of the progression, found by bisection
    while right - left > 1e-6:
        q = (left + right) / 2.0
        if (1.0 - q**(src_shape // 2)) / (1.0 - q) > dst_shape // 2:
            right = q
        else:
            left = q
    dis, cur = [], 1.0
    for i in range(src_shape // 2):
        dis.append(cur)
        cur += q**(i + 1)
    src = np.array([-d for d in reversed(dis)] + [0.0] + dis)  # src_shape offsets
    t = dst_shape // 2.0
    dst = np.arange(-t, t + 0.1, 1.0)  # dst_shape offsets
    heads = []
    for i in range(num_head):
        z = table[:, i].view(src_shape, src_shape).float().cpu().numpy()  # rows: y
        spline = RectBivariateSpline(src, src, z, kx=3, ky=3, s=0)
        heads.append(torch.from_numpy(spline(dst, dst)).float().reshape(-1, 1))
    return torch.cat(heads, dim=-1).to(table.device)


def _use_spline_resize() -> None:
    """Point mmpretrain's Swin and BEiT load hooks at the resize above."""
    from mmpretrain.models import utils
    from mmpretrain.models.backbones import beit, swin_transformer
    from mmpretrain.models.utils import embed
    for module in (utils, embed, swin_transformer, beit):
        module.resize_relative_position_bias_table = resize_relative_position_bias_table


_use_spline_resize()


class CheckpointMismatchError(RuntimeError):
    """A pretrained checkpoint whose keys or shapes do not fit the configured module."""


class LoadReport:
    """What loading a state dict into a module found (names relative to the module)."""

    def __init__(self) -> None:
        self.missing: List[str] = []
        self.unexpected: List[str] = []
        self.mismatched: List[Tuple[str, Tuple[int, ...], Tuple[int, ...]]] = []
        self.other_errors: List[str] = []
        self.loaded: List[str] = []


def load_and_check(module: nn.Module, state_dict: Dict[str, torch.Tensor]) -> LoadReport:
    """Load ``state_dict`` into ``module`` as ``strict=False`` does, and report misfits.

    Unlike ``nn.Module.load_state_dict`` this never raises half-way: every tensor that
    fits is copied, and shape mismatches are reported with both shapes *after* the
    module's load pre-hooks ran (a bias table that a hook resized is not a mismatch).
    """
    metadata = getattr(state_dict, '_metadata', None)
    state_dict = OrderedDict(state_dict)  # the hooks edit this copy in place
    report = LoadReport()
    errors: List[str] = []

    def load(mod: nn.Module, prefix: str) -> None:
        local_metadata = {} if metadata is None else metadata.get(prefix[:-1], {})
        mod._load_from_state_dict(state_dict, prefix, local_metadata, True,
                                  report.missing, report.unexpected, errors)
        for name, child in mod._modules.items():
            if child is not None:
                load(child, prefix + name + '.')

    load(module, '')
    expected = module.state_dict()
    for key, value in expected.items():
        if key not in state_dict:
            continue
        source = state_dict[key]
        if tuple(source.shape) != tuple(value.shape):
            report.mismatched.append((key, tuple(source.shape), tuple(value.shape)))
        else:
            report.loaded.append(key)
    report.other_errors = [e for e in errors if not e.startswith(_SIZE_MISMATCH)]
    return report


def _group_keys(keys: Iterable[str], limit: int = 6) -> str:
    """``stages.2.blocks.6-17.* (168 keys), norm3.weight``: keys grouped by block."""
    groups: Dict[str, int] = defaultdict(int)  # 'stages.2.blocks.6.*' -> number of keys
    for key in keys:
        parts = key.split('.')
        numbered = [i for i, part in enumerate(parts[:4]) if part.isdigit()]
        groups['.'.join(parts[:numbered[-1] + 1]) + '.*' if numbered else key] += 1
    runs: Dict[str, List[Tuple[int, int]]] = defaultdict(list)  # blocks 6, 7, ... -> 6-17
    for name, count in groups.items():
        match = re.fullmatch(r'(.*\.)(\d+)\.\*', name)
        if match is None:
            runs[name].append((-1, count))
        else:
            runs[match.group(1)].append((int(match.group(2)), count))
    shown = []
    for base, items in runs.items():
        numbers = sorted(n for n, _ in items)
        count = sum(c for _, c in items)
        if numbers == [-1]:
            name = base
        elif len(numbers) == 1:
            name = f'{base}{numbers[0]}.*'
        elif numbers == list(range(numbers[0], numbers[-1] + 1)):
            name = f'{base}{numbers[0]}-{numbers[-1]}.*'
        else:
            name = f'{base}{{{",".join(map(str, numbers))}}}.*'
        shown.append(name if count == 1 else f'{name} ({count} keys)')
    if len(shown) > limit:
        shown = shown[:limit] + [f'... {len(shown) - limit} more']
    return ', '.join(shown)


def describe_architecture(shapes: Dict[str, Tuple[int, ...]],
                          arch_zoo: Optional[dict] = None) -> Optional[str]:
    """``embed_dims=128, depths=[2, 2, 18, 2] (arch 'base')`` from parameter shapes.

    Reads the Swin (``patch_embed``, ``stages.i.blocks.j``) and Twins-SVT
    (``patch_embeds.i``, ``stages.i.j``) layouts; ``None`` for anything else.
    """
    depths: Dict[int, int] = defaultdict(int)
    for key in shapes:
        match = re.match(r'stages\.(\d+)\.(?:blocks\.)?(\d+)\.', key)
        if match:
            stage, block = int(match.group(1)), int(match.group(2))
            depths[stage] = max(depths[stage], block + 1)
    if 'patch_embed.projection.weight' in shapes:  # Swin: one int
        embed_dims = shapes['patch_embed.projection.weight'][0]
    else:  # Twins: one per stage
        embed_dims = [shape[0] for key, shape in sorted(shapes.items())
                      if re.fullmatch(r'patch_embeds\.\d+\.projection\.weight', key)]
    if not depths or not embed_dims:
        return None
    depth_list = [depths[i] for i in range(max(depths) + 1)]
    text = f'embed_dims={embed_dims}, depths={depth_list}'
    names = [name for name, arch in (arch_zoo or {}).items()
             if len(name) > 1 and arch.get('embed_dims') == embed_dims
             and list(arch.get('depths', [])) == depth_list]
    return f"{text} (arch '{names[0]}')" if names else text


def _mismatch_message(source: str, module: nn.Module, report: LoadReport,
                      missing: Sequence[str], ckpt_shapes: Dict[str, Tuple[int, ...]]
                      ) -> str:
    """The error text: what does not fit, and which architecture each side is."""
    lines = [f'{source} does not fit the configured {type(module).__name__}:']
    if report.unexpected:
        lines.append(f'  {len(report.unexpected)} unexpected keys: '
                     f'{_group_keys(report.unexpected)}')
    if missing:
        lines.append(f'  {len(missing)} missing keys: {_group_keys(missing)}')
    if report.mismatched:
        shown = '; '.join(f'{key} {src} in checkpoint vs {dst} in model'
                          for key, src, dst in report.mismatched[:4])
        more = (f' (and {len(report.mismatched) - 4} more)'
                if len(report.mismatched) > 4 else '')
        lines.append(f'  {len(report.mismatched)} shape mismatches: {shown}{more}')
    lines.extend(f'  {error}' for error in report.other_errors)
    arch_zoo = getattr(module, 'arch_zoo', None)
    ckpt_arch = describe_architecture(ckpt_shapes, arch_zoo)
    model_arch = describe_architecture(
        {k: tuple(v.shape) for k, v in module.state_dict().items()}, arch_zoo)
    if ckpt_arch and model_arch and ckpt_arch != model_arch:
        lines.append(f'  checkpoint: {ckpt_arch}; configured: {model_arch}.')
        arch = [re.search(r"\(arch '(\w+)'\)", a) for a in (ckpt_arch, model_arch)]
        if all(arch):
            lines.append(f"  Is it a '{arch[0].group(1)}' checkpoint in a "
                         f"'{arch[1].group(1)}' config? Make model.backbone.arch "
                         'match the checkpoint.')
    if missing:
        lines.append('  (keys that are legitimately new: allowed_missing=[regex, ...] '
                     'in the init_cfg)')
    return '\n'.join(lines)


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

    def __call__(self, module: nn.Module) -> None:
        state_dict = self.read_state_dict()
        print_log(f'load {self.prefix or "all keys"} of {self.checkpoint} into '
                  f'{type(module).__name__} (strict)', logger='current')
        ckpt_shapes = {k: tuple(v.shape) for k, v in state_dict.items()
                       if isinstance(v, torch.Tensor)}
        report = load_and_check(module, state_dict)

        def allowed(name: str, patterns: Sequence[str]) -> bool:
            return any(re.search(p, name) for p in patterns)

        report.unexpected = [k for k in report.unexpected
                             if not allowed(k, self.allowed_unexpected)]
        missing = [k for k in report.missing if not allowed(k, self.allowed_missing)]
        new = [k for k in report.missing if allowed(k, self.allowed_missing)]
        if report.unexpected or missing or report.mismatched or report.other_errors:
            raise CheckpointMismatchError(
                _mismatch_message(self._source(), module, report, missing, ckpt_shapes))
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
