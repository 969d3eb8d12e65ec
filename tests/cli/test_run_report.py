"""What ``tools/train.py`` prints: a header, the progress lines and a final block that
says where everything went -- the long reports only in the log file -- and the next
command it suggests runs as written."""
import logging
import os
import os.path as osp
import shlex
import sys
import warnings
from io import StringIO

import pytest
from helpers import run_log
from readme_commands import REPO, check_command

from greenmim_cli.console import (FILE_ONLY, PYTHON_WARNINGS, THIRD_PARTY_NOISE,
                                        ConsoleFilter, quiet_third_party_warnings)
from greenmim_cli.launch import prepare_train, train

TINY = osp.join(REPO, 'tests', 'tools', 'configs', 'tiny_greenmim.py')
FILE_ONLY_MARKERS = ('System environment:', 'Config:', 'Hooks will be executed',
                     'paramwise_options', '"FileClient" will be deprecated')


@pytest.fixture(scope='module')
def report_run(tmp_path_factory):
    """The tiny GreenMIM config for 2 iterations through the tools' path (parameters
    with their own weight decay, reconstruction panels, TensorBoard), from the
    repository root as the README runs it; returns (terminal output, work dir)."""
    root = tmp_path_factory.mktemp('report')
    config = root / 'report_run.py'
    config.write_text(
        f'_base_ = [{TINY!r}]\n'
        'optim_wrapper = dict(paramwise_cfg=dict(norm_decay_mult=0.0))\n'
        "custom_hooks = [dict(type='ReconstructionVisualizationHook', interval=1,\n"
        '                     num_images=1)]\n'
        "visualizer = dict(vis_backends=[dict(type='LocalVisBackend'),\n"
        "                                dict(type='TensorboardVisBackend')])\n")
    work_dir = str(root / 'work')
    stream = StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(REPO)
        patch.setattr('sys.stdout', stream)  # mmengine's console handler writes here
        patch.setenv('LOCAL_RANK', '0')
        train(prepare_train([str(config), '--work-dir', work_dir]))
    return stream.getvalue(), work_dir


def test_terminal_is_short_and_the_log_file_complete(report_run):
    output, work_dir = report_run
    log = run_log(work_dir)
    for marker in FILE_ONLY_MARKERS:
        assert marker not in output, marker
        assert marker in log, marker
    assert len(output.splitlines()) < 30, output


def expected_python() -> str:
    """How the tools should name this interpreter from the repository root: by its
    path in the project's environment, else plain ``python``."""
    inside = osp.abspath(sys.executable).startswith(osp.join(REPO, '.venv') + os.sep)
    return '.venv/bin/python' if inside else 'python'


def test_header_and_final_block(report_run):
    output, work_dir = report_run
    for line in ('Training:', 'config ', 'model       GreenMIM',
                 '  backbone  GreenMIMSwin',
                 'GreenMIMDemoDataset, 4 images, 2 per step x 1 process on cpu',
                 'schedule    2 iterations', 'Iter(train) [2/2]', 'Done: 2 iterations',
                 'loss ', 'at the first)'):
        assert line in output, line
    rows = dict(line.strip().split(None, 1) for line in output.split('Done:')[1]
                .splitlines()[1:] if line.strip())
    assert rows['checkpoint'] == osp.join(work_dir, 'iter_2.pth')
    assert osp.isfile(rows['checkpoint'])
    pictures = rows['pictures'].split(' (')[0]
    assert osp.isfile(osp.join(pictures, 'reconstruction_2.png'))
    tensorboard = osp.join(osp.dirname(expected_python()), 'tensorboard')
    assert rows['tensorboard'] == f'{tensorboard} --logdir {work_dir}'
    assert osp.isfile(rows['full'].split(None, 1)[1])  # "full log  PATH"


def test_next_command_runs_as_written(report_run):
    """The suggested command draws a demo photograph with this run's checkpoint: its
    tool, config and arguments are checked like the README's commands."""
    output, _ = report_run
    line = next(line for line in output.splitlines() if 'next (draw one photo)' in line)
    command = line.split('next (draw one photo)', 1)[1].strip()
    words = shlex.split(command)
    assert words[0] == expected_python()
    assert words[1] == 'tools/visualize_reconstruction.py' and words[-1] == 'chelsea'
    check_command(shlex.join(['.venv/bin/python'] + words[1:]))


def test_console_filter_drops_only_its_records():
    stream = StringIO()
    logger = logging.getLogger('greenmim_mm.test_console_filter')
    handler = logging.StreamHandler(stream)
    handler.addFilter(ConsoleFilter())
    logger.addHandler(handler)
    try:
        for prefix, _ in FILE_ONLY + THIRD_PARTY_NOISE:
            logger.warning(prefix + ' and the rest')
        logger.warning('Iter(train) [ 20/400]  loss: 1.0')
    finally:
        logger.removeHandler(handler)
    assert stream.getvalue() == 'Iter(train) [ 20/400]  loss: 1.0\n'


def test_verbose_keeps_the_full_terminal():
    cfg = prepare_train([TINY, '--verbose'])
    assert cfg.console_log == 'full'
    assert 'console_log' not in prepare_train([TINY])


def test_only_the_listed_python_warnings_are_filtered():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        quiet_third_party_warnings()
        for category, message, _ in PYTHON_WARNINGS:
            warnings.warn(message + ' and the rest', category)
        warnings.warn('something else', UserWarning)
        warnings.warn('`broadcast_buffers` is deprecated', UserWarning)  # other class
    assert [str(w.message) for w in caught] == ['something else',
                                                '`broadcast_buffers` is deprecated']


@pytest.mark.parametrize('kind, dtype, shown', [
    ('SkipNonFiniteOptimWrapper', None, 'SGD lr 0.1'),
    ('AnyDeviceAmpOptimWrapper', 'bfloat16', 'SGD lr 0.1, AMP (bfloat16)')])
def test_schedule_row_says_amp_from_the_built_wrapper(kind, dtype, shown):
    """tools/train.py renames the config's AmpOptimWrapper: the header must read the
    wrapper the Runner built, not the config's type name."""
    from types import SimpleNamespace

    import torch
    from mmengine.config import Config
    from mmengine.registry import OPTIM_WRAPPERS

    from greenmim_cli.run_report import schedule_row

    class IterBasedTrainLoop:  # the name is what schedule_row reads
        pass

    model = torch.nn.Linear(2, 2)
    extra = {} if dtype is None else dict(dtype=dtype)
    wrapper = OPTIM_WRAPPERS.build(dict(
        type=kind, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), **extra))
    cfg = Config(dict(optim_wrapper=dict(type=kind, optimizer=dict(type='SGD', lr=0.1),
                                         **extra)))
    runner = SimpleNamespace(train_loop=IterBasedTrainLoop(), max_iters=10, cfg=cfg,
                             optim_wrapper=wrapper, param_schedulers=[])
    assert schedule_row(runner) == ('schedule', f'10 iterations; {shown}')
