"""greenmim_lab.benchmarking: the runner on tiny configs, the sections, the memory probe,
the largest-batch search, bad input, and the GPU check's path on the CPU."""
import inspect
import math
import os
import os.path as osp
import re
import subprocess
import sys
import textwrap

import pytest
import torch

from greenmim_lab.benchmarking import cli, memory
from greenmim_lab.benchmarking.comparisons import comparison
from greenmim_lab.benchmarking.grouping_attention import attention_table, grouping_table
from greenmim_lab.benchmarking.measure import busy_seconds, markdown_table
from greenmim_lab.benchmarking.runner import run_steps, steps_table
from greenmim_lab.benchmarking.sparse_conv import TWINS_L_CONVS, sparse_conv_table
from greenmim_lab.benchmarking.steps import StepOptions

from greenmim_lab import REPO_ROOT
CPU = StepOptions(threads=1)


@pytest.mark.parametrize('backbone', ['swin', 'twins', 'swin_v2'])
def test_runner_times_both_models_side_by_side(backbone):
    variants = comparison(backbone, 'demo')
    assert [v.name for v in variants] == ['GreenMIM', 'SimMIM']
    results = run_steps(variants, [2], CPU, steps=1, warmup=0, measure_memory=False)
    assert [(r.name, r.batch_size) for r in results] == [('GreenMIM', 2), ('SimMIM', 2)]
    for r in results:
        assert len(r.timing.wall) == len(r.timing.cpu) == 1
        assert math.isfinite(r.images_per_s) and r.images_per_s > 0
    assert results[1].flops > results[0].flops > 0  # SimMIM encodes every token
    table = steps_table(results, variants, CPU, 'tiny')
    greenmim_row = next(line for line in table.splitlines() if '| GreenMIM |' in line)
    speed_up = float(greenmim_row.split('|')[-3].strip().rstrip('x'))
    assert math.isfinite(speed_up) and speed_up > 0
    assert '| SimMIM |' in table and 'GPU busy' not in table


def test_step_with_the_decode_on_the_device(tmp_path):
    """A pipeline that decodes on the device gets JPEG bytes; the timed step decodes
    them (here on the CPU, the GPU check's cell on the GPU)."""
    from mmengine.config import Config

    from greenmim_lab.benchmarking.steps import make_batches

    greenmim, simmim = comparison('swin', 'demo')
    device = Config.fromfile(osp.join(
        REPO_ROOT, 'configs/_base_/datasets/imagenet_bs256_greenmim_device-decode.py'))
    pipeline = [dict(step) for step in device.train_pipeline]
    pipeline[1]['scale'] = 128  # the demo's size
    greenmim.cfg.train_dataloader.dataset.pipeline = pipeline
    greenmim.cfg.train_pipeline = pipeline
    batch = make_batches(greenmim.cfg, 2, 1, CPU)[0]
    assert isinstance(batch['inputs'], list) and batch['inputs'][0].dim() == 1
    results = run_steps([greenmim, simmim], [2], CPU, steps=1, warmup=0,
                        measure_memory=False)
    assert all(math.isfinite(r.images_per_s) and r.images_per_s > 0 for r in results)


def test_batches_come_from_each_pipeline_and_collate_fn(monkeypatch):
    """Each model's batches are its own pipeline's samples collated by its config's
    ``train_dataloader.collate_fn`` (looked up in mmengine's FUNCTIONS registry)."""
    from mmengine.dataset import default_collate
    from mmengine.registry import FUNCTIONS

    from greenmim_lab.benchmarking.steps import make_batches

    calls = []

    def counting_collate(samples):
        calls.append(len(samples))
        return default_collate(samples)

    FUNCTIONS.register_module('counting_collate', module=counting_collate, force=True)
    greenmim, simmim = comparison('twins', 'demo')
    greenmim.cfg.train_dataloader.collate_fn = dict(type='counting_collate')
    batches = make_batches(greenmim.cfg, 2, 3, CPU)
    assert calls == [2, 2, 2]
    assert batches[0]['data_samples'][0].mask.shape == (4, 4)  # GreenMIM unit mask
    simmim_batch = make_batches(simmim.cfg, 2, 1, CPU)[0]
    assert simmim_batch['data_samples'][0].mask.shape == (32, 32)  # SimMIM patch mask
    assert calls == [2, 2, 2]  # SimMIM's default_collate


