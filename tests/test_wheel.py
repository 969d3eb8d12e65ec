"""The package as a user installs it: a wheel (not an editable install), used from a
directory that is not the repository, without the source tree on the path.

The wheel is built from a clean copy of this checkout's sources (a stale ``build/`` of an
earlier build cannot hide a file the wheel lacks) and installed with ``pip install --target`` into a
temporary folder that is the only entry of ``PYTHONPATH``; its dependencies (torch,
mmengine, mmpretrain, ...) come from the test environment. Then the installed
``greenmim-train`` command pretrains two demo iterations on the installed demo config
(``greenmim_mm::pretrain/...``) and writes a checkpoint.
"""
import os
import os.path as osp
import shutil
import subprocess
import sys
import json
import zipfile

import pytest

from conftest import REPO_ROOT

# what setup.py reads to build the wheel
SOURCES = ('setup.py', 'README.md', 'requirements', 'greenmim_mm', 'greenmim_cli', 'configs')
DEMO = 'greenmim_mm::pretrain/greenmim_swin-demo-w4_1xb16-400it_photos-128px.py'


@pytest.fixture(scope='module')
def installed(tmp_path_factory) -> str:
    """The folder the wheel was installed into (``--target``)."""
    root = tmp_path_factory.mktemp('wheel')
    source = root / 'source'
    source.mkdir()
    for name in SOURCES:
        copy = shutil.copytree if osp.isdir(osp.join(REPO_ROOT, name)) else shutil.copy
        kwargs = dict(symlinks=True, ignore=shutil.ignore_patterns('__pycache__')) \
            if copy is shutil.copytree else {}
        copy(osp.join(REPO_ROOT, name), source / name, **kwargs)
    build = subprocess.run(
        [sys.executable, '-m', 'pip', 'wheel', str(source), '--no-deps',
         '--no-build-isolation', '-q', '-w', str(root / 'dist')],
        capture_output=True, text=True, cwd=root)
    assert build.returncode == 0, build.stderr[-3000:]
    wheels = list((root / 'dist').glob('greenmim_mm-*.whl'))
    assert len(wheels) == 1, wheels
    with zipfile.ZipFile(wheels[0]) as archive:
        names = archive.namelist()
    assert not any(name.startswith('greenmim_lab/') for name in names)  # the harness stays
    assert 'greenmim_mm/.mim/configs/pretrain/' + DEMO.split('/')[-1] in names
    target = root / 'site'
    install = subprocess.run(
        [sys.executable, '-m', 'pip', 'install', '--no-deps', '--no-index', '-q',
         '--target', str(target), str(wheels[0])], capture_output=True, text=True, cwd=root)
    assert install.returncode == 0, install.stderr[-3000:]
    return str(target)


def _env(target: str) -> dict:
    env = dict(os.environ, PYTHONPATH=target, OMP_NUM_THREADS='1')
    env.pop('PYTHONSTARTUP', None)
    return env


def test_installed_package_imports_from_the_wheel(installed, tmp_path):
    code = ('import greenmim_mm, greenmim_cli, importlib.util, json; '
            'print(json.dumps([greenmim_mm.__file__, greenmim_cli.__file__, '
            'importlib.util.find_spec("greenmim_lab") is None]))')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                            cwd=tmp_path, env=_env(installed))
    assert result.returncode == 0, result.stderr[-3000:]
    mm_file, cli_file, no_lab = json.loads(result.stdout.strip().splitlines()[-1])
    assert mm_file.startswith(installed) and cli_file.startswith(installed)
    assert no_lab  # benchmarks and experiments are not installed


def test_demo_pretrains_from_any_directory(installed, tmp_path):
    """``greenmim-train greenmim_mm::pretrain/<demo>.py`` from an empty folder: two
    iterations, a checkpoint in ./work_dirs."""
    command = osp.join(installed, 'bin', 'greenmim-train')
    result = subprocess.run(
        [sys.executable, command, DEMO, '--cfg-options', 'train_cfg.max_iters=2'],
        capture_output=True, text=True, cwd=tmp_path, env=_env(installed), timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    work_dir = tmp_path / 'work_dirs' / 'greenmim_swin-demo-w4_1xb16-400it_photos-128px'
    assert (work_dir / 'iter_2.pth').is_file(), sorted(os.listdir(work_dir))
    # the final block's next command is the installed one (no tools/ here)
    assert 'greenmim-visualize ' in result.stdout + result.stderr


def test_unknown_installed_config_is_one_line(installed, tmp_path):
    command = osp.join(installed, 'bin', 'greenmim-train')
    result = subprocess.run([sys.executable, command, 'greenmim_mm::pretrain/nope.py'],
                            capture_output=True, text=True, cwd=tmp_path,
                            env=_env(installed))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(
        'error: no installed config greenmim_mm::pretrain/nope.py')
