"""The ``host`` section: what the training process itself spends per GreenMIM step.

On a GPU the visible-only step is small and the host side (Python dispatch, planning)
decides its speed. Here the whole training step runs with the model on the ``meta``
device: every op is dispatched, shapes are propagated, nothing is computed, so the
thread-CPU time is the host's share of a step. Two ways, side by side:

- ``loader plan``: the batch carries the plan that ``greenmim_collate`` made (in the
  DataLoader workers in training), the step only dispatches;
- ``planning in the step``: a batch of bare masks, planned by the model in the step.

Plus the planning itself (``pack_visible_plan``: what the workers do per batch).
"""
import os
import statistics
import time
from typing import Callable, List

import torch
from mmengine.optim import build_optim_wrapper
from mmengine.registry import DefaultScope
from mmpretrain.structures import DataSample

from greenmim_mm.datasets.collate import collate_geometry
from greenmim_mm.ops.masking import random_unit_masks
from greenmim_mm.ops.visible_plan import build_visible_plan, pack_visible_plan
from .comparisons import comparison


def _cpu_ms(fn: Callable[[], object], repeats: int, warmup: int = 2) -> List[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.thread_time()
        fn()
        times.append((time.thread_time() - start) * 1e3)
    return times


def host_table(backbone: str = 'swin', arch: str = 'base', batch: int = 128,
               repeats: int = 5, seed: int = 0) -> dict:
    """Host-side thread-CPU ms per training step, loader plan vs planning in the step."""
    from mmpretrain.registry import MODELS

    cfg = comparison(backbone, arch)[0].cfg
    crop = next(step['scale'] for step in cfg.train_dataloader.dataset.pipeline
                if step['type'] in ('RandomResizedCrop', 'TensorRandomResizedCrop'))
    masker = next(step for step in cfg.train_dataloader.dataset.pipeline
                  if step['type'] == 'GreenMIMMaskGenerator')
    grid = (crop // masker['mask_unit'], ) * 2
    num_visible = int(grid[0] * grid[1] * (1 - masker['mask_ratio']))
    geometry = collate_geometry(cfg.model.backbone, (crop, crop))
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(cfg.model).to('meta')
    optim_wrapper = build_optim_wrapper(
        model, dict(optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.95))))
    generator = torch.Generator().manual_seed(seed)
    masks = [random_unit_masks(batch, grid, num_visible, generator)
             for _ in range(repeats + 2)]

    def batches(with_plan: bool):
        for mask in masks:
            data = dict(inputs=torch.zeros(batch, 3, crop, crop, dtype=torch.uint8),
                        data_samples=[DataSample().set_mask(m) for m in mask])
            if with_plan:
                data['plan'] = pack_visible_plan(geometry, mask)  # as the workers
            yield data

    rows = []
    planning = _cpu_ms(lambda: pack_visible_plan(geometry, masks[0]), repeats)
    for name, with_plan in (('loader plan', True), ('planning in the step', False)):
        ready = list(batches(with_plan))
        steps = iter(ready)
        times = _cpu_ms(lambda: model.train_step(next(steps), optim_wrapper),
                        repeats)
        rows.append((name, statistics.median(times), min(times),
                     0.0 if with_plan else statistics.median(planning)))
    rows.append(('the plan itself (loader workers)', statistics.median(planning),
                 min(planning), statistics.median(planning)))
    header = ('step', 'host ms (median)', 'host ms (min)', 'of which planning ms')
    notes = (f'GreenMIM {backbone} {arch}, {crop} px, {num_visible} of '
             f'{grid[0] * grid[1]} units visible, batch {batch}; the training step with '
             'the model on the meta device (every op dispatched, nothing computed): '
             f'thread-CPU time, {repeats} steps after 2 warm-up (load average '
             f'{os.getloadavg()[0]:.1f}).', )
    return dict(title='Host side of a training step', header=header, rows=rows,
                notes=notes)
