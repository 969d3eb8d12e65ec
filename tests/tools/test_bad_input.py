"""Bad command lines fail with one line that says what to do, and write nothing: no
new work dir, an existing one unchanged, so the next (good) run just works."""
import os
import os.path as osp
import shutil
from typing import Dict, Tuple

import pytest

from greenmim_mm.engine.launch import UsageError, prepare_test, prepare_train

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = 'tests/tools/configs/tiny_cls.py'  # relative to the repo root (the tools' cwd)
CFG = osp.join(REPO_ROOT, CONFIG)  # for main() run in this process, from elsewhere


def snapshot(folder: str) -> Dict[str, Tuple[int, float]]:
    """Every file under ``folder`` with its size and modification time."""
    files = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = osp.join(root, name)
            files[osp.relpath(path, folder)] = (osp.getsize(path), osp.getmtime(path))
    return files


def assert_one_line_error(result, *fragments: str, prefix: str = 'error: ') -> None:
    assert result.returncode != 0, result.describe()
    line = result.last_error_line
    assert line.startswith(prefix), result.describe()
    for fragment in fragments:
        assert fragment in line, result.describe()


def test_dist_train_without_arguments_prints_usage(run_tool):
    result = run_tool(['tools/dist_train.sh'])
    assert result.returncode == 2
    assert result.stderr.strip().count('\n') == 0, result.describe()  # one line
    assert_one_line_error(result, 'CONFIG GPUS', prefix='usage: ')


def test_dist_test_with_too_few_arguments_prints_usage(run_tool):
    result = run_tool(['tools/dist_test.sh', CONFIG])
    assert result.returncode == 2
    assert_one_line_error(result, 'CONFIG CHECKPOINT GPUS', prefix='usage: ')


def test_dist_train_missing_config(run_tool, tmp_path):
    work_dir = tmp_path / 'work'
    result = run_tool(['tools/dist_train.sh', 'configs/no_such.py', '2',
                       '--work-dir', work_dir])
    assert_one_line_error(result, 'config file not found: configs/no_such.py')
    assert not work_dir.exists()


@pytest.mark.parametrize('script, argv', [
    ('tools/dist_train.sh', [CONFIG, '2']),
    ('tools/dist_test.sh', [CONFIG, CONFIG, '2']),  # any existing file as checkpoint
])
@pytest.mark.parametrize('status', [0, 1])
def test_dist_scripts_end_with_the_workers_error(run_tool, tmp_path, script, argv,
                                                 status):
    """torchrun ends a failed run with a long report; the scripts repeat the workers'
    one-line error after it. A stand-in ``python`` plays torchrun here (a real
    2-process run would cost two imports of the whole stack)."""
    (tmp_path / 'python').write_text(
        '#!/bin/sh\n'
        'echo "error: something is wrong (do this)" >&2\n'
        'printf "Traceback\\nChildFailedError:\\n======\\n" >&2\n'
        f'echo "log line"\nexit {status}\n')
    (tmp_path / 'python').chmod(0o755)
    result = run_tool([script] + argv,
                      env={'PATH': f'{tmp_path}{os.pathsep}{os.environ["PATH"]}'})
    assert result.returncode == status
    assert result.stdout == 'log line\n'  # stdout untouched, not mixed into stderr
    if status:
        assert_one_line_error(result, 'something is wrong (do this)')
    else:
        assert result.last_error_line == '======'  # nothing added to a good run


def test_train_missing_config(run_tool):
    """Without --work-dir the default, ./work_dirs/<config name>, is not created."""
    result = run_tool(['tools/train.py', 'configs/no_such_config.py'])
    assert_one_line_error(result, 'config file not found: configs/no_such_config.py',
                          'give the path of a .py file')
    assert not osp.exists(osp.join(REPO_ROOT, 'work_dirs', 'no_such_config'))


def test_train_unknown_cfg_options_key(run_tool, tmp_path):
    work_dir = tmp_path / 'work'
    result = run_tool(['tools/train.py', CONFIG, '--work-dir', work_dir,
                       '--cfg-options', 'model.backbone.dept=50'])
    assert_one_line_error(result, '"model.backbone.dept" does not exist',
                          'did you mean depth')
    assert not work_dir.exists()


def test_missing_checkpoint_leaves_work_dir_for_the_next_run(run_tool, tiny_cls_run,
                                                             tmp_path):
    """A typo in a checkpoint path against a real work dir changes nothing in it, and
    the next run there (fine-tuning from one of its checkpoints, ``load_from``) works."""
    work_dir = str(tmp_path / 'work')
    shutil.copytree(tiny_cls_run['work_dir'], work_dir)
    before = snapshot(work_dir)
    missing = osp.join(work_dir, 'iter_40.pth')
    result = run_tool(['tools/test.py', CONFIG, missing, '--work-dir', work_dir],
                      env=tiny_cls_run['env'])
    assert_one_line_error(result, f'checkpoint not found: {missing}', 'check the path')
    assert snapshot(work_dir) == before

    result = run_tool(['tools/train.py', CONFIG, '--work-dir', work_dir, '--cfg-options',
                       f'load_from={osp.join(work_dir, "iter_4.pth")}',
                       'train_cfg.max_iters=1'], env=tiny_cls_run['env'])
    assert result.returncode == 0, result.describe()
    assert 'Load checkpoint from' in result.output
    assert 'Iter(train) [1/1]' in result.output  # load_from starts a new schedule
    assert osp.isfile(osp.join(work_dir, 'iter_1.pth'))


@pytest.mark.parametrize('prepare, argv, fragment', [
    (prepare_train, [CFG, '--resume', 'no/iter_4.pth'],
     'checkpoint to resume from not found: no/iter_4.pth'),
    (prepare_train, [CFG, '--cfg-options', 'load_from=no/iter_4.pth'],
     'load_from checkpoint not found: no/iter_4.pth'),
    (prepare_train, [CFG, '--cfg-options', 'model.backbone.out_indices.3=2'],
     'no "3" in model.backbone.out_indices'),
    (prepare_test, ['no_such.py', 'model.pth'], 'config file not found: no_such.py'),
    (prepare_test, [CFG, 'no/iter_4.pth'], 'checkpoint not found: no/iter_4.pth'),
    (prepare_test, [CFG, 'model.pth', '--out', 'predictions.json'],
     '--out must name a .pkl file'),
], ids=lambda value: value.__name__ if callable(value) else None)
def test_more_bad_arguments_in_process(monkeypatch, tmp_path, prepare, argv, fragment):
    """The same checks for more arguments, through what the tools run before the
    Runner (``engine.launch.prepare_train/prepare_test``), in this process (a
    subprocess each would cost an import of the whole stack): one line, nothing
    written."""
    monkeypatch.chdir(tmp_path)  # the default work dir would be ./work_dirs/tiny_cls
    monkeypatch.setenv('LOCAL_RANK', '0')  # set by the parsers; restored afterwards
    (tmp_path / 'model.pth').touch()  # a checkpoint that exists
    with pytest.raises(UsageError) as error:
        prepare(argv)
    assert '\n' not in str(error.value) and fragment in str(error.value)
    assert os.listdir(tmp_path) == ['model.pth']  # nothing written
