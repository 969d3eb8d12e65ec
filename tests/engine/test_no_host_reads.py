"""The training loop never waits on the device: mmengine's ``Runner``, set up as
``tools/train.py`` sets it up, runs the demo config with the model on ``meta`` and
reads no device value on the host between logging intervals.

How reads are counted. Every way a device value reaches the host (``.item()``,
``float()``/``int()``/``bool()`` of a tensor, ``.tolist()``, ``.cpu()``/``.to('cpu')``,
``.numpy()`` through them) goes through one of two aten ops: ``_local_scalar_dense``
(a scalar) or a copy to the CPU (``_to_copy`` / ``copy_``). A ``TorchDispatchMode``
sees every aten op, so it counts these honestly wherever they are called from
(mmengine, torch, this package). A meta tensor has no values, so such a read would
raise; the mode answers it instead (a scalar read: 0.0 for a float, 1 for a bool or an
integer, so a finite-flag reads "finite"; a copy: zeros, so the guard's counters read
"nothing skipped"), records the training iteration it happened in, and lets the run go
on. Reads of CPU
tensors are not device reads (a CPU learning-rate tensor, the loader's plans) and are
not counted.
"""
import json
import os.path as osp
import re
from typing import List, Optional

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.logging import MessageHub
from torch.utils._python_dispatch import TorchDispatchMode

from greenmim_cli.launch import prepare_train
from greenmim_cli.run_report import build_runner

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEMO = osp.join(REPO, 'configs', 'pretrain',
                'greenmim_swin-demo-w4_1xb16-400it_photos-128px.py')
TINY = osp.join(REPO, 'tests', 'tools', 'configs', 'tiny_greenmim.py')
aten = torch.ops.aten


