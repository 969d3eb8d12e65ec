"""The lr of each param group as one tensor filled in place: the schedule is mmengine's
to the last bit, and the tensor is the same object at every step."""
from typing import List

import torch
from mmengine.optim import CosineAnnealingLR, LinearLR, OptimWrapper

from greenmim_mm.engine.tensor_lr import keep_lr_tensors


def schedule(tensor_lr: bool) -> List[List[float]]:
    """20 steps of the demo's warm-up + cosine, two param groups; the lrs each step."""
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.AdamW([dict(params=[model.weight]),
                                   dict(params=[model.bias], lr=2e-3)], lr=1e-3)
    wrapper = OptimWrapper(optimizer)
    schedulers = [LinearLR(wrapper, start_factor=1e-3, by_epoch=False, end=4),
                  CosineAnnealingLR(wrapper, eta_min=1e-5, by_epoch=False, begin=4,
                                    end=20)]
    tensors: dict = {}
    seen, kept = [], set()
    for _ in range(20):
        if tensor_lr:
            keep_lr_tensors(wrapper, tensors)
            kept.add(tuple(id(group['lr']) for group in optimizer.param_groups))
        seen.append([float(group['lr']) for group in optimizer.param_groups])
        model(torch.randn(3, 4)).sum().backward()
        wrapper.step()
        wrapper.zero_grad()
        for scheduler in schedulers:
            scheduler.step()
    if tensor_lr:
        assert len(kept) == 1  # one tensor per group, all along
        assert all(isinstance(group['initial_lr'], float)
                   for group in optimizer.param_groups)
    return seen


def test_the_schedule_is_mmengines():
    floats, tensors = schedule(False), schedule(True)
    assert floats == tensors
    assert floats[0] != floats[3] != floats[-1]  # the lr did change


def test_a_value_written_by_a_hook_reaches_the_tensor():
    optimizer = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)
    tensors: dict = {}
    keep_lr_tensors(OptimWrapper(optimizer), tensors)
    kept = optimizer.param_groups[0]['lr']
    optimizer.param_groups[0]['lr'] = 0.05  # as CPUTimeBudgetHook does
    keep_lr_tensors(OptimWrapper(optimizer), tensors)
    assert optimizer.param_groups[0]["lr"] is kept and kept.item() == 0.05
