"""Shared fixtures: generated data (never downloaded) and a runner for ``tools/``."""
import os
import os.path as osp
import signal
import socket
import subprocess
import sys
import time
from typing import Dict, Optional, Sequence

import numpy as np
import pytest

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TEST_CONFIGS = osp.join(REPO_ROOT, 'tests', 'tools', 'configs')


@pytest.fixture(autouse=True)
def _restore_default_scope():
    """Keep each test's registry scope to itself.

    Building through mmdet (or entering any ``DefaultScope``) leaves that scope as
    mmengine's *current* one, and later mmpretrain builds would then look names up in
    mmdet's registries. Restore the set of scopes after every test.
    """
    from mmengine.registry import DefaultScope
    saved = DefaultScope._instance_dict.copy()
    yield
    DefaultScope._instance_dict.clear()
    DefaultScope._instance_dict.update(saved)


@pytest.fixture
def mmpretrain_scope():
    """Build in mmpretrain's registries whatever scope an earlier test left current
    (modules that build from configs use it: ``pytestmark =
    pytest.mark.usefixtures('mmpretrain_scope')``)."""
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        yield


def pytest_configure(config) -> None:
    """One torch thread: the suite's tensors are tiny, and on a shared 2-core machine
    two spinning threads cost many times the work (tools' subprocesses set
    OMP_NUM_THREADS=1 for the same reason)."""
    import torch
    torch.set_num_threads(1)


def free_port() -> int:
    """A TCP port nothing listens on right now (for torchrun's rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def tool_env(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The environment the tools run in: this venv's ``python`` first on ``PATH``, one
    thread per process, a free port. (The ``dist_*.sh`` scripts take ``$PYTHON``, else
    the repository's ``.venv``, else ``python3``: ``tools/_launch.sh``.)"""
    env = dict(os.environ)
    env['PATH'] = osp.dirname(sys.executable) + os.pathsep + env.get('PATH', '')
    env['PYTHONPATH'] = REPO_ROOT + os.pathsep + env.get('PYTHONPATH', '')
    env.setdefault('OMP_NUM_THREADS', '1')
    env['PORT'] = str(free_port())
    env.update(extra or {})
    return env


class ToolResult(subprocess.CompletedProcess):
    """A finished tool run; ``output`` is stdout and stderr together."""

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    @property
    def last_error_line(self) -> str:
        """The last non-empty line of stderr (where the tools put a one-line error)."""
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        return lines[-1] if lines else ''

    def describe(self) -> str:
        """The command, its exit status and the end of its output (for asserts)."""
        return (f'{" ".join(self.args)} -> {self.returncode}\n'
                f'--- stdout\n{self.stdout[-3000:]}\n--- stderr\n{self.stderr[-3000:]}')


def _run_tool(args: Sequence[str], timeout: float = 120,
              env: Optional[Dict[str, str]] = None) -> ToolResult:
    """Run ``args`` from the repository root and capture its output.

    ``args`` starts with a tool path: ``.py`` files run with this interpreter, ``.sh``
    files with bash, e.g. ``run_tool(['tools/train.py', cfg, '--work-dir', d])``;
    ``env`` adds variables to :func:`tool_env`. On timeout the whole process group is
    killed (torchrun's workers included) and the test fails with the output so far.
    """
    args = [str(a) for a in args]
    if args[0].endswith('.py'):
        args = [sys.executable] + args
    elif args[0].endswith('.sh'):
        args = ['bash'] + args
    proc = subprocess.Popen(args, cwd=REPO_ROOT, env=tool_env(env), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f'{" ".join(args)} ran over {timeout}s\n'
                    f'--- stdout\n{stdout[-3000:]}\n--- stderr\n{stderr[-3000:]}')
    return ToolResult(args, proc.returncode, stdout, stderr)


@pytest.fixture(scope='session')
def run_tool():
    """:func:`_run_tool`: run a ``tools/`` script in a subprocess, from the repo root."""
    return _run_tool


