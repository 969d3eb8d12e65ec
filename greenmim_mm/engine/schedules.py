"""Parameter schedules written as fractions of the run, so that a shorter run
(``--cfg-options train_cfg.max_iters=100``, or ``max_epochs``) keeps its shape: its
warm-up and its decay shrink with it, instead of stopping at the peak of a schedule
computed for the long run.

``FractionOfRun`` wraps one mmengine scheduler config and places it over
``[start, stop)`` of the run::

    param_scheduler = [
        dict(type='FractionOfRun', by_epoch=False, start=0.0, stop=0.1,
             scheduler=dict(type='LinearLR', start_factor=1e-3)),      # warm-up: 10 %
        dict(type='FractionOfRun', by_epoch=False, start=0.1, stop=1.0,
             scheduler=dict(type='CosineAnnealingLR', eta_min=1e-5)),  # then cosine
    ]

How it learns the run's length: mmengine's ``Runner`` gives every scheduler config
that has no ``end`` the length of the run as ``end`` (``max_iters``, or ``max_epochs``
with ``by_epoch=True``; ``Runner._build_param_scheduler``). ``FractionOfRun`` takes that
length and builds the wrapped scheduler with ``begin``/``end`` (and ``milestones``)
in steps -- a stock mmengine scheduler, so stepping, resuming and logging are
mmengine's. ``CosineAnnealingLR`` without ``T_max`` anneals over ``end - begin``.

Any length holds its promise. A warm-up of ``W`` steps is linear from
``start_factor x lr`` at its first step to ``lr`` at its last (step ``W - 1``), and the
cosine after it starts from ``lr``. A run so short that its warm-up is one step
(fewer than 15 iterations with a 10 % warm-up) has no room to ramp: that step is
the warm-up's last, at ``lr`` -- mmengine's ``LinearLR`` over one step would stay at
``start_factor x lr`` (``end - begin - 1 = 0`` steps to ramp over), and every chained
scheduler after it would decay from there (a 10-iteration demo run trained at 1e-6 to
9.7e-6 of its 1e-3). So a one-step linear scheduler is built at its end factor.

A run resumed with another length (``--resume`` with a new ``max_iters`` or
``max_epochs``) follows the schedule of its new length from the step it resumed at:
:class:`~greenmim_mm.engine.hooks.RunLengthHook` (the tools add it to every run).
"""
from typing import List, Optional, Sequence, Tuple

from mmengine.config import Config
from mmengine.optim.scheduler.param_scheduler import LinearParamScheduler
from mmengine.registry import PARAM_SCHEDULERS


def steps_of_fractions(length: int, start: float, stop: float,
                       milestones: Optional[Sequence[float]] = None) -> dict:
    """``begin``, ``end`` (and ``milestones``) in steps of a run of ``length`` steps.

    A fraction ``f`` is the step ``round(f * length)``, but at least step 1 when
    ``f > 0``, so that in a very short run a warm-up keeps one step and the scheduler
    after it starts where it ends; ``end`` is at least one step after ``begin``.
    Milestones are fractions of the whole run, returned in steps counted from ``begin``
    (as mmengine's ``MultiStepLR`` counts them).

    Raises:
        ValueError: fractions outside ``0 <= start < stop <= 1`` or a bad length.
    """
    if not 0 <= start < stop <= 1:
        raise ValueError(f'FractionOfRun needs 0 <= start < stop <= 1, got start={start} '
                         f'and stop={stop}: they are fractions of the run.')
    if not isinstance(length, int) or length < 1:
        raise ValueError(f'FractionOfRun got a run of {length!r} steps: leave `end` out '
                         "of its config, mmengine's Runner sets it to max_iters "
                         '(max_epochs with by_epoch=True).')
    def step(fraction: float) -> int:
        return 0 if fraction == 0 else max(1, round(fraction * length))

    begin = step(start)
    steps = dict(begin=begin, end=max(begin + 1, step(stop)))
    if milestones is not None:
        steps['milestones'] = [round(m * length) - begin for m in milestones]
    return steps


def wrapped_config(scheduler: dict, length: int, start: float = 0.0, stop: float = 1.0,
                   by_epoch: bool = True, milestones: Optional[Sequence[float]] = None,
                   convert_to_iter_based: bool = False) -> dict:
    """The config of the scheduler a ``FractionOfRun`` builds in a run of ``length``
    steps (its arguments, with the run's length for ``end``)."""
    cfg = dict(scheduler, by_epoch=by_epoch,
               **steps_of_fractions(length, start, stop, milestones))
    if convert_to_iter_based:
        cfg['convert_to_iter_based'] = True
    return cfg


def plain(value):
    """``value`` with mmengine's ``ConfigDict``\\ s as dicts and lists (nested)."""
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        items = [plain(item) for item in value]
        return tuple(items) if isinstance(value, tuple) else items
    return value


def is_linear(scheduler: dict) -> bool:
    """Whether ``scheduler`` (a config) builds an mmengine ``LinearParamScheduler``
    (``LinearLR``, ``LinearMomentum``, ...)."""
    kind = scheduler.get('type')
    cls = PARAM_SCHEDULERS.get(kind) if isinstance(kind, str) else kind
    return isinstance(cls, type) and issubclass(cls, LinearParamScheduler)


