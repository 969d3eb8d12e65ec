"""Bad input fails with one line, ``error: <problem>; <fix>``, exit code 2, and writes
nothing when it can be caught before the Runner: no new work dir, an existing one
unchanged, so the next (good) run just works.

The table of bad inputs runs the real tool scripts (``tools/*.py``, with their
``run_tool`` wrapper) in this process through ``runpy`` -- a subprocess each would cost
~7 s of imports; a few real subprocess runs prove the wiring (exit status, stderr,
``--debug``, the ``dist_*.sh`` launchers).
"""
import os
import os.path as osp
import runpy
import shutil
import sys
from typing import Dict, List, Tuple

import pytest
import torch


REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = 'tests/tools/configs/tiny_cls.py'  # relative to the repo root (the tools' cwd)
CFG = osp.join(REPO_ROOT, CONFIG)  # for main() run in this process, from elsewhere
GREENMIM_CFG = osp.join(REPO_ROOT, 'tests/tools/configs/tiny_greenmim.py')
FOLDER_CFG = osp.join(REPO_ROOT,
                      'configs/pretrain/greenmim_swin-demo-w4_1xb16-400it_folder-128px.py')
DETECT_CFG = osp.join(REPO_ROOT, 'configs/detection/'
                     'greenmim_mask-rcnn_swin-demo-w4_fpn_1xb4-1500it_shapes-128px.py')
PRETRAIN_CFG = osp.join(
    REPO_ROOT, 'configs/pretrain/greenmim_swin-demo-w4_1xb16-400it_photos-128px.py')
SWIN_B_FOLDER_CFG = osp.join(  # the ImageNet recipe's pipeline (a tensor crop)
    REPO_ROOT, 'configs/pretrain/greenmim_swin-base-w7_8xb256-amp-coslr-800e_folder.py')


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
    one-line error after it, and exit with the failed worker's status (2), not
    torchrun's (1). A stand-in ``$PYTHON`` plays torchrun here (a real 2-process run
    would cost two imports of the whole stack)."""
    (tmp_path / 'python').write_text(
        '#!/bin/sh\n'
        'echo "error: something is wrong (do this)" >&2\n'
        'printf "Traceback\\nChildFailedError:\\n  exitcode  : 2 (pid: 7)\\n'
        '======\\n" >&2\n'
        f'echo "log line"\nexit {status}\n')
    (tmp_path / 'python').chmod(0o755)
    result = run_tool([script] + argv, env={'PYTHON': str(tmp_path / 'python')})
    assert result.returncode == (2 if status else 0)
    assert result.stdout == 'log line\n'  # stdout untouched, not mixed into stderr
    if status:
        assert_one_line_error(result, 'something is wrong (do this)')
    else:
        assert result.last_error_line == '======'  # nothing added to a good run


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


@pytest.mark.parametrize('venv, expected', [
    ('', '{root}/.venv/bin/python'),  # the project's environment, next to tools/
    ('/no/such/venv', 'python3'),
])
def test_launchers_use_the_projects_python(run_tool, venv, expected):
    """``dist_*.sh``/``slurm_*.sh`` source ``tools/_launch.sh``: ``$PYTHON``, else the
    venv of ``tools/install.sh`` (``$GREENMIM_VENV``, default ``.venv``), else python3
    -- never a bare ``python`` that may not be the project's."""
    env = {k: v for k, v in os.environ.items() if k != 'PYTHON'}
    if venv:
        env['GREENMIM_VENV'] = venv
    else:
        env.pop('GREENMIM_VENV', None)
    import subprocess
    out = subprocess.run(['bash', '-c', 'source tools/_launch.sh && echo "$PYTHON"'],
                         cwd=REPO_ROOT, env=env, capture_output=True, text=True).stdout
    assert out.strip() == expected.format(root=REPO_ROOT)


# ----------------------------------------------------------------------------------
# The table: 30+ bad inputs through the real tool scripts, in this process
# ----------------------------------------------------------------------------------
def without_logging_errors(stderr: str) -> str:
    """``stderr`` without the reports of Python's ``logging`` about a handler whose
    stream an earlier test's capture closed (a test artefact, not the tool's output)."""
    kept, skipping = [], False
    for line in stderr.splitlines():
        skipping = skipping or line.startswith('--- Logging error ---')
        if not skipping:
            kept.append(line)
        elif line.startswith('Arguments:'):
            skipping = False
    return '\n'.join(kept)