def test_ops_and_sparse_conv_sections_on_tiny_sizes():
    grouping = grouping_table(batch=2, repeats=1)
    assert len(grouping['rows']) == 7  # 4 stages, shifted except the 7x7 one
    attention = attention_table(batch=1, repeats=1)
    assert all(row[7] > 0 and row[10] > 0 for row in attention['rows'])  # speed-ups
    convs = sparse_conv_table(batch=1, repeats=1, convs=TWINS_L_CONVS[::3])
    assert [row[0] for row in convs['rows']] == [c[0] for c in TWINS_L_CONVS[::3]]
    text = markdown_table(**convs)
    assert text.count('\n|') == 2 + 3  # header, rule, 3 rows


def test_peak_rss_is_not_inherited_from_the_parent():
    """A child of a big process reports its own peak, not the parent's: ``getrusage``'s
    ``ru_maxrss`` survives ``execve`` on Linux, ``VmHWM`` does not. The child runs the
    probe's own functions, without the imports that would dwarf what is tested."""
    ballast = b'x' * (512 * 2**20)  # noqa: F841  (resident: every page written)
    code = (textwrap.dedent(inspect.getsource(memory._proc_status_bytes))
            + textwrap.dedent(inspect.getsource(memory.peak_rss_bytes))
            + 'print(peak_rss_bytes())')
    child = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert child.returncode == 0, child.stderr
    assert int(child.stdout.split()[-1]) < 256 * 2**20


def test_largest_batch_doubles_then_bisects():
    probes = []

    def fits(batch):
        probes.append(batch)
        return batch <= 1000

    largest = memory.largest_batch(fits, start=128)
    assert 1000 - 1000 // 8 <= largest <= 1000
    assert probes[:5] == [128, 256, 512, 1024, 768]
    assert memory.largest_batch(lambda b: b <= 5, start=128) == 5
    with pytest.raises(ValueError, match='Not even a batch of 1'):
        memory.largest_batch(lambda b: False, start=4)


def test_busy_time_is_the_union_of_kernel_intervals():
    assert busy_seconds([(0, 2), (1, 3), (5, 6), (5.5, 5.7)]) == 4
    assert busy_seconds([]) == 0


@pytest.mark.parametrize('argv, message', [
    (['--batch-size', 'max'], '--batch-size max: the largest batch is searched on the '
     'GPU only'),
    (['--backbone', 'vit'], "invalid choice: 'vit'"),
    (['--backbone', 'twins', '--arch', 'tiny'], '--arch tiny: no twins arch'),
    (['--batch-size', '0'], "invalid batch size '0'"),
    (['--attn-backend', 'flex'], '--attn-backend flex: FlexAttention has no backward'),
])
def test_bad_command_lines(capsys, argv, message):
    with pytest.raises(SystemExit):
        cli.parse_args(argv)
    assert message in capsys.readouterr().err


def test_unknown_backbone_in_the_api():
    with pytest.raises(ValueError, match="Unknown backbone 'vit'"):
        comparison('vit', 'base')


BLOCKER = '''
import importlib.abc, sys
class Blocker(importlib.abc.MetaPathFinder):
    """No mmdet, no mmcv compiled ops: what a bare GPU machine with mmcv-lite has."""
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == 'mmdet' or name.startswith(('mmcv.ops', 'mmcv._ext')):
            raise ModuleNotFoundError(f'{name} is blocked', name=name)
sys.meta_path.insert(0, Blocker())
'''


