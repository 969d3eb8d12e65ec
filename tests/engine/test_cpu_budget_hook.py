"""CPUTimeBudgetHook: the schedule is mmengine's warm-up + cosine over the budget's
fraction, training stops at the budget, and the final weights and costs are written."""
import json
import math
import os.path as osp

import pytest
import torch
from mmengine.model import BaseModel
from mmengine.optim import CosineAnnealingLR, LinearLR
from mmengine.runner import Runner
from torch import nn

import greenmim_mm  # noqa: F401  (registers the hook)
from greenmim_mm.engine.hooks.cpu_budget_hook import CPUTimeBudgetHook, budget_lr_factor


def test_factor_is_mmengines_linear_then_cosine():
    """At iteration i of N, the lr at fraction i / N lies between the lrs mmengine's
    own LinearLR + CosineAnnealingLR give at iterations i - 1 and i + 1: the same curve
    up to its discretisation (the demo's schedule: 400 iterations, 40 of warm-up from
    1e-3, cosine down to 1e-5 from lr 1e-3)."""
    iters, warmup, lr, eta_min = 400, 40, 1e-3, 1e-5
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr)
    schedulers = [
        LinearLR(optimizer, start_factor=1e-3, by_epoch=False, begin=0, end=warmup),
        CosineAnnealingLR(optimizer, T_max=iters - warmup, eta_min=eta_min,
                          by_epoch=False, begin=warmup, end=iters)]
    reference = []
    for _ in range(iters):
        reference.append(optimizer.param_groups[0]['lr'])
        optimizer.step()
        for scheduler in schedulers:
            scheduler.step()
    for i in range(1, iters - 1):
        ours = lr * budget_lr_factor(i / iters, warmup / iters, 1e-3, eta_min / lr)
        low, high = sorted((reference[i - 1], reference[i + 1]))
        assert low * (1 - 1e-9) <= ours <= high * (1 + 1e-9), i
    assert budget_lr_factor(0.0, 0.1, 1e-3, 0.01) == pytest.approx(reference[0] / lr)
    assert budget_lr_factor(1.0, 0.1, 1e-3, 0.01) == pytest.approx(eta_min / lr)
    assert budget_lr_factor(1.5, 0.1, 1e-3, 0.01) == pytest.approx(0.01)  # clamped


class _Toy(BaseModel):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(8, 1)

    def forward(self, inputs, mode='tensor'):
        loss = (self.linear(inputs) ** 2).mean()
        return dict(loss=loss) if mode == 'loss' else loss


def _runner(work_dir: str, budget_s: float, custom_hooks=None, param_scheduler=None):
    data = [dict(inputs=torch.randn(8)) for _ in range(64)]
    return Runner(
        model=_Toy(), work_dir=work_dir,
        train_dataloader=dict(dataset=data, batch_size=4, num_workers=0,
                              sampler=dict(type='InfiniteSampler', shuffle=True),
                              collate_fn=dict(type='default_collate')),
        train_cfg=dict(by_epoch=False, max_iters=10**9),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
        param_scheduler=param_scheduler,
        custom_hooks=custom_hooks or [dict(type='CPUTimeBudgetHook', budget_s=budget_s)],
        default_hooks=dict(checkpoint=None, logger=None), default_scope='mmengine')


def test_stops_at_the_budget_and_writes_costs(tmp_path):
    runner = _runner(str(tmp_path), budget_s=0.5)
    runner.train()
    with open(tmp_path / 'cpu_budget.json') as f:
        summary = json.load(f)
    assert summary['budget_s'] == 0.5
    assert 0.5 <= summary['cpu_s'] < 1.5  # stopped after the step that reached it
    assert summary['curve'][-2]['cpu_s'] < 0.5 <= summary['curve'][-1]['cpu_s']
    assert summary['steps'] == len(summary['curve']) == runner.iter > 10
    assert summary['images'] == 4 * summary['steps']
    assert all(math.isfinite(point['loss']) for point in summary['curve'])
    assert osp.isfile(summary['checkpoint'])
    state = torch.load(summary['checkpoint'], map_location='cpu')
    assert 'optimizer' not in state and state['meta']['iter'] == summary['steps']
    # the lr ended annealed, close to min_lr_ratio * lr
    assert runner.optim_wrapper.param_groups[0]['lr'] < 0.1 * 0.02


def test_refuses_a_second_scheduler(tmp_path):
    runner = _runner(str(tmp_path), budget_s=0.2, param_scheduler=dict(
        type='ConstantLR', factor=1.0, by_epoch=False))
    with pytest.raises(ValueError, match='param_scheduler = None'):
        runner.train()


def test_bad_arguments():
    with pytest.raises(ValueError, match='positive number of CPU seconds'):
        CPUTimeBudgetHook(budget_s=0)
    with pytest.raises(ValueError, match='warmup_ratio'):
        CPUTimeBudgetHook(budget_s=1, warmup_ratio=1.0)
