"""tools/benchmark.py: its report, its memory probe, and (slow) one real run."""
import importlib.util
import json
import os.path as osp
import subprocess
import sys

import pytest
import torch

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOL = osp.join(REPO_ROOT, 'tools', 'benchmark.py')


def load_tool():
    spec = importlib.util.spec_from_file_location('greenmim_benchmark', TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


SETUP = dict(greenmim='GreenMIMSwinTransformer(...)', simmim='SimMIMSwinTransformer(...)')
TIMES = dict(greenmim=dict(wall=[1.0, 1.2, 1.1], cpu=[0.9, 1.0, 1.0]),
             simmim=dict(wall=[3.0, 2.6, 2.7], cpu=[2.5, 2.6, 2.4]))
FLOPS = dict(greenmim=64e9, simmim=160e9)
MEMORY = dict(greenmim=300 * 2**20, simmim=1000 * 2**20)


def test_cpu_report_has_ratios_and_cpu_time():
    tool = load_tool()
    args = tool.parse_args(['--steps', '3'])
    report = tool.format_report(args, SETUP, TIMES, FLOPS, MEMORY)
    assert '| GreenMIM | 1100 ms | 1000 - 1200 ms | 1000 ms |' in report
    assert '**2.45x**' in report  # wall: 2.7 / 1.1
    assert '**2.50x**' in report  # CPU time: 2.5 / 1.0
    assert '2.50x' in report and '30% of SimMIM' in report  # FLOPs, memory


def test_cuda_report_drops_cpu_time(monkeypatch):
    tool = load_tool()
    args = tool.parse_args(['--amp', '--amp-dtype', 'float16', '--batch-size', '128',
                            '--arch', 'base'])
    args.device = 'cuda'  # parse_args refuses cuda without a GPU
    monkeypatch.setattr(torch.cuda, 'get_device_name', lambda *a: 'Fake GPU')
    report = tool.format_report(args, SETUP, TIMES, FLOPS, MEMORY)
    assert 'Swin-B, batch 128, Fake GPU, AMP float16' in report
    assert 'CPU time' not in report and 'max_memory_allocated' in report


def test_cuda_without_gpu_is_a_usage_error():
    if torch.cuda.is_available():
        pytest.skip('a GPU is visible')
    with pytest.raises(SystemExit):
        load_tool().parse_args(['--device', 'cuda'])


def test_peak_rss_is_not_inherited_from_the_parent():
    """A child of a big process reports its own peak, not the parent's.

    (``getrusage``'s ``ru_maxrss`` survives ``execve`` on Linux: a memory probe run as
    a subprocess of the benchmark would report the benchmark's size.)
    """
    ballast = b'x' * (512 * 2**20)  # noqa: F841  (resident: every page written)
    # The child stubs torch and numpy out: importing them would dwarf what is tested.
    code = ('import sys, types; '
            'sys.modules.update(torch=types.ModuleType("torch"), '
            'numpy=types.ModuleType("numpy")); '
            'sys.path.insert(0, "tools"); import benchmark; '
            'print(benchmark.peak_rss_bytes())')
    child = subprocess.run([sys.executable, '-c', code], cwd=REPO_ROOT,
                           capture_output=True, text=True)
    assert child.returncode == 0, child.stderr
    assert int(child.stdout.split()[-1]) < 256 * 2**20


@pytest.mark.slow
def test_one_real_run(run_tool, tmp_path):
    out = tmp_path / 'bench.json'
    result = run_tool([TOOL, '--steps', '1', '--warmup', '0', '--batch-size', '1',
                       '--memory-steps', '1', '--threads', '1', '--json', out],
                      timeout=600)
    assert result.returncode == 0, result.describe()
    assert 'SimMIM / GreenMIM' in result.stdout
    data = json.loads(out.read_text())
    assert data['flops']['simmim'] > 2 * data['flops']['greenmim']
    # At batch 1 memory is mostly weights and AdamW state, about equal for both.
    assert all(peak > 10 * 2**20 for peak in data['peak_memory_bytes'].values())
