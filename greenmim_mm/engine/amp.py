"""Mixed precision on any device, and training steps whose loss is not finite skipped.

* :class:`AnyDeviceAmpOptimWrapper` is mmengine's ``AmpOptimWrapper`` (same arguments:
  ``loss_scale``, ``dtype``, ``use_fsdp``) that also runs on the CPU, where mmengine's
  asserts a GPU: there it autocasts to ``dtype`` (default bfloat16) with
  ``torch.autocast('cpu')``, and scales the loss only for float16 (bfloat16 has
  float32's range: no scaler). On a GPU it is mmengine's wrapper, entering
  ``torch.autocast`` itself (mmengine's helper is not traceable by torch 2.11's dynamo).
* Both it and :class:`SkipNonFiniteOptimWrapper` (mmengine's plain ``OptimWrapper``)
  check the loss before the backward pass: a NaN or infinite loss on any process
  skips the step on every process (no backward, no update; with gradient accumulation,
  ``accumulative_counts=K``, the whole window of K micro-steps is dropped: the
  gradients of its micro-steps before are zeroed, those after it skip their backward
  too, and the window ends with no update) with a
  warning naming the iteration and the count so far; ``max_nonfinite_steps`` skipped
  steps in a row raise :class:`NonFiniteLossError`, which stops the run (exit code 3)
  with the weights of the last good step and every checkpoint written before intact.
  The check reads the loss on the host, one synchronisation per step between the
  forward and the backward (mmengine's loss logging syncs once per step too, after it). What the skipped step's forward pass changed stays
  changed (BatchNorm's running statistics; GreenMIM's models have none).

``tools/train.py`` runs every config with them: ``OptimWrapper`` becomes
``SkipNonFiniteOptimWrapper`` and ``AmpOptimWrapper`` ``AnyDeviceAmpOptimWrapper``
(:func:`greenmim_cli.launch.use_safe_optim_wrapper`); ``--amp`` picks the dtype
(:func:`default_amp_dtype`), ``--amp-dtype`` sets it.
"""
import logging
from contextlib import contextmanager
from typing import Dict, Optional, Union

import torch
from mmengine.device import get_device
from mmengine.dist import all_reduce
from mmengine.logging import MessageHub, print_log
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS

from ..errors import NonFiniteLossError, UsageError

AMP_DTYPES = ('float16', 'bfloat16')


def default_amp_dtype() -> str:
    """bfloat16 on the CPU and on GPUs that support it, float16 on older GPUs."""
    if torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        return 'float16'
    return 'bfloat16'


class NonFiniteGuard:
    """Skips an ``update_params`` whose loss is not finite (mixed into an
    ``OptimWrapper`` subclass, which calls :meth:`_init_guard` in its ``__init__``)."""

    def _init_guard(self, max_nonfinite_steps: int) -> None:
        if max_nonfinite_steps < 1:
            raise ValueError(f'max_nonfinite_steps must be >= 1, got {max_nonfinite_steps}')
        self.max_nonfinite_steps = max_nonfinite_steps
        self.skipped_steps = 0  # in this run
        self._skipped_in_a_row = 0
        self._window_dropped = False  # a non-finite loss earlier in this window

    def update_params(self, loss: torch.Tensor, step_kwargs: Optional[Dict] = None,
                      zero_kwargs: Optional[Dict] = None) -> None:
        finite = torch.isfinite(loss).all().to(torch.int32)
        # one decision for every process: a process that skipped its backward would
        # leave the others waiting in DDP's gradient all-reduce (no-op outside DDP)
        all_reduce(finite, op='min')
        if bool(finite):
            self._skipped_in_a_row = 0
            if not self._window_dropped:
                return super().update_params(loss, step_kwargs, zero_kwargs)  # type: ignore
            return self._drop_micro_step(zero_kwargs or {})  # the rest of a bad window
        self._skip(loss, zero_kwargs or {})

    def _drop_micro_step(self, zero_kwargs: Dict) -> None:
        """Count a micro-step without its backward; zero the gradients where the
        accumulation window ends (no update in it), else drop the rest of the window."""
        self._inner_count += 1  # type: ignore  # gradient accumulation stays in step
        self._window_dropped = not self.should_update()  # type: ignore
        if not self._window_dropped:
            self.zero_grad(**zero_kwargs)  # type: ignore  # drop the window's gradients

    def _skip(self, loss: torch.Tensor, zero_kwargs: Dict) -> None:
        self.skipped_steps += 1
        self._skipped_in_a_row += 1
        iteration = MessageHub.get_current_instance().get_info('iter', -1) + 1  # 1-based
        value = loss.detach().float().sum().item()
        print_log(f'iteration {iteration}: the loss is {value}, not finite; step skipped'
                  f' ({self.skipped_steps} skipped in this run, '
                  f'{self._skipped_in_a_row} in a row)',
                  logger='current', level=logging.WARNING)
        self._drop_micro_step(zero_kwargs)
        if self._skipped_in_a_row >= self.max_nonfinite_steps:
            first = iteration - self._skipped_in_a_row + 1
            raise NonFiniteLossError(
                f'the loss was not finite for {self._skipped_in_a_row} steps in a row '
                f'(iterations {first}-{iteration}), training stopped; the checkpoints '
                'written before are intact. Lower the learning rate '
                '(--cfg-options optim_wrapper.optimizer.lr=...), clip gradients '
                '(optim_wrapper.clip_grad=dict(max_norm=1.0)) or train in bfloat16/'
                'float32 instead of float16, then --resume')


