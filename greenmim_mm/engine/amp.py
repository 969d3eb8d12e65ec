"""Mixed precision on any device, and training steps whose loss is not finite skipped.

* :class:`AnyDeviceAmpOptimWrapper` is mmengine's ``AmpOptimWrapper`` (same arguments:
  ``loss_scale``, ``dtype``, ``use_fsdp``) that also runs on the CPU, where mmengine's
  asserts a GPU: there it autocasts to ``dtype`` (default bfloat16) with
  ``torch.autocast('cpu')``, and scales the loss only for float16 (bfloat16 has
  float32's range: no scaler). On a GPU it is mmengine's wrapper, entering
  ``torch.autocast`` itself (mmengine's helper is not traceable by torch 2.11's dynamo).
* Both it and :class:`SkipNonFiniteOptimWrapper` (mmengine's plain ``OptimWrapper``)
  skip the update of a step whose loss is NaN or infinite on any process, on every
  process, deciding on the device (:class:`NonFiniteGuard`: no host read in the step;
  under gradient accumulation the whole window is dropped). The skipped steps are
  counted on the device and reported at the next logging interval (a warning with the
  count); ``max_nonfinite_steps`` skipped steps in a row raise
  :class:`NonFiniteLossError` there, which stops the run (exit code 3) with the weights
  of the last good step and every checkpoint written before intact. What the skipped
  step's forward and backward passes changed stays changed (BatchNorm's running
  statistics; GreenMIM's models have none).
* float16 with dynamic loss scaling: ``GradScaler`` reads its ``found_inf`` on the host
  once per step for an optimizer that is not fused (``_maybe_opt_step``'s ``.item()``,
  kept); with ``fused=True`` it hands ``found_inf`` to the fused kernel and reads
  nothing. bfloat16 and float32 have no scaler.

``tools/train.py`` runs every config with them: ``OptimWrapper`` becomes
``SkipNonFiniteOptimWrapper`` and ``AmpOptimWrapper`` ``AnyDeviceAmpOptimWrapper``
(:func:`greenmim_cli.launch.use_safe_optim_wrapper`); ``--amp`` picks the dtype
(:func:`default_amp_dtype`), ``--amp-dtype`` sets it.
"""
import logging
from contextlib import contextmanager
from typing import Dict, Optional, Sequence, Union

import torch
from mmengine.device import get_device
from mmengine.dist import all_reduce
from mmengine.logging import MessageHub, print_log
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS
from torch import Tensor

from ..errors import NonFiniteLossError, UsageError

AMP_DTYPES = ('float16', 'bfloat16')


def default_amp_dtype() -> str:
    """bfloat16 on the CPU and on GPUs that support it, float16 on older GPUs."""
    if torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        return 'float16'
    return 'bfloat16'


