"""What ``tools/train.py`` and ``tools/test.py`` print around mmengine's progress lines.

:func:`build_runner` builds the config's ``Runner`` with a quiet terminal
(:mod:`greenmim_cli.console`) and a :class:`RunReportHook`, which logs

- before the run, a header: the config, the model in a few lines (parameters of each
  part), the data, the schedule, and where the full log goes;
- after it, one block: the final loss (or the metrics), where the checkpoint, the
  pictures and the TensorBoard logs are, and the next command to run.

Both go through the runner's logger, so the log file has them too. Paths are shown
relative to the working directory when they lie under it (the README's commands run
from the repository root), so that they can be pasted as they are.
"""
import os
import os.path as osp
import re
import sys
import time
from typing import Dict, List, Optional, Tuple

from mmengine.dist import get_world_size, is_main_process
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.optim import AmpOptimWrapper
from mmengine.registry import RUNNERS
from mmengine.runner import Runner
from torch import nn

from greenmim_mm.engine.accumulation import AccumulatingRunner

from .console import FULL, QUIET, quiet_console

BACKBONE_KEYS = ('arch', 'img_size', 'window_size')  # shown in the model summary
DEMO_IMAGE = 'chelsea'  # the photograph a pretraining run's next command draws
Rows = List[Tuple[str, str]]


class QuietRunner(AccumulatingRunner):
    """mmengine's ``Runner`` (counting gradient accumulation in ``--auto-scale-lr``)
    whose logger has a quiet terminal from the start, before the environment report and
    the config dump are logged."""

    def build_logger(self, *args, **kwargs):
        logger = super().build_logger(*args, **kwargs)
        quiet_console(logger)
        return logger


def build_runner(cfg) -> Runner:
    """The config's runner: quiet terminal unless ``cfg.console_log == 'full'``
    (``--verbose``), with a :class:`RunReportHook`."""
    quiet = cfg.get('console_log', QUIET) != FULL
    if 'runner_type' in cfg:
        runner = RUNNERS.build(cfg)
        if quiet:  # from now on: what was logged while building it was not filtered
            quiet_console(runner.logger)
    else:
        runner = (QuietRunner if quiet else AccumulatingRunner).from_cfg(cfg)
    runner.register_hook(RunReportHook(), priority='VERY_LOW')
    return runner


# ----------------------------------------------------------------------------------
# Formatting
# ----------------------------------------------------------------------------------
def shown_path(path: str) -> str:
    """``path`` relative to the working directory if it lies under it."""
    path = osp.abspath(path)
    relative = osp.relpath(path, os.getcwd())
    return path if relative.startswith('..') else relative


def python_command() -> str:
    """This interpreter as the working directory calls it (``.venv/bin/python`` for
    the project's environment), else ``python``."""
    shown = shown_path(sys.executable)
    return 'python' if osp.isabs(shown) else shown


# the installed commands of the repository's scripts (setup.py's entry points)
INSTALLED_COMMANDS = {'train.py': 'greenmim-train', 'test.py': 'greenmim-test',
                      'visualize_reconstruction.py': 'greenmim-visualize'}


def tool_command(tool: str, *args: str) -> str:
    """``python tools/<tool> args...`` in a checkout (the working directory has
    ``tools/<tool>``, as where the README's commands run), else the installed command
    (``greenmim-visualize args...``)."""
    script = osp.join('tools', tool)
    if osp.isfile(script):
        return ' '.join([python_command(), script, *args])
    return ' '.join([INSTALLED_COMMANDS[tool], *args])


def millions(count: int) -> str:
    return f'{count / 1e6:.2f} M' if count else '0'