def write_image_folder(root: str, num_classes: int = 2, per_class: int = 8,
                       size: int = 32, seed: int = 0) -> str:
    """An ImageNet-style folder ``root/class_k/img_i.png`` of generated images.

    Class ``k`` is a noisy image whose mean brightness grows with ``k``, so the classes
    are learnable. Returns ``root``.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    for k in range(num_classes):
        os.makedirs(osp.join(root, f'class_{k}'), exist_ok=True)
        level = 255 * (k + 1) / (num_classes + 1)
        for i in range(per_class):
            pixels = np.clip(rng.normal(level, 30, (size, size, 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(
                osp.join(root, f'class_{k}', f'img_{i}.png'))
    return root


@pytest.fixture(scope='session')
def image_folder(tmp_path_factory) -> str:
    """16 generated 32x32 PNGs in two class folders (shared, read-only)."""
    return write_image_folder(str(tmp_path_factory.mktemp('tiny_cls')))


@pytest.fixture(scope='session')
def demo_coco(tmp_path_factory) -> Dict[str, str]:
    """The shapes set of ``tools/make_demo_coco.py``: 8 train, 4 val images of 128 px."""
    from greenmim_lab.data.demo_coco import make_demo_coco
    return make_demo_coco(str(tmp_path_factory.mktemp('demo_coco')),
                          num_train=8, num_val=4, size=128, seed=0)


@pytest.fixture(scope='session')
def tiny_cls_run(tmp_path_factory, image_folder) -> Dict[str, object]:
    """A 2-process ``tools/dist_train.sh`` run (gloo on the CPU) of the tiny
    classification config: 4 iterations, checkpoints at iterations 2 and 4.

    Shared, so treat its ``work_dir`` as read-only (copy it to change it). Returns
    ``dict(config, work_dir, env, result)``; ``env`` points the config at the data.
    """
    work_dir = str(tmp_path_factory.mktemp('tiny_cls_work'))
    env = {'GREENMIM_TINY_CLS_DATA': image_folder}
    config = osp.join(TEST_CONFIGS, 'tiny_cls.py')
    result = _run_tool(['tools/dist_train.sh', config, '2', '--work-dir', work_dir],
                       timeout=300, env=env)
    return dict(config=config, work_dir=work_dir, env=env, result=result)


@pytest.fixture(scope='session')
def greenmim_ddp_run(tmp_path_factory) -> Dict[str, object]:
    """The tiny GreenMIM config (``tests/tools/configs/tiny_greenmim.py``) trained
    for 2 iterations by 2 processes over gloo (``tools/dist_train.sh``), then resumed
    for a third with ``--resume`` (what ``tools/train.py`` runs, in this process: a
    subprocess would cost another import of the whole stack), with
    ``tests/tools/ddp_probe.py``'s hook recording every process into
    ``<work_dir>/probe``.

    Shared, so treat ``work_dir`` as read-only. Returns ``dict(config, work_dir,
    train, resumed, seconds)``: the ``ToolResult`` of the distributed run, whether
    the resumed run finished (None when the distributed one failed), and the wall
    time of both.
    """
    from greenmim_cli.launch import prepare_train, train

    root = tmp_path_factory.mktemp('greenmim_ddp')
    config = str(root / 'tiny_greenmim_probed.py')
    with open(config, 'w') as f:
        f.write(f"_base_ = [{osp.join(TEST_CONFIGS, 'tiny_greenmim.py')!r}]\n"
                "custom_imports = dict(imports=['greenmim_mm', 'ddp_probe'],\n"
                "                      allow_failed_imports=False)\n"
                "custom_hooks = [dict(type='DDPProbeHook')]\n")
    work_dir = str(root / 'work')
    probe_path = osp.join(REPO_ROOT, 'tests', 'tools')
    env = {'PYTHONPATH': os.pathsep.join(
        [REPO_ROOT, probe_path, os.environ.get('PYTHONPATH', '')])}
    start = time.time()
    result = _run_tool(['tools/dist_train.sh', config, '2', '--work-dir', work_dir],
                       timeout=300, env=env)
    resumed = None
    if result.returncode == 0:
        with pytest.MonkeyPatch.context() as monkeypatch:
            monkeypatch.syspath_prepend(probe_path)
            monkeypatch.setenv('LOCAL_RANK', '0')  # the parser sets it
            train(prepare_train([config, '--work-dir', work_dir, '--resume',
                                 '--cfg-options', 'train_cfg.max_iters=3']))
        resumed = True
    return dict(config=config, work_dir=work_dir, train=result, resumed=resumed,
                seconds=time.time() - start)