@OPTIM_WRAPPERS.register_module()
class SkipNonFiniteOptimWrapper(NonFiniteGuard, OptimWrapper):
    """mmengine's ``OptimWrapper`` that skips steps with a non-finite loss.

    Args:
        max_nonfinite_steps: how many skipped steps in a row stop the run.
        **kwargs: ``OptimWrapper``'s arguments.
    """

    def __init__(self, max_nonfinite_steps: int = 10, **kwargs) -> None:
        super().__init__(**kwargs)
        self._init_guard(max_nonfinite_steps)


def _cpu_grad_scaler(loss_scale: Union[str, float, dict], enabled: bool):
    """``torch.amp.GradScaler('cpu')`` from mmengine's ``loss_scale`` argument
    (``'dynamic'``, an initial scale, or the scaler's arguments, e.g.
    ``dict(enabled=False)``); ``enabled``: whether the dtype needs scaling at all."""
    if loss_scale == 'dynamic':
        kwargs: Dict = {}
    elif isinstance(loss_scale, (int, float)):
        kwargs = dict(init_scale=float(loss_scale))
    elif isinstance(loss_scale, dict):
        kwargs = dict(loss_scale)
    else:
        raise TypeError('loss_scale must be a float, a dict or "dynamic", got '
                        f'{loss_scale!r}')
    enabled = kwargs.pop('enabled', True) and enabled
    return torch.amp.GradScaler('cpu', enabled=enabled, **kwargs)


@OPTIM_WRAPPERS.register_module()
class AnyDeviceAmpOptimWrapper(NonFiniteGuard, AmpOptimWrapper):
    """mmengine's ``AmpOptimWrapper`` on a GPU; autocast (default bfloat16) on the CPU.

    Args:
        loss_scale: as ``AmpOptimWrapper`` (on the CPU used for float16 only).
        dtype: ``'bfloat16'``, ``'float16'`` (or a ``torch.dtype``); None: mmengine's
            default on a GPU (float16), bfloat16 on the CPU.
        use_fsdp: as ``AmpOptimWrapper`` (GPU only).
        max_nonfinite_steps: how many skipped steps in a row stop the run.
        **kwargs: ``OptimWrapper``'s arguments.
    """

    def __init__(self, loss_scale: Union[str, float, dict] = 'dynamic',
                 dtype: Union[str, torch.dtype, None] = None, use_fsdp: bool = False,
                 max_nonfinite_steps: int = 10, **kwargs) -> None:
        self.device_type = get_device()
        if self.device_type != 'cpu':
            super().__init__(loss_scale=loss_scale, dtype=dtype, use_fsdp=use_fsdp,
                             **kwargs)
        else:
            OptimWrapper.__init__(self, **kwargs)
            if isinstance(dtype, str):
                if dtype not in self.valid_dtypes:
                    raise ValueError(f'dtype must be one of {self.valid_dtypes}, got '
                                     f'{dtype!r}')
                dtype = getattr(torch, dtype)
            self.cast_dtype = dtype or torch.bfloat16
            self._scale_update_param = (float(loss_scale) if isinstance(
                loss_scale, (int, float)) else None)
            self.loss_scaler = _cpu_grad_scaler(loss_scale,
                                                enabled=self.cast_dtype == torch.float16)
        self._init_guard(max_nonfinite_steps)

    @contextmanager
    def optim_context(self, model: torch.nn.Module):
        """mmengine's context (no gradient sync inside an accumulation window, then
        autocast to ``cast_dtype``) with ``torch.autocast`` itself on the CPU and on
        CUDA: mmengine's ``autocast`` helper is not traceable by torch 2.11's dynamo
        (``InternalTorchDynamoError``), which broke ``compile=True`` on GPUs. The
        arguments are the helper's: the dtype (None: torch's default for the device)
        and the autocast weight cache as it is set."""
        if self.device_type not in ('cpu', 'cuda'):
            with super().optim_context(model):
                yield
            return
        with OptimWrapper.optim_context(self, model), torch.autocast(
                self.device_type, dtype=self.cast_dtype,
                cache_enabled=torch.is_autocast_cache_enabled()):
            yield


SAFE_OPTIM_WRAPPERS = {'OptimWrapper': 'SkipNonFiniteOptimWrapper',
                       'AmpOptimWrapper': 'AnyDeviceAmpOptimWrapper'}


def use_safe_optim_wrapper(cfg, amp: bool = False, amp_dtype: Optional[str] = None) -> None:
    """Run the config's mmengine optim wrapper as its subclass here (same arguments,
    non-finite steps skipped, AMP on any device); with ``amp`` (``--amp``) or
    ``amp_dtype`` (``--amp-dtype``) in mixed precision.

    Raises:
        UsageError: ``--amp`` with an optim wrapper of another kind.
    """
    wrapper = cfg.get('optim_wrapper')
    if not isinstance(wrapper, dict):
        return
    kind = wrapper.get('type', 'OptimWrapper')
    kind = SAFE_OPTIM_WRAPPERS.get(kind, kind)
    if amp or amp_dtype:
        if kind not in SAFE_OPTIM_WRAPPERS.values():
            raise UsageError(f'--amp needs OptimWrapper or AmpOptimWrapper, the config has '
                             f'optim_wrapper.type={kind}; train without --amp')
        kind = 'AnyDeviceAmpOptimWrapper'
        wrapper.setdefault('loss_scale', 'dynamic')
        if amp_dtype or wrapper.get('dtype') is None:
            wrapper['dtype'] = amp_dtype or default_amp_dtype()
    wrapper['type'] = kind
