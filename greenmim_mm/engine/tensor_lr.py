"""Learning rates as tensors, so that a compiled optimizer step never recompiles.

mmengine's parameter schedulers write ``group['lr']`` as a new Python float every
iteration; a compiled step that contains the optimizer (``compile=True``) guards on
that float and recompiles when it changes. :func:`keep_lr_tensors` gives each param
group one 0-d float64 CPU tensor for its lr, made once and then filled in place with
the value the schedulers (or any hook) wrote, so the compiled step sees the same tensor
with a new value: no recompilation. It runs before every training iteration
(:class:`~greenmim_mm.engine.hooks.DeviceRuntimeInfoHook`), after the schedulers are
built (they keep their ``initial_lr`` as a float, never an alias of the tensor that is
filled). The tensor lives on the CPU: reading it (the log's ``lr``) is no device read.

Only for a compiled step (the hook's default): eager torch Adam(W) with a tensor lr and
``capturable=False`` gives up its ``foreach`` kernels for a loop over the parameters
(torch 2.14), and refuses ``foreach=True`` outright; fused optimizers take it either way.
"""
from typing import Dict, Tuple

import torch
from torch import Tensor


def keep_lr_tensors(optim_wrapper, tensors: Dict[Tuple[str, int], Tensor]) -> None:
    """Put each param group's lr into its tensor (``tensors``, keyed by wrapper name
    and group index, made here at the first call) and the tensor into the group."""
    wrappers = getattr(optim_wrapper, 'optim_wrappers', {'': optim_wrapper})
    for name, wrapper in wrappers.items():
        for index, group in enumerate(wrapper.optimizer.param_groups):
            key = (name, index)
            current, kept = group['lr'], tensors.get(key)
            if kept is not None and current is kept:
                continue  # nothing wrote a new value
            value = float(current)  # a float, or a CPU tensor a scheduler computed
            if kept is None:
                tensors[key] = kept = torch.tensor(value, dtype=torch.float64)
            else:
                kept.fill_(value)
            group['lr'] = kept
