"""The GPU check (``tools/gpu_check.sh``): the CUDA tests, then GreenMIM vs SimMIM on
Swin-B (GreenMIM 224 px, SimMIM's stock 192 px), bf16 autocast, at batch 128, 256 and
the largest that fits, eager and compiled, sdpa and flex group attention, and Swin V2-B
(both 192 px) at batch 128; one markdown table; then the loader section (images/s of the
decode + crop on the GPU of the decode-on-the-device path, the workers' CPU per image);
all within a time budget (8 minutes by default).

    python -m greenmim_lab.benchmarking.gpu_check [--out work_dirs/gpu_check.md]
    python -m greenmim_lab.benchmarking.gpu_check --smoke --device cpu  # the same path, tiny

The matrix is a list of :class:`Cell` s, each one command line of ``tools/benchmark.py``
run in this process, most important first. A cell starts only if the budget left is at
least its estimate, and is stopped (``SIGALRM``) when the budget runs out; a cell that
fails or is skipped gets a row that says so. The table is rewritten after every cell,
so whatever stops the check leaves the rows measured so far.
"""
import argparse
import os
import os.path as osp
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from typing import List, Optional

from greenmim_lab import REPO_ROOT

BUDGET_S = 450  # of the 8 minutes; tools/gpu_check.sh installs the wheels first
TESTS_MAX_S = 150
LOADER_ESTIMATE_S = 40


@dataclass
class Cell:
    """One command line of the matrix; ``estimate_s``: budget it needs to start."""
    mode: str
    argv: List[str]
    estimate_s: float


def matrix(smoke: bool, device: str) -> List[Cell]:
    """The cells, most important first."""
    if smoke:  # tiny models, one step: every code path in seconds
        common = ['--arch', 'demo', '--device', device, '--amp', '--steps', '1',
                  '--warmup', '1', '--memory-steps', '1', '--batch-size', '2']
        flex = [Cell('eager, flex', common + ['--no-memory', '--attn-backend', 'flex'], 5)
                ] if device == 'cuda' else []
        return [Cell('eager', common, 5)] + flex + [
            Cell('compiled (dynamo, eager backend)',
                 common + ['--no-memory', '--compile', '--compile-backend', 'eager'], 5)]
    # sdpa and flex in cells of their own: a failure of one backend keeps the other's rows
    common = ['--arch', 'base', '--device', device, '--amp', '--amp-dtype', 'bfloat16']
    eager = common + ['--steps', '5', '--warmup', '2']
    compiled = common + ['--compile', '--no-memory', '--steps', '3', '--warmup', '2']
    return [
        Cell('eager', eager + ['--batch-size', '128', '256'], 60),
        Cell('compiled', compiled + ['--batch-size', '128'], 90),
        Cell('Swin V2-B w12 192 px, eager', ['--backbone', 'swin_v2'] + eager
             + ['--batch-size', '128'], 60),
        Cell('eager, flex', eager + ['--no-memory', '--batch-size', '128',
                                     '--attn-backend', 'flex'], 60),
        Cell('compiled, flex', compiled + ['--batch-size', '128', '--attn-backend',
                                           'flex'], 90),
        Cell('compiled, CUDA graphs', compiled + ['--batch-size', '128',
                                                  '--compile-mode', 'reduce-overhead'],
             120),
        Cell('eager, decode on the GPU', eager + [
            '--no-memory', '--batch-size', '256', '--greenmim-config',
            'configs/pretrain/greenmim_swin-base-w7_8xb256-amp-coslr-800e_in1k_device-decode.py'],
             60),
        Cell('eager', eager + ['--batch-size', 'max'], 90),
        Cell('compiled', compiled + ['--batch-size', 'max'], 120),
        Cell('compiled', compiled + ['--batch-size', '256'], 90),
    ]


def run_cuda_tests(timeout_s: float, log_path: Optional[str] = None) -> str:
    """``pytest tests -m cuda``; returns its summary line and failures (each with its
    reason: a wide terminal, so pytest does not cut the reason off); the whole output
    goes to ``log_path``."""
    argv = [sys.executable, '-m', 'pytest', 'tests', '-q', '-rfE', '-m', 'cuda',
            '-p', 'greenmim_lab.benchmarking.cuda_tests']
    try:
        result = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True,
                                timeout=timeout_s, env=dict(os.environ, COLUMNS='400'))
    except subprocess.TimeoutExpired:
        return f'stopped after {timeout_s:.0f} s'
    if log_path:
        with open(log_path, 'w') as f:
            f.write(result.stdout + result.stderr)
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    failed = [line[:300] for line in lines if line.startswith(('FAILED', 'ERROR'))]
    return '; '.join(failed + lines[-1:]) if lines else result.stderr[-500:]


class _OutOfBudget(Exception):
    pass


def _alarm(signum, frame):
    raise _OutOfBudget()


def error_summary(error: BaseException) -> str:
    """The error's type and first line: the reason (dynamo's errors end with a
    boilerplate line about ``TORCHDYNAMO_VERBOSE`` that says nothing)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f'{type(error).__name__}: ' + (lines[0][:300] if lines else '(no message)')


def run_cell(cell: Cell, seconds: float, errors_path: Optional[str] = None) -> List[list]:
    """The cell's rows of :data:`runner.STEP_HEADER`, behind a ``mode`` column; a
    failed cell's full traceback is appended to ``errors_path``."""
    from . import cli
    from .runner import STEP_HEADER, step_rows

    args = cli.parse_args(cell.argv)
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(max(1, int(seconds)))
    try:
        out = cli.run(args)
    except _OutOfBudget:
        return [_note_row(cell, f'stopped: out of budget after {seconds:.0f} s')]
    except Exception as error:  # noqa: BLE001  (one failed cell must not end the check)
        if errors_path:
            with open(errors_path, 'a') as f:
                f.write(f'## {cell.mode}: {" ".join(cell.argv)}\n{traceback.format_exc()}\n')
        return [_note_row(cell, f'failed: {error_summary(error)}')]
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    rows = step_rows(out['results'], out['variants'][-1].name)
    assert len(rows[0]) == len(STEP_HEADER)
    return [[cell.mode] + row for row in rows]