class NonFiniteGuard:
    """Skips the update of a step whose loss is not finite, deciding on the device
    (mixed into an ``OptimWrapper`` subclass, which calls :meth:`_init_guard` in its
    ``__init__``).

    Per step, nothing is read on the host: the finite flag is a device tensor, reduced
    with ``min`` over the processes (an all-reduce, not read), the backward always runs
    (so every DDP process joins the gradient all-reduce), and the update is masked:

    * a fused optimizer (``fused=True``: torch's Adam, AdamW, SGD) gets the flag as the
      ``found_inf`` its kernel already takes from ``GradScaler``: a skipped step changes
      no parameter and no state, at no cost (unless a ``GradScaler`` is on: it sets
      ``found_inf`` itself, and the next path is taken);
    * any other optimizer steps, then every parameter and state tensor on the device
      is put back where the flag says so (``torch.where`` against a copy taken before
      the step; state the step created is reset to zeros, the value it starts from).
      Tensors held on the host cannot be put back without a read: torch's Adam(W) not
      fused and not capturable keeps its ``step`` counter there when the parameters are
      on a GPU, so a skipped step still counts in its bias correction (use
      ``fused=True`` on GPUs for an exact skip).

    Under gradient accumulation the flag of a window is the ``min`` of its micro-steps:
    one non-finite micro-step drops the whole window's update, and counts as one skipped
    step (the counters count updates). Device counters (steps
    skipped, in a row, longest run) are read by :meth:`check_nonfinite`, which the
    runtime-info hook (:class:`~greenmim_mm.engine.hooks.DeviceRuntimeInfoHook`) calls
    with its one read per logging interval (and before each checkpoint): it warns with
    the count and raises :class:`NonFiniteLossError` after ``max_nonfinite_steps``
    skipped steps in a row.
    """

    # the counters' slots: total skipped, skipped in a row now, the longest run since
    # the last check, the step index where that run ended, steps since the guard began
    _SKIPPED, _IN_A_ROW, _LONGEST, _LONGEST_END, _STEPS = range(5)

    def _init_guard(self, max_nonfinite_steps: int) -> None:
        if max_nonfinite_steps < 1:
            raise ValueError(f'max_nonfinite_steps must be >= 1, got {max_nonfinite_steps}')
        self.max_nonfinite_steps = max_nonfinite_steps
        self.skipped_steps = 0  # in this run, as of the last check
        self._skipped_in_a_row = 0  # as of the last check
        self._reported_skipped = 0
        # made here, on the parameters' device, so that a compiled step finds the
        # same kinds of attributes at every step (no recompilation)
        params = [p for group in self.optimizer.param_groups  # type: ignore
                  for p in group['params']]
        device = params[0].device if params else torch.device('cpu')
        self._counters = torch.zeros(5, dtype=torch.int64, device=device)
        self._window_ok = torch.ones((), dtype=torch.bool, device=device)  # this window
        self._device_scalars: Dict[str, Tensor] = {}  # e.g. grad_norm, for the log
        # a fused optimizer skips its step where found_inf != 0 (GradScaler's way),
        # unless a scaler is on: it sets found_inf itself
        optimizer = self.optimizer  # type: ignore
        scaler = getattr(self, 'loss_scaler', None)
        self._found_inf: Optional[Tensor] = None
        if (getattr(optimizer, '_step_supports_amp_scaling', False)
                and optimizer.defaults.get('fused')
                and not (scaler is not None and scaler.is_enabled())):
            self._found_inf = torch.zeros((), dtype=torch.float32, device=device)
            optimizer.found_inf = self._found_inf

    # ------------------------------------------------------------------ per step
    def update_params(self, loss: torch.Tensor, step_kwargs: Optional[Dict] = None,
                      zero_kwargs: Optional[Dict] = None) -> None:
        finite = torch.isfinite(loss.detach()).all().to(torch.int32)
        # one decision for every process (no-op outside DDP); never read here
        all_reduce(finite, op='min')
        ok = finite.bool()
        self._window_ok = self._window_ok.to(ok.device) & ok
        loss = self.scale_loss(loss)  # type: ignore
        self.backward(loss)  # type: ignore
        # without accumulation every step updates: not reading the step count keeps a
        # compiled step from guarding on it (a recompilation per step)
        if self._accumulative_counts == 1 or self.should_update():  # type: ignore
            self._count(self._window_ok)  # per update: a dropped window is one skipped step
            self._masked_step(self._window_ok, step_kwargs or {})
            self.zero_grad(**(zero_kwargs or {}))  # type: ignore
            self._window_ok = torch.ones_like(self._window_ok)

    def _count(self, ok: Tensor) -> None:
        c = self._counters.to(ok.device)
        bad = (~ok).to(torch.int64)
        steps = c[self._STEPS] + 1
        in_a_row = (c[self._IN_A_ROW] + 1) * bad
        longer = in_a_row > c[self._LONGEST]
        self._counters = torch.stack([
            c[self._SKIPPED] + bad, in_a_row, torch.maximum(c[self._LONGEST], in_a_row),
            torch.where(longer, steps, c[self._LONGEST_END]), steps])

    def _masked_step(self, ok: Tensor, step_kwargs: Dict) -> None:
        if self._found_inf is not None:
            # in place: the attribute was set once (an attribute set in a compiled
            # step does not reach the optimizer's own frame)
            self._found_inf.copy_(~ok)
            self.step(**step_kwargs)  # type: ignore
            self._found_inf.zero_()  # a step made elsewhere is a normal one
            return
        before = self._snapshot(ok.device)
        self.step(**step_kwargs)  # type: ignore
        self._restore_unless(ok, before)

    # Eager (a graph break each in a compiled step): they walk the optimizer's state,
    # which is empty before its first step, and a compiled step that walked it would
    # guard on that and recompile at the second step. A few kernels per dtype whatever
    # the number of tensors: one flat copy, one where, one foreach copy back.
    @torch.compiler.disable
    def _snapshot(self, device: torch.device) -> Dict[torch.dtype, Dict[tuple, Tensor]]:
        """Copies of the tensors a step may change, per dtype, as views of one flat
        copy: ``{dtype: {key: copy}}``."""
        found = self._device_tensors(device)
        snapshot = {}
        for keys in _keys_by_dtype(found).values():
            tensors = [found[k] for k in keys]
            flat = torch.cat([t.detach().reshape(-1) for t in tensors])
            copies = flat.split([t.numel() for t in tensors])
            snapshot[tensors[0].dtype] = dict(zip(keys, copies))
        return snapshot

    @torch.compiler.disable
    def _restore_unless(self, ok: Tensor,
                        before: Dict[torch.dtype, Dict[tuple, Tensor]]) -> None:
        """Where ``ok`` is False, put back what the step changed (state it created:
        zeros, the value it starts from)."""
        found = self._device_tensors(ok.device)
        with torch.no_grad():
            for dtype, keys in _keys_by_dtype(found).items():
                tensors = [found[k] for k in keys]
                sizes = [t.numel() for t in tensors]
                copies = before.get(dtype, {})
                old = torch.cat([copies[k] if k in copies else t.new_zeros(n)
                                 for k, t, n in zip(keys, tensors, sizes)])
                now = torch.cat([t.reshape(-1) for t in tensors])
                chosen = torch.where(ok, now, old).split(sizes)
                torch._foreach_copy_(tensors,
                                     [c.view_as(t) for c, t in zip(chosen, tensors)])

    def _device_tensors(self, device: torch.device) -> Dict[tuple, Tensor]:
        """The parameters (with a gradient) and their optimizer state on ``device``:
        what a step may change, keyed by param index and state name."""
        optimizer = self.optimizer  # type: ignore
        found: Dict[tuple, Tensor] = {}
        index = 0
        for group in optimizer.param_groups:
            for param in group['params']:
                index += 1
                if param.grad is None:
                    continue
                state = optimizer.state.get(param, {})
                tensors = [('param', param)] + [(name, value) for name, value in
                                                state.items() if isinstance(value, Tensor)]
                for name, tensor in tensors:
                    if tensor.device == device:
                        found[(index, name)] = tensor
        return found

    def _clip_grad(self) -> None:
        """mmengine's, with the norm kept on the device for the log (mmengine's
        ``float(grad)`` read it on the host every step)."""
        params = [p for group in self.optimizer.param_groups  # type: ignore
                  for p in group['params'] if p.requires_grad and p.grad is not None]
        if params:
            norm = self.clip_func(params, **self.clip_grad_kwargs)  # type: ignore
            if norm is not None:
                self._device_scalars[self.grad_name] = norm.detach()  # type: ignore

    # ------------------------------------------------------------ per log interval
    def pop_device_scalars(self) -> Dict[str, Tensor]:
        """Device scalars of this step for the log (``grad_norm`` when clipping)."""
        scalars, self._device_scalars = self._device_scalars, {}
        return scalars

    def nonfinite_counters(self) -> Tensor:
        """The device counters, for a caller that reads them with its own values."""
        return self._counters

    def check_nonfinite(self, counters: Optional[Sequence[float]] = None) -> None:
        """Warn about the steps skipped since the last check, and stop after too many
        in a row. ``counters``: :meth:`nonfinite_counters` as read by the caller
        (None: read them here, one host read).

        Raises:
            NonFiniteLossError: ``max_nonfinite_steps`` skipped steps in a row.
        """
        if counters is None:
            counters = self._counters.tolist()
        skipped, in_a_row, longest, longest_end, steps = (int(v) for v in counters)
        # the longest run is counted from the last check on (it may have begun before)
        self._counters = self._counters.clone()
        self._counters[self._LONGEST] = self._counters[self._IN_A_ROW]
        self._counters[self._LONGEST_END] = self._counters[self._STEPS]
        self.skipped_steps, self._skipped_in_a_row = skipped, in_a_row
        new = skipped - self._reported_skipped
        self._reported_skipped = skipped
        iteration = MessageHub.get_current_instance().get_info('iter', -1) + 1  # 1-based
        if new:
            print_log(f'{new} step(s) skipped up to iteration {iteration}: the loss was '
                      f'not finite ({skipped} skipped in this run, {in_a_row} in a row '
                      'now)', logger='current', level=logging.WARNING)
        if longest >= self.max_nonfinite_steps:
            per_step = self._accumulative_counts  # type: ignore  # iterations per update
            last = iteration - (steps - longest_end) * per_step
            first = last - longest * per_step + 1
            raise NonFiniteLossError(
                f'the loss was not finite for {longest} steps in a row '
                f'(iterations {first}-{last}), training stopped; the checkpoints '
                'written before are intact. Lower the learning rate '
                '(--cfg-options optim_wrapper.optimizer.lr=...), clip gradients '
                '(optim_wrapper.clip_grad=dict(max_norm=1.0)) or train in bfloat16/'
                'float32 instead of float16, then --resume')


def _keys_by_dtype(tensors: Dict[tuple, Tensor]) -> Dict[torch.dtype, list]:
    grouped: Dict[torch.dtype, list] = {}
    for key, tensor in tensors.items():
        grouped.setdefault(tensor.dtype, []).append(key)
    return grouped


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
        loss_scale: as ``AmpOptimWrapper``, used for float16 only (bfloat16 has
            float32's range: no scaler, on any device).
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
            if dtype in ('bfloat16', torch.bfloat16):  # float32's range: no scaler, so
                loss_scale = dict(enabled=False)  # no found_inf read, fused skip stays
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
