"""Peak memory of a model's training steps, measured in a fresh process.

A fresh process per (config, batch) keeps the models of a side-by-side timing run, and
the allocator state they leave, out of the figure. The child (``python -m
greenmim_lab.benchmarking.memory``) makes one batch, builds the model, runs
``memory_steps`` training steps (two by default: the second holds the gradients and
the optimizer state at once) and prints the peak as JSON:

- CUDA: ``torch.cuda.max_memory_allocated``;
- CPU: the peak resident set size (``VmHWM``) above the size before the model was
  built (weights, gradients, optimizer state, activations).

A batch that does not fit on the GPU is reported as ``None`` (:func:`peak_bytes`);
:func:`largest_batch` finds the largest one that fits, by doubling then bisecting.
"""
import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from typing import Callable, Dict, List, Optional, Tuple

from mmengine.config import Config

from greenmim_lab import REPO_ROOT

from .steps import StepOptions

OOM_MARKERS = ('out of memory', 'CUBLAS_STATUS_ALLOC_FAILED')
_CACHE: Dict[Tuple[str, int, str], Optional[int]] = {}  # one probe per process


def _proc_status_bytes(field: str) -> int:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1]) * 1024  # kB
    raise RuntimeError(f'/proc/self/status has no {field}.')


def peak_rss_bytes() -> int:
    """This process's peak RSS (``VmHWM``).

    Not ``getrusage``'s ``ru_maxrss``: Linux keeps that across ``execve``, so a child
    of a big process would report its parent's size.
    """
    return _proc_status_bytes('VmHWM')


def peak_bytes(cfg: Config, batch_size: int, options: StepOptions,
               steps: int = 2) -> Optional[int]:
    """Peak memory of ``steps`` training steps in a fresh process; None if out of memory.

    Results are remembered for the life of this process (the largest-batch search and
    the tables of several cells ask for the same probes).
    """
    options_json = json.dumps(dataclasses.asdict(options), sort_keys=True)
    key = (json.dumps(cfg.to_dict(), sort_keys=True, default=str), batch_size,
           options_json + str(steps))
    if key not in _CACHE:
        _CACHE[key] = _run_probe(cfg, batch_size, options_json, steps)
    return _CACHE[key]


def _run_probe(cfg: Config, batch_size: int, options_json: str,
               steps: int) -> Optional[int]:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, 'config.py')
        cfg.dump(path)
        argv = [sys.executable, '-m', __name__, path, str(batch_size), options_json,
                str(steps)]
        result = subprocess.run(argv, capture_output=True, text=True, cwd=REPO_ROOT)
    if result.returncode == 0:
        return json.loads(result.stdout.strip().splitlines()[-1])['peak_bytes']
    if any(marker in result.stderr for marker in OOM_MARKERS):
        return None
    raise RuntimeError(f'The memory probe (batch {batch_size}) failed:\n'
                       f'{result.stderr[-3000:]}')


def largest_batch(fits: Callable[[int], bool], start: int = 128,
                  limit: int = 1 << 16) -> int:
    """Largest batch for which ``fits`` holds: doubling from ``start``, then bisecting
    to within 1/8 (mid-points rounded to multiples of 8 above 64).

    Raises:
        ValueError: not even a batch of 1 fits.
    """
    good, bad = 0, None
    batch = start
    while bad is None and batch <= limit:  # doubling
        if fits(batch):
            good, batch = batch, batch * 2
        else:
            bad = batch
    if bad is None:
        return good
    while bad - good > max(1, good // 8):  # bisecting
        mid = (good + bad) // 2
        if mid > 64:
            mid -= mid % 8
        if mid <= good:
            break
        if fits(mid):
            good = mid
        else:
            bad = mid
    if good == 0:
        raise ValueError('Not even a batch of 1 fits on the GPU: free GPU memory or '
                         'use a smaller arch.')
    return good


def _probe_main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description='one memory probe (internal)')
    parser.add_argument('config')
    parser.add_argument('batch_size', type=int)
    parser.add_argument('options', help='StepOptions as JSON')
    parser.add_argument('steps', type=int)
    args = parser.parse_args(argv)
    import torch

    import greenmim_mm  # noqa: F401  (registers the models and applies compat fixes)
    from .steps import TrainStep, make_batches

    options = StepOptions(**json.loads(args.options))
    if options.threads:
        torch.set_num_threads(options.threads)
    torch.manual_seed(options.seed)
    cfg = Config.fromfile(args.config)
    batch = make_batches(cfg, args.batch_size, 1, options)[0]
    device = torch.device(options.device)
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
    baseline = _proc_status_bytes('VmRSS')
    step = TrainStep(cfg, options)
    step.compile()
    for _ in range(args.steps):
        step(batch)
    if device.type == 'cuda':
        peak = torch.cuda.max_memory_allocated(device)
    else:
        peak = peak_rss_bytes() - baseline
    print(json.dumps(dict(peak_bytes=peak)))


if __name__ == '__main__':
    _probe_main()
