"""mmengine's ``RuntimeInfoHook`` with the training scalars read once per logging
interval instead of once per iteration.

mmengine's hook hands every iteration's losses to ``MessageHub.update_scalar``, which
calls ``.item()``: one device->host read per iteration, which on a GPU drains the
queue (the host stops launching until the GPU is done). Here the scalar tensors of each
iteration (the model's log vars, and the optim wrapper's device scalars such as
``grad_norm``) are kept on the device, and at a *flush* all the iterations since the
last one are read with one ``.tolist()`` (together with the non-finite guard's
counters) and pushed into the same ``HistoryBuffer``\\ s, one value per iteration, in
order. The buffers then hold what mmengine's hook would have put there, so
``LoggerHook``'s window means, TensorBoard and ``scalars.json`` show the same numbers.

A flush happens where something reads the buffers: at ``LoggerHook``'s interval (and
at the end of a dataloader epoch, where it also logs), at ``CheckpointHook``'s
interval (a checkpoint saves the MessageHub), at the last iteration, before
validation and after training. The buffers are created (empty) at the first
iteration, so their order, and so the order of the log line, is mmengine's.

When the step is compiled, before each iteration it also keeps each param group's
learning rate a tensor filled in place (:mod:`greenmim_mm.engine.tensor_lr`), so that a
compiled step that contains the optimizer does not recompile when the schedulers change
the lr.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from mmengine.hooks import CheckpointHook, LoggerHook, RuntimeInfoHook
from mmengine.logging import HistoryBuffer
from mmengine.registry import HOOKS
from torch import Tensor

from ..tensor_lr import keep_lr_tensors

Row = Tuple[Tuple[str, ...], Tensor]  # the keys of an iteration, their values (K,)


@HOOKS.register_module()
class DeviceRuntimeInfoHook(RuntimeInfoHook):
    """``RuntimeInfoHook`` whose training scalars stay on the device between flushes
    (module docstring). Same behaviour otherwise; validation and test metrics are
    mmengine's (read once per evaluation).

    Args:
        tensor_lr: keep each param group's lr a tensor filled in place; None: when the
            runner compiles the step (``compile`` in the config), the only case where
            it helps -- eager torch Adam(W) on CUDA with a tensor lr falls back from its
            ``foreach`` kernels to a loop over the parameters.
    """

    def __init__(self, tensor_lr: Optional[bool] = None) -> None:
        self.tensor_lr = tensor_lr
        self._use_tensor_lr = False
        self._pending: List[Row] = []
        self._loggers: List[LoggerHook] = []
        self._checkpoint_intervals: List[int] = []
        self._unflushed = 0  # iterations since the last flush
        self._lr_tensors: Dict[Tuple[str, int], Tensor] = {}

    def before_train(self, runner) -> None:
        super().before_train(runner)
        self._pending, self._unflushed = [], 0
        self._use_tensor_lr = (bool(runner.cfg.get('compile'))
                               if self.tensor_lr is None else self.tensor_lr)
        self._loggers = [hook for hook in runner.hooks if isinstance(hook, LoggerHook)]
        self._checkpoint_intervals = [  # an epoch-based one saves at an epoch's end
            hook.interval for hook in runner.hooks
            if isinstance(hook, CheckpointHook) and not hook.by_epoch]

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        """The lr of each param group as a tensor filled in place (no recompilation of
        a compiled optimizer step), then mmengine's (it logs the lr)."""
        if self._use_tensor_lr:
            keep_lr_tensors(runner.optim_wrapper, self._lr_tensors)
        super().before_train_iter(runner, batch_idx, data_batch)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs: Optional[dict] = None) -> None:
        self._unflushed += 1
        scalars: Dict[str, Tensor] = {}
        for key, value in (outputs or {}).items():
            if isinstance(value, Tensor) and value.numel() == 1:
                scalars[f'train/{key}'] = value.detach().reshape(())
            else:  # a host number: no read
                runner.message_hub.update_scalar(f'train/{key}', value)
        for wrapper in _optim_wrappers(runner):
            for key, value in getattr(wrapper, 'pop_device_scalars', dict)().items():
                scalars[f'train/{key}'] = value.reshape(())
        if scalars:
            self._keep(runner, scalars)
        if self._flush_due(runner, batch_idx):
            self.flush(runner)

    def before_val(self, runner) -> None:
        self.flush(runner)
        super().before_val(runner)

    def after_train_epoch(self, runner) -> None:
        self.flush(runner)  # before an epoch's checkpoint (CheckpointHook runs after it)
        super().after_train_epoch(runner)

    def after_train(self, runner) -> None:
        self.flush(runner)
        super().after_train(runner)

    # ------------------------------------------------------------------------------
    def _keep(self, runner, scalars: Dict[str, Tensor]) -> None:
        log_scalars = runner.message_hub.log_scalars
        for key in scalars:  # mmengine's order of keys, values to come
            if key not in log_scalars:
                runner.message_hub._set_resumed_keys(key, True)  # update_scalar's
                log_scalars[key] = HistoryBuffer()
        values = list(scalars.values())
        device = values[0].device
        row = torch.stack([v.to(device, torch.float64) for v in values])  # K
        self._pending.append((tuple(scalars), row))

    def _flush_due(self, runner, batch_idx: int) -> bool:
        """Where ``LoggerHook.after_train_iter`` logs (its ``every_n_inner_iters``, or
        the end of the loader's epoch unless ``ignore_last``), ``CheckpointHook``
        saves, or the run ends."""
        step = runner.iter + 1
        length = _len_or_none(runner.train_dataloader)
        for hook in self._loggers:
            if (batch_idx + 1) % hook.interval == 0 or (
                    batch_idx + 1 == length
                    and (not hook.ignore_last or length <= hook.interval)):
                return True
        return (any(step % n == 0 for n in self._checkpoint_intervals)
                or step >= runner.max_iters)

    def flush(self, runner) -> None:
        """Read the kept scalars and the guard's counters (one host read) and push
        them into the MessageHub; let the guard report."""
        guards = [w for w in _optim_wrappers(runner)
                  if getattr(w, 'nonfinite_counters', lambda: None)() is not None]
        if not self._unflushed:
            return
        self._unflushed = 0
        if not self._pending and not guards:
            return
        parts = [row for _, row in self._pending]
        parts += [w.nonfinite_counters().to(torch.float64) for w in guards]
        device = parts[0].device
        values = torch.cat([p.to(device) for p in parts]).tolist()  # the one read
        offset = 0
        for keys, _ in self._pending:
            for key, value in zip(keys, values[offset:offset + len(keys)]):
                runner.message_hub.update_scalar(key, value)
            offset += len(keys)
        self._pending = []
        for wrapper in guards:
            size = wrapper.nonfinite_counters().numel()
            wrapper.check_nonfinite(values[offset:offset + size])
            offset += size


def _optim_wrappers(runner) -> Sequence:
    wrapper = getattr(runner, 'optim_wrapper', None)
    if wrapper is None or isinstance(wrapper, dict):
        return []
    return list(getattr(wrapper, 'optim_wrappers', {'': wrapper}).values())


def _len_or_none(loader) -> Optional[int]:
    try:
        return len(loader)
    except TypeError:
        return None


def use_device_runtime_info(cfg) -> None:
    """Run a config with :class:`DeviceRuntimeInfoHook` as its ``runtime_info`` default
    hook (what ``tools/train.py`` does), unless it names a hook of its own there."""
    hooks = cfg.get('default_hooks')
    if hooks is None:
        cfg.default_hooks = hooks = {}
    current = hooks.get('runtime_info')
    if current is None or (isinstance(current, dict) and current.get('type') in (
            'RuntimeInfoHook', 'mmengine.RuntimeInfoHook')):
        hooks['runtime_info'] = dict(type='DeviceRuntimeInfoHook')