def at_end_if_one_step(cfg: dict, epoch_length: Optional[int] = None) -> dict:
    """``cfg`` (a built ``wrapped_config``) with a linear scheduler that spans one step
    set to its end factor: its one step is its last (see the module's text).
    ``epoch_length``: iterations per epoch when the config converts epochs to them
    (None: not known yet, ``cfg`` is returned as it is)."""
    steps = cfg['end'] - cfg['begin']
    if cfg.get('convert_to_iter_based'):
        if epoch_length is None:
            return cfg
        steps = int(cfg['end'] * epoch_length) - int(cfg['begin'] * epoch_length)
    if steps == 1 and is_linear(cfg):
        cfg = dict(cfg, start_factor=cfg.get('end_factor', 1.0))
    return cfg


@PARAM_SCHEDULERS.register_module()
class FractionOfRun:
    """Build ``scheduler`` over ``[start, stop)`` of the run (see the module's text).

    Building it returns the wrapped scheduler itself, with ``begin``/``end`` (and
    ``milestones``) in steps: ``FractionOfRun(...)`` is never an instance of this class.

    Args:
        scheduler: The wrapped scheduler's config, without ``begin``, ``end``,
            ``by_epoch``: e.g. ``dict(type='LinearLR', start_factor=1e-3)``.
        optimizer: Given by the Runner.
        end: The length of the run in steps; the Runner sets it: leave it out.
        start: Where the scheduler begins, as a fraction of the run. Defaults to 0.
        stop: Where it ends, as a fraction of the run. Defaults to 1.
        by_epoch: Steps are epochs (the run's length is ``max_epochs``) or
            iterations (``max_iters``). Defaults to True, as mmengine's schedulers.
        milestones: ``MultiStepLR``'s milestones as fractions of the run.
        convert_to_iter_based: With ``by_epoch``: update every iteration, as
            mmengine's option of that name. Defaults to False.
        epoch_length: Given by the Runner (iterations per epoch).
    """

    def __new__(cls, scheduler: dict, optimizer, end: int, start: float = 0.0,
                stop: float = 1.0, by_epoch: bool = True,
                milestones: Optional[Sequence[float]] = None,
                convert_to_iter_based: bool = False,
                epoch_length: Optional[int] = None):
        cfg = at_end_if_one_step(wrapped_config(
            scheduler, end, start, stop, by_epoch, milestones, convert_to_iter_based),
            epoch_length)
        built = PARAM_SCHEDULERS.build(
            cfg, default_args=dict(optimizer=optimizer, epoch_length=epoch_length))
        # what RunLengthHook needs to build it again for another length after a resume
        # (saved with the scheduler's state: after a resume, the old run's length)
        built.run_length = end
        # (plain types: torch.load(weights_only=True) refuses mmengine's ConfigDict)
        built.fraction_of_run = dict(
            scheduler=plain(scheduler), start=start, stop=stop, by_epoch=by_epoch,
            milestones=None if milestones is None else list(milestones),
            convert_to_iter_based=convert_to_iter_based, epoch_length=epoch_length)
        return built

    @staticmethod
    def steps(length: int, scheduler: dict, start: float = 0.0, stop: float = 1.0,
              by_epoch: bool = True, milestones: Optional[Sequence[float]] = None,
              convert_to_iter_based: bool = False,
              epoch_length: Optional[int] = None) -> Tuple[int, int]:
        """``(begin, end)`` of the scheduler built in a run of ``length`` steps, in its
        own steps (iterations after ``convert_to_iter_based``)."""
        cfg = wrapped_config(scheduler, length, start, stop, by_epoch, milestones)
        if convert_to_iter_based:
            return int(cfg['begin'] * epoch_length), int(cfg['end'] * epoch_length)
        return cfg['begin'], cfg['end']

    @classmethod
    def build_iter_from_epoch(cls, *args, epoch_length: int, **kwargs):
        """What mmengine calls for ``convert_to_iter_based=True``."""
        return cls(*args, convert_to_iter_based=True, epoch_length=epoch_length,
                   **kwargs)


def resolved_schedule(cfg: Config) -> List[dict]:
    """The config's ``param_scheduler`` with every ``FractionOfRun`` replaced by the
    scheduler config it builds for the config's run length (``begin``/``end`` in
    epochs or iterations, before any ``convert_to_iter_based``): what a run of this
    config steps through, readable without building a Runner."""
    resolved = []
    for scheduler in cfg.get('param_scheduler') or []:
        if scheduler.get('type') != 'FractionOfRun':
            resolved.append(dict(scheduler))
            continue
        args = {key: value for key, value in scheduler.items() if key != 'type'}
        unit = 'max_epochs' if args.get('by_epoch', True) else 'max_iters'
        length = cfg.train_cfg[unit]
        resolved.append(at_end_if_one_step(wrapped_config(length=length, **args)))
    return resolved
