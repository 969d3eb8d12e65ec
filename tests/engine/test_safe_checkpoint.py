"""Crash-safe checkpoints (``SafeCheckpointHook``): a training process killed at each of
four moments -- mid-iteration, while writing ``iter_N.pth``, while
rewriting ``last_checkpoint``, mid-save with ``max_keep_ckpts=1`` -- leaves a work dir
from which ``--resume`` finishes the run, with the weights of an uninterrupted run and
no corrupt file.

The training runs in a forked child of this process (a real process, killed with
SIGKILL at the chosen moment; forking saves the ~7 s import of a new interpreter), the
resume in this process, both through ``greenmim_cli.launch.prepare_train``/``train`` (what
``tools/train.py`` runs). The moment is chosen by patching, in the child only,
mmengine's ``LocalBackend.put`` (every checkpoint and ``last_checkpoint`` byte goes
through it) or ``OptimWrapper.step``.
"""
import glob
import os
import os.path as osp
import signal
import traceback
from typing import Dict, List

import pytest
import torch

from greenmim_mm.engine.checkpoint import (checkpoint_problem,
                                           find_resumable_checkpoint)
from greenmim_cli.launch import prepare_train, train

CONFIG = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'tools', 'configs',
                  'tiny_cls.py')
MAX_ITERS = 3


def kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def crash_in_put(target: str, occurrence: int = 1) -> None:
    """The ``occurrence``-th write of a file whose name starts with ``target`` dies
    half-way."""
    from mmengine.fileio.backends import LocalBackend
    put, calls = LocalBackend.put, [0]

    def dying_put(self, obj: bytes, filepath) -> None:
        calls[0] += osp.basename(str(filepath)).startswith(target)
        if calls[0] == occurrence:
            with open(filepath, 'wb') as f:
                f.write(obj[:len(obj) // 2])
            kill_self()
        put(self, obj, filepath)

    LocalBackend.put = dying_put


def crash_in_step(number: int) -> None:
    """The ``number``-th optimizer update dies (after its forward and backward)."""
    from mmengine.optim import OptimWrapper
    step, calls = OptimWrapper.step, [0]

    def dying_step(self, **kwargs) -> None:
        calls[0] += 1
        if calls[0] == number:
            kill_self()
        step(self, **kwargs)

    OptimWrapper.step = dying_step


def train_in_child(argv: List[str], crash=None) -> int:
    """``tools/train.py argv`` in a forked process; its exit code, -9 if killed."""
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 0
        try:
            if crash is not None:
                crash()
            train(prepare_train(argv))
        except BaseException:  # noqa: B902
            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def argv(work_dir: str, *options: str) -> List[str]:
    return [CONFIG, '--work-dir', work_dir, '--cfg-options',
            f'train_cfg.max_iters={MAX_ITERS}', 'train_cfg.val_interval=100',
            'default_hooks.checkpoint.interval=1', *options]


def weights(path: str) -> Dict[str, torch.Tensor]:
    return torch.load(path, map_location='cpu', weights_only=True)['state_dict']


@pytest.fixture(scope='module')
def reference(tmp_path_factory, image_folder) -> Dict[str, torch.Tensor]:
    """The weights after an uninterrupted run."""
    work_dir = str(tmp_path_factory.mktemp('reference'))
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv('GREENMIM_TINY_CLS_DATA', image_folder)
        assert train_in_child(argv(work_dir)) == 0
    return weights(osp.join(work_dir, f'iter_{MAX_ITERS}.pth'))


SCENARIOS = {  # name: (crash, extra options, checkpoint the resume must start from)
    'mid-iteration': (lambda: crash_in_step(2), [], 'iter_1.pth'),
    'writing-iter_N.pth': (lambda: crash_in_put('iter_2.pth'), [], 'iter_1.pth'),
    'rewriting-last_checkpoint': (lambda: crash_in_put('last_checkpoint', 2), [],
                                  'iter_2.pth'),
    'mid-save-max_keep_ckpts=1': (lambda: crash_in_put('iter_2.pth'),
                                  ['default_hooks.checkpoint.max_keep_ckpts=1'],
                                  'iter_1.pth'),
}


@pytest.mark.parametrize('name', SCENARIOS)
def test_killed_run_resumes_to_the_same_weights(name, reference, image_folder, tmp_path,
                                                monkeypatch, capfd):
    crash, options, resume_from = SCENARIOS[name]
    monkeypatch.setenv('GREENMIM_TINY_CLS_DATA', image_folder)
    monkeypatch.setenv('LOCAL_RANK', '0')  # set by the parser
    work_dir = str(tmp_path)
    assert train_in_child(argv(work_dir, *options), crash) == -signal.SIGKILL
    # what the kill left is usable: every complete name holds a complete checkpoint
    for path in glob.glob(osp.join(work_dir, '*.pth')):
        assert checkpoint_problem(path) is None, path
    assert find_resumable_checkpoint(work_dir) == osp.join(work_dir, resume_from)

    train(prepare_train(argv(work_dir, *options, 'resume=True')))
    loaded = f'Load checkpoint from {osp.join(work_dir, resume_from)}'
    assert loaded in capfd.readouterr().out
    last = osp.join(work_dir, f'iter_{MAX_ITERS}.pth')
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        assert f.read() == last
    final = weights(last)
    assert final.keys() == reference.keys()
    for key, value in reference.items():
        assert torch.equal(final[key], value), key
    names = sorted(os.listdir(work_dir))
    assert not [n for n in names if n.endswith('.tmp')], names  # partial writes gone
    for path in glob.glob(osp.join(work_dir, '*.pth')):
        torch.load(path, map_location='cpu', weights_only=True)  # no corrupt file
    if options:  # max_keep_ckpts=1: only the newest checkpoint is kept
        assert [n for n in names if n.endswith('.pth')] == [f'iter_{MAX_ITERS}.pth']


def test_resume_skips_an_empty_pointer_and_corrupt_newest_files(tmp_path):
    """What mmengine's own hook leaves after a kill: an empty ``last_checkpoint`` (it
    made ``--resume`` fail) and truncated or empty newest files; each is named in a
    warning and the newest complete checkpoint is taken."""
    torch.save({'state_dict': {}}, str(tmp_path / 'iter_2.pth'))
    complete = (tmp_path / 'iter_2.pth').read_bytes()
    (tmp_path / 'iter_4.pth').write_bytes(complete[:len(complete) // 2])  # truncated
    (tmp_path / 'iter_6.pth').write_bytes(b'')
    (tmp_path / 'iter_10.pth').write_text('not a checkpoint')
    (tmp_path / 'last_checkpoint').write_text('')
    warnings: List[str] = []
    assert find_resumable_checkpoint(str(tmp_path), warnings.append) == str(
        tmp_path / 'iter_2.pth')
    assert len(warnings) == 4
    assert 'last_checkpoint is empty' in warnings[0]
    for name, problem in (('iter_10.pth', 'not a PyTorch checkpoint'),
                          ('iter_6.pth', 'empty'), ('iter_4.pth', 'incomplete')):
        assert any(name in w and problem in w for w in warnings), (name, warnings)


def test_resume_prefers_the_newest_complete_checkpoint(tmp_path):
    """``last_checkpoint`` may lag one save behind (a kill while rewriting it)."""
    for step in (8, 9, 10):
        torch.save({}, str(tmp_path / f'iter_{step}.pth'))
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_9.pth'))
    assert find_resumable_checkpoint(str(tmp_path)) == str(tmp_path / 'iter_10.pth')
    assert find_resumable_checkpoint(str(tmp_path / 'none')) is None


def test_stock_checkpoint_hook_configs_run_with_the_safe_one():
    from mmengine.config import Config
    from greenmim_mm.engine.checkpoint import use_safe_checkpoint_hook
    cfg = Config(dict(default_hooks=dict(checkpoint=dict(type='CheckpointHook'))))
    use_safe_checkpoint_hook(cfg)
    assert cfg.default_hooks.checkpoint.type == 'SafeCheckpointHook'


def own_chain(path: str) -> List[str]:
    """``path`` and every file of this repository it inherits from."""
    from config_files import own_bases
    return [path] + [p for base in own_bases(path) for p in own_chain(base)]


def every_training_config() -> List[str]:
    from config_files import config_files, is_alias
    return [p for folder in ('pretrain', 'classification', 'detection')
            for p in config_files(folder) if not is_alias(p)]


@pytest.mark.parametrize('path', every_training_config(), ids=osp.basename)
def test_every_config_writes_checkpoints_crash_safe(path):
    """Its chain of own files sets the hook type and none sets mmengine's (read as text:
    parsing all configs costs 8 s; the tools use the safe hook for any config anyway)."""
    texts = [open(p).read() for p in own_chain(path)]
    assert any("type='SafeCheckpointHook'" in text for text in texts)
    assert not any("type='CheckpointHook'" in text for text in texts)


BEST = ("default_hooks.checkpoint.save_best=accuracy/top1", 'train_cfg.val_interval=1',
        'default_hooks.checkpoint.rule=greater')


def test_killed_while_writing_the_best_checkpoint(image_folder, tmp_path, monkeypatch):
    """``save_best``: a kill half-way through the best checkpoint leaves a partial
    ``.tmp`` file, never a truncated ``best_*.pth`` (mmengine writes it in place), and
    a run with ``save_best`` keeps one complete best checkpoint and no partial file."""
    monkeypatch.setenv('GREENMIM_TINY_CLS_DATA', image_folder)
    monkeypatch.setenv('LOCAL_RANK', '0')
    killed = str(tmp_path / 'killed')
    assert train_in_child(argv(killed, *BEST), lambda: crash_in_put('best_')) == \
        -signal.SIGKILL
    assert glob.glob(osp.join(killed, 'best_*.pth.tmp'))
    for path in glob.glob(osp.join(killed, '*.pth')):
        assert checkpoint_problem(path) is None, path
    done = str(tmp_path / 'done')
    assert train_in_child(argv(done, *BEST)) == 0
    best = glob.glob(osp.join(done, 'best_*'))
    assert len(best) == 1 and best[0].endswith('.pth'), best
    assert checkpoint_problem(best[0]) is None
    assert not glob.glob(osp.join(done, '*.tmp'))