def duration(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    return f'{minutes} min {seconds} s' if minutes else f'{seconds} s'


def block(title: str, rows: Rows) -> str:
    """A title line over ``name  value`` rows, values aligned."""
    width = max(len(name) for name, _ in rows)
    return '\n'.join([title] + [f'  {name:<{width}}  {value}' for name, value in rows])


ARCH_KEYS = ('embed_dims', 'depths', 'num_heads')  # of an arch given as a dict


def _short(value) -> str:
    if isinstance(value, dict):
        shown = {k: v for k, v in value.items() if k in ARCH_KEYS} or value
        return 'dict(' + ', '.join(f'{k}={v}' for k, v in shown.items()) + ')'
    return str(value)


# ----------------------------------------------------------------------------------
# The header
# ----------------------------------------------------------------------------------
def bare_model(runner: Runner) -> nn.Module:
    return runner.model.module if is_model_wrapper(runner.model) else runner.model


def model_rows(runner: Runner) -> Rows:
    """``model`` and one row per part (backbone, neck, heads) with its parameters."""
    model = bare_model(runner)
    count = lambda module: millions(sum(p.numel() for p in module.parameters()))  # noqa
    rows = [('model', f'{type(model).__name__}, {count(model)} parameters')]
    backbone_cfg = runner.cfg.get('model', {}).get('backbone') or {}
    for name, child in model.named_children():
        if name == 'data_preprocessor':
            continue
        text = f'{type(child).__name__}, {count(child)}'
        if name == 'backbone':
            text += ''.join(f'; {key}={_short(backbone_cfg[key])}'
                            for key in BACKBONE_KEYS if key in backbone_cfg)
        rows.append((f'  {name}', text))
    return rows


def data_row(runner: Runner, dataloader) -> Tuple[str, str]:
    dataset = dataloader.dataset
    device = next(bare_model(runner).parameters()).device
    world = get_world_size()
    # mmdet batches with a batch sampler (grouped by aspect ratio): the size is there
    batch = dataloader.batch_size or getattr(dataloader.batch_sampler, 'batch_size', '?')
    return ('data', f'{type(dataset).__name__}, {len(dataset)} images, {batch} per '
                    f'step x {world} process{"es" if world > 1 else ""} on {device.type}')


def schedule_row(runner: Runner) -> Tuple[str, str]:
    """Length of the run, optimizer and learning-rate schedule (as built)."""
    if type(runner.train_loop).__name__ == 'IterBasedTrainLoop':
        length = f'{runner.max_iters} iterations'
    else:
        length = (f'{runner.max_epochs} epochs of {len(runner.train_dataloader)} '
                  'iterations')
    optim_cfg = runner.cfg.optim_wrapper
    optimizer = optim_cfg.get('optimizer', {})
    text = f'{length}; {optimizer.get("type", "?")} lr {optimizer.get("lr", "?"):g}'
    # the built wrapper: tools/train.py renames the config's type (AnyDeviceAmp...)
    if isinstance(runner.optim_wrapper, AmpOptimWrapper):
        dtype = str(runner.optim_wrapper.cast_dtype or 'float16').replace('torch.', '')
        text += f', AMP ({dtype})'
    schedulers = runner.param_schedulers or []
    if isinstance(schedulers, dict):  # one list per optimizer: the first one's
        schedulers = next(iter(schedulers.values()))
    steps = [f'{type(s).__name__} {"epochs" if s.by_epoch else "its"} {s.begin}-{s.end}'
             for s in schedulers]
    return ('schedule', '; '.join([text] + steps))


def log_file(runner: Runner) -> str:
    return shown_path(osp.join(runner.log_dir, f'{runner.timestamp}.log'))


def header(runner: Runner, mode: str) -> str:
    """The block logged before training (``mode='train'``) or testing."""
    rows: Rows = [('config', shown_path(runner.cfg.filename or '<config object>'))]
    if mode == 'test' and runner.cfg.get('load_from'):
        rows.append(('checkpoint', shown_path(runner.cfg.load_from)))
    rows += model_rows(runner)
    if mode == 'train':
        rows += [data_row(runner, runner.train_dataloader), schedule_row(runner)]
    else:
        rows.append(data_row(runner, runner.test_dataloader))
    rows += [('work dir', shown_path(runner.work_dir)),
             ('full log', f'{log_file(runner)} (config, environment, every setting)')]
    return block(f'{"Training" if mode == "train" else "Testing"}:', rows)


# ----------------------------------------------------------------------------------
# The final block
# ----------------------------------------------------------------------------------
def _iteration_number(path: str) -> int:
    numbers = re.findall(r'\d+', osp.basename(path))
    return int(numbers[-1]) if numbers else -1


def pictures_row(runner: Runner) -> Optional[Tuple[str, str]]:
    folder = osp.join(runner.log_dir, 'vis_data', 'vis_image')
    names = sorted((name for name in os.listdir(folder) if name.endswith('.png')),
                   key=_iteration_number) if osp.isdir(folder) else []
    if not names:
        return None
    listed = names[0] if len(names) == 1 else f'{names[0]} ... {names[-1]}'
    return ('pictures', f'{shown_path(folder)}/ ({listed}: {len(names)} files)')


def tensorboard_row(runner: Runner) -> Optional[Tuple[str, str]]:
    backends = (runner.cfg.get('visualizer') or {}).get('vis_backends') or []
    if not any(b.get('type') == 'TensorboardVisBackend' for b in backends):
        return None
    tensorboard = osp.join(osp.dirname(python_command()), 'tensorboard')
    return ('tensorboard', f'{tensorboard} --logdir {shown_path(runner.work_dir)}')


def metric_text(metrics: Dict[str, float]) -> str:
    return ', '.join(f'{key} {value:.3f}' if isinstance(value, float) else
                     f'{key} {value}' for key, value in metrics.items())


def train_summary(runner: Runner, seconds: float) -> str:
    """The block logged after training."""
    rows: Rows = []
    losses = runner.message_hub.log_scalars.get('train/loss')
    if losses is not None and len(losses.data[0]):
        count = len(losses.data[0])  # the iterations of this run (and a resumed one's)
        window = runner.log_processor.window_size  # what the progress lines average
        window = min(window, count) if isinstance(window, int) else count
        rows.append(('loss', f'{losses.mean(window):.4f} (mean of the last {window} '
                             f'iterations; {losses.data[0][0]:.4f} at the first)'))
    val = {key[len('val/'):]: buffer.current()
           for key, buffer in runner.message_hub.log_scalars.items()
           if key.startswith('val/') and 'time' not in key}
    if val:
        rows.append(('validation', metric_text(val)))
    checkpoint = runner.message_hub.get_info('last_ckpt')
    if checkpoint:
        rows.append(('checkpoint', shown_path(checkpoint)))
    rows += [row for row in (pictures_row(runner), tensorboard_row(runner)) if row]
    rows.append(('full log', log_file(runner)))
    if checkpoint and runner.cfg.filename:
        config = shown_path(runner.cfg.filename)
        if runner.cfg.model.get('type') == 'GreenMIM':
            command = tool_command('visualize_reconstruction.py', config,
                                   shown_path(checkpoint), DEMO_IMAGE)
            what = 'next (draw one photo)'
        else:
            command = tool_command('test.py', config, shown_path(checkpoint))
            what = 'next (evaluate)'
        rows.append((what, command))
    iters = f'{runner.iter} iterations' + (
        f' ({runner.epoch} epochs)' if runner.epoch else '')
    return block(f'Done: {iters} in {duration(seconds)}.', rows)


def test_summary(runner: Runner, metrics: Dict[str, float], seconds: float) -> str:
    """The block logged after testing."""
    rows: Rows = [('metrics', metric_text(metrics) or 'none'),
                  ('full log', log_file(runner))]
    return block(f'Done: tested in {duration(seconds)}.', rows)


class RunReportHook(Hook):
    """Log :func:`header` before a run and its final block after it (main process).

    ``priority='VERY_LOW'``: it runs after the checkpoint is saved and the metrics are
    computed.
    """

    priority = 'VERY_LOW'

    def __init__(self) -> None:
        self._start = time.time()
        self._metrics: Dict[str, float] = {}

    def _log(self, runner: Runner, text: str) -> None:
        if is_main_process():
            runner.logger.info(text)

    def before_train(self, runner) -> None:
        self._start = time.time()
        self._log(runner, header(runner, 'train'))

    def after_train(self, runner) -> None:
        self._log(runner, train_summary(runner, time.time() - self._start))

    def before_test(self, runner) -> None:
        self._start = time.time()
        self._log(runner, header(runner, 'test'))

    def after_test_epoch(self, runner, metrics: Optional[Dict[str, float]] = None
                         ) -> None:
        self._metrics = dict(metrics or {})

    def after_test(self, runner) -> None:
        self._log(runner, test_summary(runner, self._metrics,
                                       time.time() - self._start))