class HostReads(TorchDispatchMode):
    """Records the training iteration (0-based) of every device->host read, and answers
    it (module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.iterations: List[int] = []

    def _record(self) -> None:
        # -1: before the loop (mmengine's init_weights logs a mean of every parameter)
        self.iterations.append(MessageHub.get_current_instance().get_info('iter', -1))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        source = args[0] if args and isinstance(args[0], torch.Tensor) else None
        if func is aten._local_scalar_dense.default and source.device.type != 'cpu':
            self._record()
            return 0.0 if source.is_floating_point() else 1  # a flag: "finite"
        if (func is aten._to_copy.default and source.device.type != 'cpu'
                and torch.device(kwargs.get('device') or source.device).type == 'cpu'):
            self._record()
            return torch.zeros(source.shape, dtype=kwargs.get('dtype') or source.dtype)
        if (func is aten.copy_.default and source.device.type == 'cpu'
                and args[1].device.type != 'cpu'):
            self._record()
            return source.zero_()
        return func(*args, **kwargs)


def meta_runner(tmp_path, monkeypatch, runtime_info: Optional[dict] = None):
    """The demo config's runner as tools/train.py builds it, 6 iterations, logging every
    3, no checkpoint or pictures inside the run, the model moved to ``meta``; the lr
    a tensor as in a compiled run; ``runtime_info``: another runtime-info hook."""
    monkeypatch.setenv('LOCAL_RANK', '0')
    cfg = prepare_train([DEMO, '--work-dir', str(tmp_path), '--cfg-options',
                         'train_cfg.max_iters=6', 'default_hooks.logger.interval=3',
                         'log_processor.window_size=3',
                         'default_hooks.checkpoint.interval=1000',
                         'default_hooks.checkpoint.save_last=False',
                         'train_dataloader.num_workers=0',
                         'train_dataloader.persistent_workers=False',
                         'train_dataloader.batch_size=4'])
    cfg.default_hooks.runtime_info = runtime_info or dict(type='DeviceRuntimeInfoHook',
                                                          tensor_lr=True)
    cfg.custom_hooks = []  # the reconstruction pictures draw real pixels
    cfg.visualizer.vis_backends = [dict(type='LocalVisBackend')]
    runner = build_runner(cfg)
    runner.model.to('meta')
    return runner


def test_the_training_loop_reads_the_device_only_at_logging_intervals(tmp_path,
                                                                       monkeypatch):
    runner = meta_runner(tmp_path, monkeypatch)
    with HostReads() as reads:
        runner.train()
    assert next(runner.model.parameters()).device.type == 'meta'
    # the lr a tensor filled in place (a compiled AdamW would not recompile), on the
    # CPU (reading it for the log is no device read)
    lr = runner.optim_wrapper.param_groups[0]['lr']
    assert isinstance(lr, torch.Tensor) and lr.device.type == 'cpu'
    # iterations 3 and 6 (0-based 2 and 5): one read each, the losses of the interval
    # and the non-finite guard's counters together
    assert [i for i in reads.iterations if i >= 0] == [2, 5]
    # the log got one value per iteration, as with mmengine's hook
    assert len(runner.message_hub.log_scalars['train/loss'].data[0]) == 6


def test_mmengines_loop_reads_the_device_every_iteration(tmp_path, monkeypatch):
    """The baseline the test above improves on, and proof that the count sees reads:
    mmengine's ``RuntimeInfoHook`` reads the losses every iteration (``.item()`` in
    ``MessageHub.update_scalar``)."""
    runner = meta_runner(tmp_path, monkeypatch, dict(type='RuntimeInfoHook'))
    with HostReads() as reads:
        runner.train()
    assert sorted(set(reads.iterations) - {-1}) == list(range(6))


class RecordLosses(Hook):
    """Reads each iteration's loss as mmengine's hook did (test only)."""

    priority = 'LOWEST'

    def __init__(self) -> None:
        self.losses: List[float] = []

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.losses.append(outputs['loss'].item())


def test_the_log_shows_mmengines_numbers(tmp_path, monkeypatch):
    """A real 6-iteration CPU run of the tiny GreenMIM config, logging every 3 with a
    window of 2 (so a mean is not the interval's): the loss buffer holds every
    iteration's loss as mmengine's ``RuntimeInfoHook`` would have put it there, and the
    log lines and scalars.json (LoggerHook hands TensorBoard the same dict) show its
    window means. (Within one run: two runs in one process do not draw the same data.)"""
    monkeypatch.setenv('LOCAL_RANK', '0')
    cfg = prepare_train([TINY, '--work-dir', str(tmp_path), '--cfg-options',
                         'train_cfg.max_iters=6', 'default_hooks.logger.interval=3',
                         'log_processor.window_size=2',
                         'default_hooks.checkpoint.interval=3'])
    runner = build_runner(cfg)
    record = RecordLosses()
    runner.register_hook(record)
    runner.train()
    assert type(runner.hooks[0]).__name__ == 'DeviceRuntimeInfoHook'
    buffer = list(runner.message_hub.log_scalars['train/loss'].data[0])
    assert buffer == record.losses and len(buffer) == 6
    (scalars, ) = tmp_path.glob('*/vis_data/scalars.json')
    lines = [json.loads(line) for line in scalars.read_text().splitlines()]
    # iterations 2 (the end of the 4-image loader: LoggerHook logs there), 3 and 6
    assert [line['iter'] for line in lines] == [2, 3, 6]
    means = [float(np.mean(buffer[line['iter'] - 2:line['iter']])) for line in lines]
    assert [line['loss'] for line in lines] == means
    assert all(line['lr'] == 0.1 for line in lines)
    # not compiled: the lr stays mmengine's float (module docstring of tensor_lr)
    assert isinstance(runner.optim_wrapper.param_groups[0]['lr'], float)
    (log, ) = tmp_path.glob('*/*.log')
    printed = re.findall(r'Iter\(train\) \[\d/6\].*? lr: (\S+).*?loss: (\S+)',
                         log.read_text())
    assert printed == [('1.0000e-01', f'{mean:.4f}') for mean in means]