def run_script(script: str, argv: List[str], capfd) -> Tuple[int, str]:
    """``python <script> <argv>`` in this process (``runpy``: the script itself, with
    its ``run_tool`` wrapper); its exit code and stderr. A bug (an exception the
    wrapper does not explain) propagates and fails the test with its traceback."""
    saved = sys.argv
    sys.argv = [script] + [str(a) for a in argv]
    try:
        runpy.run_path(osp.join(REPO_ROOT, script), run_name='__main__')
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    finally:
        sys.argv = saved
    return code, without_logging_errors(capfd.readouterr().err)


@pytest.fixture(scope='module')
def bad_files(tmp_path_factory) -> Dict[str, str]:
    """Checkpoints of the two tiny models (Runner layout), broken checkpoint files, image
    folders without a readable image, a config with a syntax error, a text file."""
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS

    root = tmp_path_factory.mktemp('bad_files')
    files = {}
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        for name, config in (('cls', CFG), ('greenmim', GREENMIM_CFG)):
            model = MODELS.build(Config.fromfile(config).model)
            files[name] = str(root / f'{name}.pth')
            torch.save(dict(meta=dict(epoch=0, iter=1), state_dict=model.state_dict()),
                       files[name])
    data = open(files['cls'], 'rb').read()
    for name, content in (('empty.pth', b''), ('truncated.pth', data[:len(data) // 2]),
                          ('text.pth', b'not a checkpoint\n'),
                          ('syntax.py', b'model = dict(\n'), ('notes.txt', b'hello\n')):
        key = name.split('.')[0]  # '{empty}' in an argv
        files[key] = str(root / name)
        with open(files[key], 'wb') as f:
            f.write(content)
    from greenmim_mm.datasets.demo import skimage_data_dir
    files['photos'] = skimage_data_dir()  # readable images
    files['no_images'] = str(root / 'no_images')
    os.makedirs(osp.join(files['no_images'], 'sub'))
    with open(osp.join(files['no_images'], 'sub', 'notes.txt'), 'w') as f:
        f.write('no image here')
    files['bad_images'] = str(root / 'bad_images')
    os.makedirs(files['bad_images'])
    open(osp.join(files['bad_images'], 'empty.jpg'), 'wb').close()
    with open(osp.join(files['bad_images'], 'text.png'), 'w') as f:
        f.write('not an image')
    return files


TRAIN, TEST = 'tools/train.py', 'tools/test.py'
# (script, argv with {placeholders} from bad_files, fragment of the one line)
BAD_INPUTS = [
    (TRAIN, [], 'the following arguments are required: config'),
    (TRAIN, [CFG, '--no-such-flag'], 'unrecognized arguments: --no-such-flag'),
    (TRAIN, ['no_such.py'], 'config file not found: no_such.py'),
    (TRAIN, ['{syntax}'], 'cannot read the config'),
    (TRAIN, [CFG, '--cfg-options', 'model.backbone.dept=50'], 'did you mean depth'),
    (TRAIN, [CFG, '--cfg-options', 'model.backbone.foo=1'], 'it takes'),
    (TRAIN, [CFG, '--cfg-options', 'compil=True'], 'did you mean compile'),
    (TRAIN, [CFG, '--cfg-options', 'data_root=x'], 'changes nothing'),
    (TRAIN, [CFG, '--cfg-options', 'train_cfg.max_iter=2'], 'did you mean max_iters'),
    (TRAIN, [CFG, '--cfg-options', 'optim_wrapper.optimizer.lr=abc'], 'expects a number'),
    (TRAIN, [CFG, '--cfg-options', 'train_cfg.max_iters'], 'is not KEY=VALUE'),
    (TRAIN, [CFG, '--cfg-options', 'model.backbone.out_indices.3=2'],
     'no "3" in model.backbone.out_indices'),
    (TRAIN, [CFG, '--cfg-options', 'optim_wrapper.dtype=bfloat16'], 'no "dtype"'),
    (TRAIN, [CFG, '--cfg-options', 'train_cfg.max_iters=0'], 'at least one iteration'),
    (TRAIN, [CFG, '--cfg-options', 'train_dataloader.batch_size=0'],
     'at least one image'),
    (TRAIN, [CFG, '--cfg-options', 'default_hooks.checkpoint.interval=0'],
     'checkpoint every 0 steps'),
    (TRAIN, [CFG, '--cfg-options', 'model.backbone.type=ResNet_CIFR'],
     'did you mean ResNet_CIFAR'),
    (TRAIN, [CFG, '--cfg-options', 'model.backbone.depth=19'],
     'cannot build ResNet_CIFAR from the config'),
    (TRAIN, [CFG, '--resume', 'no/iter_4.pth'],
     'checkpoint to resume from not found: no/iter_4.pth'),
    (TRAIN, [CFG, '--resume', '{empty}'], 'empty (0 bytes'),
    (TRAIN, [CFG, '--resume', '{text}'], 'not a PyTorch checkpoint'),
    (TRAIN, [CFG, '--cfg-options', 'load_from={truncated}'], 'incomplete'),
    (TRAIN, [CFG, '--cfg-options', 'load_from=no/iter_4.pth'],
     'load_from checkpoint not found: no/iter_4.pth'),
    (TRAIN, [GREENMIM_CFG, '--resume', '{cls}'], 'does not fit the configured GreenMIM'),
    (TRAIN, [GREENMIM_CFG, '--cfg-options', 'load_from={cls}'],
     'does not fit the configured GreenMIM'),
    (TRAIN, [CFG, '--auto-scale-lr'], 'needs auto_scale_lr.base_batch_size'),
    (TRAIN, [CFG, '--amp-dtype', 'float8'], "invalid choice: 'float8'"),
    (TRAIN, [CFG, '--amp', '--cfg-options', 'optim_wrapper.type=ApexOptimWrapper'],
     '--amp needs OptimWrapper or AmpOptimWrapper'),
    (TRAIN, [CFG, '--launcher', 'slurm'], '--launcher slurm needs GPUs'),
    (TRAIN, [CFG, '--data-root', 'no/such/folder'], 'data_root not found: no/such/folder'),
    (TRAIN, [FOLDER_CFG, '--data-root', '{no_images}'], 'no image file in'),
    (TRAIN, [FOLDER_CFG, '--data-root', '{bad_images}'], 'no readable image in'),
    (TEST, [CFG], 'the following arguments are required: checkpoint'),
    (TEST, ['no_such.py', '{cls}'], 'config file not found: no_such.py'),
    (TEST, [CFG, 'no/iter_4.pth'], 'checkpoint not found: no/iter_4.pth'),
    (TEST, [CFG, '{cls}', '--out', 'predictions.json'], '--out must name a .pkl'),
    (TEST, [CFG, '{cls}', '--show-dir', 'shown'], '--show-dir needs'),
    (TEST, [PRETRAIN_CFG, '{greenmim}'], 'has no test_dataloader'),
    (TEST, [CFG, '{greenmim}'], 'does not fit the configured ImageClassifier'),
    (TEST, [DETECT_CFG, '{greenmim}'], 'does not fit the configured MaskRCNN'),  # mAP 0
    ('tools/make_demo_coco.py', ['out', '--num-train', '0'], 'must be >= 1, got 0'),
    ('tools/make_demo_coco.py', ['out', '--size', 'big'], "invalid integer value: 'big'"),
    ('tools/model_converters/greenmim_official_to_mm.py', ['{notes}', 'out.pth'],
     'not a PyTorch checkpoint'),
    ('tools/model_converters/greenmim_official_to_mm.py', ['no.pth', 'out.pth'],
     'checkpoint to convert not found: no.pth'),
    ('tools/model_converters/greenmim_mm_to_official.py', ['{notes}', 'out.pth'],
     'not a PyTorch checkpoint'),
    ('tools/model_converters/greenmim_mm_to_official.py', ['no.pth', 'out.pth'],
     'checkpoint to export not found: no.pth'),
    ('tools/model_converters/greenmim_mm_to_official.py',
     ['{greenmim}', 'out.pth', '--format', 'timm', '--mmdet-config', 'x.py'],
     '--mmdet-config checks the official layout'),
    ('tools/visualize_reconstruction.py', [PRETRAIN_CFG, '{greenmim}', 'no.png'],
     'no.png'),
    # geometry caught by the config check, values the component takes
    (TRAIN, [PRETRAIN_CFG, '--cfg-options', 'train_dataloader.dataset.pipeline.1.scale=100'],
     'not a multiple of the 32 px mask unit'),
    (TRAIN, [PRETRAIN_CFG, '--cfg-options', 'train_dataloader.dataset.pipeline.1.scale=96'],
     'smaller than the window size 4'),
    (TRAIN, [SWIN_B_FOLDER_CFG, '--data-root', '{photos}', '--cfg-options',
             'train_dataloader.dataset.pipeline.1.scale=200'],
     'not a multiple of the 32 px mask unit'),
    (TRAIN, [PRETRAIN_CFG, '--cfg-options', 'model.backbone.window_size=8'],
     'smaller than the window size 8'),
    (TRAIN, [PRETRAIN_CFG, '--cfg-options',
             'train_dataloader.dataset.pipeline.1.scale=(128,96)'],
     'patchifies square images only'),
    (TRAIN, [PRETRAIN_CFG, '--cfg-options', 'train_dataloader.dataset.pipeline.1.scale=a'],
     "RandomResizedCrop's scale takes"),
    (TRAIN, [PRETRAIN_CFG, '--cfg-options', 'default_hooks.checkpoint.max_keep_ckpts=None'],
     'expects a number'),
    (TRAIN, [PRETRAIN_CFG, '--accumulate', '0'], 'an update needs at least one batch'),
    (TRAIN, [PRETRAIN_CFG, '--accumulate', 'two'], "invalid int value: 'two'"),
    ('tools/visualize_reconstruction.py', [PRETRAIN_CFG, '{truncated}', 'chelsea'],
     'incomplete'),
    ('tools/visualize_reconstruction.py', [PRETRAIN_CFG, '{cls}', 'chelsea'],
     'does not fit the configured GreenMIM'),
]


@pytest.mark.parametrize('script, argv, fragment', BAD_INPUTS,
                         ids=[f'{i:02d}-{osp.basename(s)}' for i, (s, _, _) in
                              enumerate(BAD_INPUTS)])
def test_bad_input_is_one_line(script, argv, fragment, bad_files, image_folder, demo_coco,
                               tmp_path, monkeypatch, capfd):
    """Each bad input ends with ``error: <problem>; <fix>`` as the last line of stderr,
    exit code 2 and no traceback; those found before the Runner write nothing."""
    monkeypatch.chdir(tmp_path)  # default work dirs and outputs land here
    monkeypatch.setenv('LOCAL_RANK', '0')  # set by the parsers; restored afterwards
    monkeypatch.setenv('GREENMIM_TINY_CLS_DATA', image_folder)
    monkeypatch.setenv('GREENMIM_DEMO_COCO', demo_coco['data_root'])
    monkeypatch.delenv('GREENMIM_DEBUG', raising=False)
    code, stderr = run_script(script, [a.format(**bad_files) for a in argv], capfd)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2, stderr
    assert lines and lines[-1].startswith('error: ') and fragment in lines[-1], stderr
    assert 'Traceback' not in stderr
    if not any(found_by_the_runner in fragment for found_by_the_runner in
               ('does not fit', 'image', 'cannot build')):  # found before the Runner
        assert os.listdir(tmp_path) == [], os.listdir(tmp_path)


def test_debug_shows_the_traceback_of_an_input_error(bad_files, tmp_path, monkeypatch,
                                                     capfd):
    """``--debug`` (or ``GREENMIM_DEBUG=1``): the traceback, then the same one line."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv('LOCAL_RANK', '0')
    for argv, env in (([CFG, '--resume', bad_files['text'], '--debug'], '0'),
                      ([CFG, '--resume', bad_files['text']], '1')):
        monkeypatch.setenv('GREENMIM_DEBUG', env)
        code, stderr = run_script(TRAIN, argv, capfd)
        assert code == 2 and 'Traceback' in stderr and 'UsageError' in stderr
        assert stderr.strip().splitlines()[-1].startswith('error: checkpoint to resume')


def test_a_bug_keeps_its_traceback(monkeypatch, capfd):
    """Not an input error: the exception propagates (Python prints it, exit code 1)."""
    from greenmim_cli import launch
    monkeypatch.setenv('LOCAL_RANK', '0')
    monkeypatch.setattr(launch, 'check_schedule', lambda cfg: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        run_script(TRAIN, [CFG], capfd)


def test_input_error_through_the_real_process(run_tool, bad_files):
    """The wiring end to end: a subprocess of ``tools/train.py`` with a checkpoint of
    another model ends with one line on stderr and exit code 2 (in the Runner)."""
    result = run_tool([TRAIN, GREENMIM_CFG, '--work-dir', osp.dirname(bad_files['cls']),
                       '--cfg-options', f'load_from={bad_files["cls"]}'])
    assert result.returncode == 2, result.describe()
    assert_one_line_error(result, 'does not fit the configured GreenMIM',
                          "model.backbone.init_cfg=dict(type='GreenMIMPretrained'")
    assert 'Traceback' not in result.stderr and 'Iter(train)' not in result.output