def test_gpu_check_smoke_on_the_cpu_without_mmdet_and_mmcv_ops(tmp_path):
    """tools/gpu_check.sh's path up to the first CUDA call, tiny: the CUDA tests (all
    skipped here), a training step of GreenMIM and SimMIM, their memory probes (fresh
    processes), a compiled cell, one table; in processes that cannot import mmdet or
    mmcv.ops (pretraining needs neither)."""
    (tmp_path / 'sitecustomize.py').write_text(BLOCKER)
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS='1',
               PYTHONPATH=f'{tmp_path}{os.pathsep}{REPO_ROOT}')
    blocked = subprocess.run([sys.executable, '-c', 'import mmcv.ops'], env=env,
                             capture_output=True, text=True)
    assert 'mmcv.ops is blocked' in blocked.stderr
    out = tmp_path / 'check.md'
    result = subprocess.run(['bash', 'tools/gpu_check.sh', '--smoke', '--device', 'cpu',
                             '--out', str(out)], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = out.read_text()
    skipped = re.search(r'CUDA tests \(`pytest tests -m cuda`\): (\d+) skipped, \d+ '
                        r'deselected', report)
    assert skipped and int(skipped[1]) >= 4, report  # this file's CUDA test, at least
    assert 'skipped' in (tmp_path / 'check_cuda_tests.log').read_text()  # pytest's output
    rows = {tuple(cell.strip() for cell in line.split('|')[1:4]): line.split('|')
            for line in report.splitlines() if line.startswith('| ')}
    for model in ('GreenMIM', 'SimMIM'):
        peak = rows['eager', '2', model][9].strip()
        assert peak.endswith(' MiB') and int(peak.split()[0]) > 10  # probe in a child
    # every cell ran (a failed cell makes the script exit 1, checked above)
    assert rows['compiled (dynamo, eager backend)', '2', 'GreenMIM'][4].strip().endswith('ms')
    # then the loader: decode + crop of the decode-on-the-device path, CPU per image
    assert '### Decode + crop on the training device' in report, report[-2000:]
    assert '### Input pipeline: CPU per image' in report


def test_gpu_check_without_wheels_says_what_to_do(tmp_path):
    result = subprocess.run(['bash', 'tools/gpu_check.sh', str(tmp_path)], cwd=REPO_ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert f'no wheels in {tmp_path}: run tools/gpu_check.sh --prepare' in result.stderr


def test_gpu_check_lists_the_cells_it_has_no_budget_for(tmp_path):
    from greenmim_lab.benchmarking import gpu_check

    out = tmp_path / 'check.md'
    rows = gpu_check.main(['--smoke', '--device', 'cpu', '--skip-tests', '--budget-s',
                           '0', '--out', str(out)])
    assert [row[:2] for row in rows] == [['eager', '2'],
                                         ['compiled (dynamo, eager backend)', '2']]
    assert all(row[2].startswith('not run: ') for row in rows)
    assert out.read_text().count('| not run: ') == 2


def test_gpu_check_failed_cell_names_the_reason_and_keeps_the_traceback(tmp_path,
                                                                         monkeypatch):
    """A failed cell's row gives the error's first line (dynamo's last line is a
    boilerplate hint), its traceback goes to <out>_errors.log, the exit status is 1."""
    from greenmim_lab.benchmarking import cli, gpu_check

    def broken_run(args):
        raise RuntimeError('Dynamo does not know how to trace X\n\n'
                           'Set TORCHDYNAMO_VERBOSE=1 for the internal stack trace')

    monkeypatch.setattr(cli, 'run', broken_run)
    out = tmp_path / 'check.md'
    rows = gpu_check.main(['--smoke', '--device', 'cpu', '--skip-tests', '--out', str(out)])
    assert [row[2] for row in rows] == [
        'failed: RuntimeError: Dynamo does not know how to trace X'] * 2
    assert gpu_check.failed(rows)
    errors = (tmp_path / 'check_errors.log').read_text()
    assert errors.count('Traceback (most recent call last)') == 2
    assert 'in broken_run' in errors
