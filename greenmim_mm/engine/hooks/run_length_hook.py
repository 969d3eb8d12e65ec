"""A run resumed with another length follows the schedule of its new length.

mmengine restores every parameter scheduler from the checkpoint, ``begin`` and ``end``
included: ``--resume`` with ``train_cfg.max_iters=20`` after a 10-iteration run kept
the 10-iteration schedule and trained iterations 11-20 at its last lr (9.7e-6 of 1e-3),
silently; a run extended from 400 to 800 epochs would spend the extra 400 at the end of
a cosine. :class:`RunLengthHook` sees it before the first resumed step: when a
``FractionOfRun`` schedule (:mod:`greenmim_mm.engine.schedules`) was saved for another
length, it builds the optimizer's schedules again for the run's length and steps them
to the resumed iteration (and epoch), as the run would have stepped them had it been
that long from the start, and logs one line naming both lengths. The lr then jumps to
the new schedule's value there: from the 400-epoch run's ~0 to the 800-epoch cosine's
half-way lr at epoch 400. Schedules with fixed steps (not ``FractionOfRun``) keep
their steps and are stepped again with the others.

``tools/train.py`` adds the hook to every run (:func:`use_run_length_hook`); a config
run by other means lists it in ``custom_hooks``.
"""
import copy
from typing import List, Optional, Tuple

from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from mmengine.runner import EpochBasedTrainLoop


def _lists(schedulers) -> List[list]:
    """The runner's schedulers as lists (one per optim wrapper)."""
    if schedulers is None:
        return []
    if isinstance(schedulers, dict):
        return [group for group in schedulers.values() if isinstance(group, list)]
    return [schedulers] if isinstance(schedulers, list) else []


def run_length(runner, by_epoch: bool) -> int:
    """The run's length as mmengine gives it to a scheduler without ``end``."""
    return runner.max_epochs if by_epoch else runner.max_iters


def saved_length(scheduler, runner) -> Optional[Tuple[object, int]]:
    """``(length it was built for, the run's length)`` when a ``FractionOfRun``
    schedule was restored from a run of another length; None otherwise (also for
    schedules with fixed steps)."""
    from ..schedules import FractionOfRun
    recipe = getattr(scheduler, 'fraction_of_run', None)
    if recipe is None:
        return None
    length = run_length(runner, recipe['by_epoch'])
    expected = FractionOfRun.steps(length=length, **recipe)
    if scheduler.run_length != length:
        return scheduler.run_length, length
    if (scheduler.begin, scheduler.end) != expected:  # saved without run_length
        return 'another number of', length
    return None


def rebuild(schedulers: list, runner) -> None:
    """Build ``schedulers`` (one optim wrapper's, in order) again for the run's length
    and step them to the runner's iteration and epoch, in place."""
    from ..schedules import FractionOfRun
    optimizer = schedulers[0].optimizer
    for name in {scheduler.param_name for scheduler in schedulers}:
        for group in optimizer.param_groups:
            group[name] = group[f'initial_{name}']
    counted = getattr(optimizer, '_global_step', -1)
    fresh = []
    for scheduler in schedulers:  # built in order, each stepping once, as the Runner does
        recipe = getattr(scheduler, 'fraction_of_run', None)
        if recipe is not None:
            length = run_length(runner, recipe['by_epoch'])
            fresh.append(FractionOfRun(optimizer=optimizer, end=length, **recipe))
        else:
            again = copy.copy(scheduler)
            again._global_step, again.last_step = -1, -1
            again.step()
            fresh.append(again)
    optimizer._global_step = max(counted, 0)  # no "scheduler before optimizer" warning
    by_iter = [scheduler for scheduler in fresh if not scheduler.by_epoch]
    by_epoch = [scheduler for scheduler in fresh if scheduler.by_epoch]
    epoch_length = (len(runner.train_dataloader)
                    if isinstance(runner.train_loop, EpochBasedTrainLoop) else None)
    for iteration in range(runner.iter):  # what ParamSchedulerHook did, step by step
        for scheduler in by_iter:
            scheduler.step()
        if epoch_length and (iteration + 1) % epoch_length == 0:
            for scheduler in by_epoch:
                scheduler.step()
    schedulers[:] = fresh


@HOOKS.register_module()
class RunLengthHook(Hook):
    """After a resume, rebuild ``FractionOfRun`` schedules saved for another run length
    (see the module's text)."""

    priority = 'VERY_HIGH'

    def before_train(self, runner) -> None:
        for schedulers in _lists(runner.param_schedulers):
            changed = [found for found in (saved_length(scheduler, runner)
                                           for scheduler in schedulers) if found]
            if not changed or not schedulers:
                continue
            old, new = changed[0]
            rebuild(schedulers, runner)
            unit = next('epochs' if s.fraction_of_run['by_epoch'] else 'iterations'
                        for s in schedulers if hasattr(s, 'fraction_of_run'))
            lr = optimizer_lr(schedulers[0].optimizer)
            key = 'train_cfg.max_epochs' if unit == 'epochs' else 'train_cfg.max_iters'
            keep = f'{key}={old}' if isinstance(old, int) else 'the old length'
            runner.logger.warning(
                f'resumed a run of {old} {unit} as a run of {new}: the learning-rate '
                f'schedule is rebuilt for {new} {unit} from iteration {runner.iter + 1} '
                f'(lr now {lr:.4g}); to keep the old schedule resume with {keep}, to '
                'start a new one from these weights use load_from')


def optimizer_lr(optimizer) -> float:
    return optimizer.param_groups[0]['lr']


def use_run_length_hook(cfg) -> None:
    """Add :class:`RunLengthHook` to a config's ``custom_hooks`` (once)."""
    hooks = list(cfg.get('custom_hooks') or [])
    if not any(isinstance(hook, dict) and hook.get('type') == 'RunLengthHook'
               for hook in hooks):
        hooks.append(dict(type='RunLengthHook'))
    cfg.custom_hooks = hooks
