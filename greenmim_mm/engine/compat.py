"""Fixes of other libraries, applied once, on ``import greenmim_mm``.

Every change this package makes to another library's behaviour lives here, next to the
upstream issue it works around; remove a fix when the pinned versions no longer need it.

1. **mmengine checkpoints under torch >= 2.6** (open-mmlab/mmengine#1655, unfixed in
   mmengine 0.10.7; the open pull request open-mmlab/mmengine#1650 turns
   ``weights_only`` off). mmengine calls ``torch.load`` without ``weights_only``; since
   torch 2.6 that means ``weights_only=True``, and the checkpoints mmengine's own Runner
   writes then fail to load (``load_from``, ``resume=True``, ``tools/test.py CKPT``)
   because they pickle a ``MessageHub`` state (``HistoryBuffer``) and NumPy
   scalars/arrays. Instead of turning ``weights_only`` off for every file, we allow
   exactly these types in the safe unpickler, and make ``HistoryBuffer`` pickle as plain
   data: upstream it also pickles its statistics functions through ``getattr``, which a
   safe unpickler must never allow. Those functions live on the class
   (``HistoryBuffer.register_statistics``) and are restored by its own ``__setstate__``,
   so nothing is lost by leaving them out.
2. **mmpretrain's relative-position bias-table resize without ``interp2d``**
   (scipy/scipy#18583: SciPy 1.14 replaced ``scipy.interpolate.interp2d`` by a stub
   that raises ``NotImplementedError``). mmpretrain 1.2.0, its last release, resizes
   the bias tables of Swin and BEiT with ``interp2d`` (the resize came with
   open-mmlab/mmpretrain#749; no upstream issue or fix was found), so every window
   change on load failed. :func:`resize_relative_position_bias_table` is the same resize
   with ``RectBivariateSpline``, SciPy's documented drop-in for ``interp2d`` on a
   regular grid (same cubic spline through the points, same clamping outside them); it
   replaces mmpretrain's function where Swin and BEiT call it.
3. **A compiled optimizer step with mmengine's param groups** (no upstream issue found):
   mmengine's ``DefaultOptimWrapperConstructor`` hands torch ``ConfigDict`` param
   groups, and torch.compile of the training step (``compile=True``) then fails inside
   the optimizer (:func:`plain_dict_param_groups`).
"""
import functools
from typing import List

import numpy as np
import torch
from mmengine.logging import HistoryBuffer
from mmengine.optim import DefaultOptimWrapperConstructor

# ---------------------------------------------------------------- 1. torch.load


def _numpy_globals() -> List[object]:
    """The NumPy types that appear in pickled arrays and scalars."""
    multiarray = getattr(np, '_core', np.core).multiarray
    dtype_classes = [type(np.dtype(name)) for name in (
        'bool', 'int8', 'int16', 'int32', 'int64', 'uint8', 'uint16', 'uint32',
        'uint64', 'float16', 'float32', 'float64', 'complex64', 'complex128',
        'str', 'object')]
    return [multiarray._reconstruct, multiarray.scalar, np.ndarray, np.dtype,
            *dtype_classes]


def _history_buffer_state(self: HistoryBuffer) -> dict:
    """``HistoryBuffer.__getstate__`` without the statistics functions (plain data)."""
    state = dict(self.__dict__)
    state.pop('statistics_methods', None)
    state.pop('_statistics_methods', None)
    return state


def allow_mmengine_checkpoints() -> None:
    """Let ``torch.load(weights_only=True)`` read checkpoints written by mmengine."""
    HistoryBuffer.__getstate__ = _history_buffer_state
    add_safe_globals = getattr(torch.serialization, 'add_safe_globals', None)
    if add_safe_globals is not None:  # torch < 2.4 has no weights_only default
        add_safe_globals([HistoryBuffer, *_numpy_globals()])


# ---------------------------------------------------------------- 2. interp2d


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
    order = min(3, src_shape - 1)  # a window-2 table (3 x 3) takes a quadratic spline
    heads = []
    for i in range(num_head):
        z = table[:, i].view(src_shape, src_shape).float().cpu().numpy()  # rows: y
        spline = RectBivariateSpline(src, src, z, kx=order, ky=order, s=0)
        heads.append(torch.from_numpy(spline(dst, dst)).float().reshape(-1, 1))
    return torch.cat(heads, dim=-1).to(table.device)


def use_spline_bias_table_resize() -> None:
    """Point mmpretrain's Swin and BEiT load hooks at the resize above."""
    from mmpretrain.models import utils
    from mmpretrain.models.backbones import beit, swin_transformer
    from mmpretrain.models.utils import embed
    for module in (utils, embed, swin_transformer, beit):
        module.resize_relative_position_bias_table = resize_relative_position_bias_table


# ---------------------------------------------------------------- 3. compiled optimizer
def plain_dict_param_groups() -> None:
    """Give torch optimizers ``dict`` param groups, not mmengine ``ConfigDict``\ s.

    ``DefaultOptimWrapperConstructor`` stores the param groups in a ``ConfigDict``,
    which turns each group into a ``ConfigDict``; torch.compile of a training step
    (mmengine's ``compile=True``) then fails inside the optimizer with
    ``InternalTorchDynamoError: 'UserDefinedDictVariable' object has no attribute
    'items'`` (torch 2.14, mmengine 0.10.7; no upstream issue found). Same content,
    plain dicts, before any step (checkpoints are unchanged).
    """
    call = DefaultOptimWrapperConstructor.__call__
    if getattr(call, '_plain_dict_groups', False):
        return

    @functools.wraps(call)
    def __call__(self, model):
        optim_wrapper = call(self, model)
        groups = optim_wrapper.optimizer.param_groups
        groups[:] = [dict(group) for group in groups]
        return optim_wrapper

    __call__._plain_dict_groups = True
    DefaultOptimWrapperConstructor.__call__ = __call__



allow_mmengine_checkpoints()
use_spline_bias_table_resize()
plain_dict_param_groups()
