"""Train for a budget of CPU seconds instead of a number of iterations.

Registered in mmengine's root ``HOOKS``, so configs of any scope (mmpretrain, mmdet)
find it.
"""
import json
import math
import os.path as osp
import time
from typing import Dict, List, Optional

from mmengine.hooks import Hook
from mmengine.registry import HOOKS


def budget_lr_factor(fraction: float, warmup_ratio: float, start_factor: float,
                     min_lr_ratio: float) -> float:
    """Learning-rate multiplier at ``fraction`` of the budget spent.

    mmengine's ``LinearLR`` warm-up followed by ``CosineAnnealingLR`` (with
    ``eta_min = min_lr_ratio * lr``), with the budget's fraction in place of the
    iteration count: linear from ``start_factor`` to 1 over the first
    ``warmup_ratio`` of the budget, then a half cosine down to ``min_lr_ratio``.
    """
    fraction = min(max(fraction, 0.0), 1.0)
    if fraction < warmup_ratio:
        return start_factor + (1.0 - start_factor) * fraction / warmup_ratio
    progress = (fraction - warmup_ratio) / max(1.0 - warmup_ratio, 1e-12)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


@HOOKS.register_module()
class CPUTimeBudgetHook(Hook):
    """End training when the process has spent ``budget_s`` CPU seconds on it.

    Two models compared "at equal training time" on a shared machine: wall-clock time
    depends on what else runs at that moment; the CPU time of a single-threaded
    process (``time.process_time()``: forward, backward, update and data loading with
    ``num_workers=0``) hardly does. This hook makes that time the budget:

    * the learning rate follows warm-up + cosine (:func:`budget_lr_factor`) over the
      *fraction of the budget spent*, so every run anneals fully, however many steps
      it fits in (the config's ``param_scheduler`` must be None);
    * training stops after the first iteration that reaches the budget
      (``train_cfg.max_iters`` is only an upper bound, which also ends it);
    * after that iteration it saves ``<work_dir>/<checkpoint>`` and writes
      ``<work_dir>/<summary>``: the budget, steps, images seen, CPU and wall seconds
      spent, and the loss after every step with its CPU and wall time.

    The clock starts at ``before_train`` (after the model, optimizer and dataloader
    are built) and counts every training iteration, data loading and hooks included.

    Args:
        budget_s: CPU seconds of training.
        warmup_ratio: Fraction of the budget spent warming up. Defaults to 0.1.
        start_factor: Learning-rate factor at the start of the warm-up.
        min_lr_ratio: Learning-rate factor at the end of the budget.
        checkpoint: File name of the final checkpoint in the work dir.
        summary: File name of the JSON summary in the work dir.
    """

    priority = 'HIGHEST'  # set the lr before the other hooks read it

    def __init__(self, budget_s: float, warmup_ratio: float = 0.1,
                 start_factor: float = 1e-3, min_lr_ratio: float = 1e-2,
                 checkpoint: str = 'budget_end.pth',
                 summary: str = 'cpu_budget.json') -> None:
        if budget_s <= 0:
            raise ValueError(f'budget_s must be a positive number of CPU seconds, got '
                             f'{budget_s}.')
        if not 0.0 <= warmup_ratio < 1.0:
            raise ValueError(f'warmup_ratio must lie in [0, 1), got {warmup_ratio}.')
        self.budget_s = float(budget_s)
        self.warmup_ratio = warmup_ratio
        self.start_factor = start_factor
        self.min_lr_ratio = min_lr_ratio
        self.checkpoint = checkpoint
        self.summary = summary
        self._base_lrs: Dict[str, List[float]] = {}
        self._curve: List[Dict[str, float]] = []
        self._images = 0
        self._cpu0 = self._wall0 = 0.0

    def _spent(self) -> float:
        return time.process_time() - self._cpu0

    def before_train(self, runner) -> None:
        if runner.param_schedulers:
            raise ValueError(
                'CPUTimeBudgetHook schedules the learning rate over the budget: set '
                'param_scheduler = None in the config.')
        wrappers = getattr(runner.optim_wrapper, 'optim_wrappers',
                           {'': runner.optim_wrapper})
        self._base_lrs = {name: [group['lr'] for group in wrapper.param_groups]
                          for name, wrapper in wrappers.items()}
        self._curve, self._images = [], 0
        self._cpu0, self._wall0 = time.process_time(), time.perf_counter()

    def before_train_iter(self, runner, batch_idx: int,
                          data_batch: Optional[dict] = None) -> None:
        factor = budget_lr_factor(self._spent() / self.budget_s, self.warmup_ratio,
                                  self.start_factor, self.min_lr_ratio)
        wrappers = getattr(runner.optim_wrapper, 'optim_wrappers',
                           {'': runner.optim_wrapper})
        for name, wrapper in wrappers.items():
            for group, base_lr in zip(wrapper.param_groups, self._base_lrs[name]):
                group['lr'] = base_lr * factor

    def after_train_iter(self, runner, batch_idx: int,
                         data_batch: Optional[dict] = None,
                         outputs: Optional[dict] = None) -> None:
        if data_batch is not None:
            self._images += len(data_batch['inputs'])
        loss = (outputs or {}).get('loss')
        self._curve.append(dict(
            step=runner.iter + 1, cpu_s=self._spent(),
            wall_s=time.perf_counter() - self._wall0,
            loss=float(loss) if loss is not None else math.nan))
        if self._spent() >= self.budget_s or runner.iter + 1 >= runner.max_iters:
            runner.train_loop.stop_training = True
            self._finish(runner)

    def _finish(self, runner) -> None:
        """Save the weights (as ``CheckpointHook`` does after an iteration) and the
        summary."""
        cpu_s, wall_s = self._spent(), time.perf_counter() - self._wall0
        runner.save_checkpoint(runner.work_dir, self.checkpoint, save_optimizer=False,
                               save_param_scheduler=False, by_epoch=False)
        summary = dict(budget_s=self.budget_s, steps=len(self._curve),
                       images=self._images, cpu_s=cpu_s, wall_s=wall_s,
                       checkpoint=osp.join(runner.work_dir, self.checkpoint),
                       curve=self._curve)
        with open(osp.join(runner.work_dir, self.summary), 'w') as f:
            json.dump(summary, f)
