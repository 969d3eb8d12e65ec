"""Stack fixes applied once, on ``import greenmim_mm``.

mmengine 0.10.x calls ``torch.load`` without ``weights_only``; since torch 2.6 that
means ``weights_only=True``, and the checkpoints mmengine's own Runner writes then fail
to load (``load_from``, ``resume=True``, ``tools/test.py CKPT``) because they pickle a
``MessageHub`` state (``HistoryBuffer``) and NumPy scalars/arrays. Instead of turning
``weights_only`` off for every file, we allow exactly these types in the safe unpickler,
and make ``HistoryBuffer`` pickle as plain data: upstream it also pickles its
statistics functions through ``getattr``, which a safe unpickler must never allow.
Those functions live on the class (``HistoryBuffer.register_statistics``) and are
restored by its own ``__setstate__``, so nothing is lost by leaving them out.
"""
import functools
from typing import List

import numpy as np
import torch
from mmengine.logging import HistoryBuffer
from mmengine.optim import DefaultOptimWrapperConstructor


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


allow_mmengine_checkpoints()


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


plain_dict_param_groups()