def _note_row(cell: Cell, note: str) -> list:
    from .runner import STEP_HEADER

    sizes = cell.argv[cell.argv.index('--batch-size') + 1:] + ['--']
    sizes = ' '.join(sizes[:next(i for i, s in enumerate(sizes) if s.startswith('-'))])
    return [cell.mode, sizes, note] + [''] * (len(STEP_HEADER) - 2)


def write_report(path: str, header: str, rows: List[list], extra: str = '') -> None:
    from .measure import markdown_table
    from .runner import STEP_HEADER

    columns = ['mode'] + [h.format('SimMIM') for h in STEP_HEADER]
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with open(path, 'w') as f:
        f.write(header + '\n\n' + markdown_table(columns, rows) + '\n')
        if extra:
            f.write('\n' + extra + '\n')


def run_loader(device: str, smoke: bool, seconds: float) -> str:
    """The loader section (input pipelines' CPU per image, and the decode + crop on
    ``device`` of the decode-on-the-device path) as markdown; a failure says so."""
    from . import cli

    if seconds < LOADER_ESTIMATE_S:
        return (f'Loader: not run: {seconds:.0f} s of budget left, needs '
                f'~{LOADER_ESTIMATE_S} s.')
    argv = ['--section', 'loader', '--arch', 'base', '--device', device,
            '--loader-images', '8' if smoke else '64', '--repeats', '1' if smoke else '3',
            '--op-batch', '8' if smoke else '256']
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(max(1, int(seconds)))
    try:
        out = cli.run(cli.parse_args(argv))
    except _OutOfBudget:
        return f'Loader: stopped: out of budget after {seconds:.0f} s.'
    except Exception as error:  # noqa: BLE001  (the step rows stand)
        return f'Loader: failed: {error_summary(error)}'
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    return '\n\n'.join(out['tables'][name] for name in (
        'loader-device-decode', 'loader', 'loader-cores'))


def main(argv: Optional[List[str]] = None) -> List[list]:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', default='work_dirs/gpu_check.md')
    parser.add_argument('--device', choices=['cuda', 'cpu'], default='cuda')
    parser.add_argument('--smoke', action='store_true',
                        help='tiny models, one step: check the path, not the numbers')
    parser.add_argument('--budget-s', type=float, default=BUDGET_S,
                        help=f'seconds for tests and matrix (default: {BUDGET_S})')
    parser.add_argument('--skip-tests', action='store_true')
    args = parser.parse_args(argv)
    start = time.monotonic()
    import torch

    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: torch sees no CUDA device; on a CPU machine run '
                     '--smoke --device cpu')
    device = (torch.cuda.get_device_name(0) if args.device == 'cuda'
              else f'CPU ({torch.get_num_threads()} threads)')
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    tests = 'not run' if args.skip_tests else run_cuda_tests(
        min(TESTS_MAX_S, args.budget_s / 3), osp.splitext(args.out)[0] + '_cuda_tests.log')
    print(f'CUDA tests: {tests}', flush=True)
    rows: List[list] = []
    errors_path = osp.splitext(args.out)[0] + '_errors.log'  # tracebacks of failed cells
    if osp.exists(errors_path):
        os.remove(errors_path)
    for cell in matrix(args.smoke, args.device):
        left = args.budget_s - (time.monotonic() - start)
        if left < cell.estimate_s:
            rows.append(_note_row(cell, f'not run: {left:.0f} s of budget left, '
                                  f'needs ~{cell.estimate_s:.0f} s'))
        else:
            print(f'cell: {cell.mode} {" ".join(cell.argv)}', flush=True)
            rows += run_cell(cell, left, errors_path)
        header = (f'## GPU check: {device}, torch {torch.__version__}'
                  f'{" (smoke: tiny models, not a measurement)" if args.smoke else ""}\n\n'
                  f'CUDA tests (`pytest tests -m cuda`): {tests}. Matrix: '
                  f'{time.monotonic() - start:.0f} s of a {args.budget_s:.0f} s budget; '
                  'GreenMIM Swin (configs/pretrain/greenmim_swin_b.py) vs SimMIM '
                  "(mmpretrain's stock simmim_swin-base-w6 192 px config); Swin V2-B "
                  'rows: GreenMIM vs SimMIM Swin V2-B, both 192 px, window 12; bf16 '
                  'autocast; max = the largest batch that fits (eager); compiled rows '
                  'without memory probes.')
        write_report(args.out, header, rows)
    loader = run_loader(args.device, args.smoke, args.budget_s - (time.monotonic() - start))
    write_report(args.out, header, rows, loader)
    print(open(args.out).read())
    if osp.exists(errors_path):
        print(f'failed cells: tracebacks in {errors_path}')
    return rows


def failed(rows: List[list]) -> bool:
    """Whether a cell failed (not: ran out of budget)."""
    return any(str(row[2]).startswith('failed:') for row in rows)


if __name__ == '__main__':
    # exit 1 when a cell failed: a prepared device script stops after a failed --smoke
    sys.exit(1 if failed(main()) else 0)
