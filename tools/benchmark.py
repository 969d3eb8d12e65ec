"""GreenMIM vs mmpretrain's SimMIM: training-step time and peak memory, side by side.

Builds both pretraining models for the same Swin arch from their own configs --
GreenMIM from ``configs/pretrain/greenmim_swin_{t,b}.py`` (224 px, window 7, 25% of
the 32 px units visible), SimMIM from mmpretrain's stock
``simmim_swin-base-w6_8xb256-amp-coslr-100e_in1k-192px.py`` (192 px, window 6, every
token through the encoder) with its arch swapped -- feeds each random images pushed
through *its own* training pipeline (crop, flip, mask generator, ``PackInputs``), and
times full training steps (``model.train_step``: data preprocessor, forward, backward,
AdamW update) after a warm-up, alternating the two models step by step so that both
see the same machine state. Peak memory is measured per model in a fresh subprocess:
``torch.cuda.max_memory_allocated`` on CUDA, the peak resident set size above the
process's size before the model was built on the CPU.

    python tools/benchmark.py                                  # Swin-T, batch 8, CPU
    python tools/benchmark.py --arch base --batch-size 128 --device cuda --amp

Both models get the same optimiser (AdamW, lr 1e-4, betas (0.9, 0.95), wd 0.05, no
gradient clipping) and, with ``--amp``, the same autocast dtype.
"""
from __future__ import annotations

import argparse
import json
import os.path as osp
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext
from typing import Callable, Dict, List, Optional

import numpy as np
import torch

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
GREENMIM_CONFIGS = {
    'tiny': osp.join(REPO_ROOT, 'configs', 'pretrain', 'greenmim_swin_t.py'),
    'base': osp.join(REPO_ROOT, 'configs', 'pretrain', 'greenmim_swin_b.py'),
}
SIMMIM_CONFIG = ('mmpretrain::simmim/'
                 'simmim_swin-base-w6_8xb256-amp-coslr-100e_in1k-192px.py')
SOURCE_SIZE = 256  # px of the random images the pipelines crop from
NUM_BATCHES = 4  # distinct batches (masks) each model cycles through


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Training-step time and peak memory of GreenMIM vs SimMIM')
    parser.add_argument('--arch', choices=sorted(GREENMIM_CONFIGS), default='tiny',
                        help='Swin arch of both models (default: tiny)')
    parser.add_argument('--batch-size', type=int, default=8,
                        help='images per step for both models (default: 8)')
    parser.add_argument('--device', choices=['cpu', 'cuda'], default='cpu')
    parser.add_argument('--amp', action='store_true',
                        help='mixed precision: AmpOptimWrapper on CUDA, '
                        'bfloat16 autocast on the CPU')
    parser.add_argument('--amp-dtype', choices=['float16', 'bfloat16'], default=None,
                        help='autocast dtype (default: float16 on CUDA as the '
                        'configs, bfloat16 on the CPU)')
    parser.add_argument('--steps', type=int, default=10,
                        help='timed steps per model (default: 10)')
    parser.add_argument('--warmup', type=int, default=3,
                        help='untimed steps per model first (default: 3)')
    parser.add_argument('--threads', type=int, default=None,
                        help='torch CPU threads (default: torch\'s choice)')
    parser.add_argument('--fused-adamw', action='store_true',
                        help="AdamW(fused=True) for both models instead of torch's "
                        'default implementation (what the configs build)')
    parser.add_argument('--memory-steps', type=int, default=2,
                        help='steps run in each memory subprocess (default: 2)')
    parser.add_argument('--no-memory', action='store_true',
                        help='skip the peak-memory subprocesses')
    parser.add_argument('--greenmim-config', default=None,
                        help='GreenMIM config (default: configs/pretrain/'
                        'greenmim_swin_{t,b}.py for --arch)')
    parser.add_argument('--simmim-config', default=SIMMIM_CONFIG,
                        help='SimMIM config; its backbone arch is set to --arch')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--json', default=None, help='also write the results here')
    parser.add_argument('--memory-worker', choices=['greenmim', 'simmim'],
                        default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: no CUDA device is visible to torch')
    if args.amp_dtype is None:
        args.amp_dtype = 'float16' if args.device == 'cuda' else 'bfloat16'
    if args.greenmim_config is None:
        args.greenmim_config = GREENMIM_CONFIGS[args.arch]
    return args


# --------------------------------------------------------------------------- models
def resolve_config(path: str) -> str:
    """A config path, with ``package::rel/path.py`` resolved in that package's configs."""
    if '::' not in path:
        return path
    import importlib

    package, rel_path = path.split('::', 1)
    root = osp.dirname(importlib.import_module(package).__file__)
    return osp.join(root, '.mim', 'configs', rel_path)


def load_model_configs(args: argparse.Namespace) -> dict:
    """The two configs, SimMIM's switched to ``args.arch``."""
    from mmengine.config import Config
    from mmpretrain.models.backbones import SwinTransformer

    greenmim = Config.fromfile(resolve_config(args.greenmim_config))
    simmim = Config.fromfile(resolve_config(args.simmim_config))
    embed_dims = SwinTransformer.arch_zoo[args.arch]['embed_dims']
    simmim.model.backbone.arch = args.arch
    simmim.model.neck.in_channels = embed_dims * 2**3  # the last stage's channels
    return dict(greenmim=greenmim, simmim=simmim)


def build_model(cfg, device: torch.device) -> torch.nn.Module:
    from mmengine.logging import MMLogger
    from mmpretrain.registry import MODELS

    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel('WARNING')  # init_weights logs every parameter
    try:
        model = MODELS.build(cfg.model)
        model.init_weights()
    finally:
        logger.setLevel(level)
    return model.to(device).train()


def build_optim_wrapper(model: torch.nn.Module, args: argparse.Namespace):
    """AdamW for both models; AmpOptimWrapper with ``--amp`` on CUDA."""
    from mmengine.optim import AmpOptimWrapper, OptimWrapper

    fused = dict(fused=True) if args.fused_adamw else {}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95),
                                  weight_decay=0.05, **fused)
    if args.amp and args.device == 'cuda':
        return AmpOptimWrapper(optimizer=optimizer, loss_scale='dynamic',
                               dtype=getattr(torch, args.amp_dtype))
    return OptimWrapper(optimizer=optimizer)


# ----------------------------------------------------------------------------- data
def make_batches(cfg, batch_size: int, num_batches: int,
                 rng: np.random.Generator) -> List[dict]:
    """Random images through the config's training pipeline, minus the file loading.

    So each model gets the inputs and masks its own pipeline makes (SimMIM's
    ``SimMIMMaskGenerator``, GreenMIM's ``GreenMIMMaskGenerator``).
    """
    from mmengine.dataset import Compose, default_collate

    pipeline_cfg = cfg.get('train_pipeline') or cfg.train_dataloader.dataset.pipeline
    pipeline = Compose(
        [step for step in pipeline_cfg if step['type'] != 'LoadImageFromFile'])
    batches = []
    for _ in range(num_batches):
        samples = []
        for _ in range(batch_size):
            img = rng.integers(0, 256, (SOURCE_SIZE, SOURCE_SIZE, 3), dtype=np.uint8)
            samples.append(pipeline(dict(img=img, ori_shape=img.shape[:2],
                                         img_shape=img.shape[:2])))
        batches.append(default_collate(samples))
    return batches


# ------------------------------------------------------------------------- stepping
def make_stepper(model: torch.nn.Module, args: argparse.Namespace) -> Callable:
    """One training step ``step(batch)``, synchronised, returning the loss value."""
    optim_wrapper = build_optim_wrapper(model, args)
    device = torch.device(args.device)
    cpu_amp = args.amp and args.device == 'cpu'

    def step(batch: dict) -> float:
        autocast = (torch.autocast('cpu', dtype=getattr(torch, args.amp_dtype))
                    if cpu_amp else nullcontext())
        with autocast:
            log_vars = model.train_step(batch, optim_wrapper)
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
        return float(log_vars['loss'].detach())

    return step


def count_flops(step: Callable, batch: dict) -> int:
    """FLOPs of one training step (forward + backward matmuls, convs, attention)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step(batch)
    return counter.get_total_flops()


def time_alternating(steppers: Dict[str, Callable], batches: Dict[str, List[dict]],
                     steps: int, warmup: int) -> Dict[str, Dict[str, List[float]]]:
    """Warm every model up, then time ``steps`` steps of each, alternating models.

    Returns, per model, the wall-clock time (``'wall'``) and the CPU time of this
    process (``'cpu'``, all its threads) of every timed step, in seconds.
    """
    names = list(steppers)
    for i in range(warmup):
        for name in names:
            steppers[name](batches[name][i % len(batches[name])])
    times = {name: dict(wall=[], cpu=[]) for name in names}
    for i in range(steps):
        order = names if i % 2 == 0 else names[::-1]  # neither always goes first
        for name in order:
            batch = batches[name][(warmup + i) % len(batches[name])]
            wall, cpu = time.perf_counter(), time.process_time()
            loss = steppers[name](batch)
            times[name]['cpu'].append(time.process_time() - cpu)
            times[name]['wall'].append(time.perf_counter() - wall)
            if not np.isfinite(loss):
                raise RuntimeError(f'{name}: the loss is {loss} at timed step {i}.')
    return times


# --------------------------------------------------------------------------- memory
def _proc_status_bytes(field: str) -> int:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1]) * 1024  # kB
    raise RuntimeError(f'/proc/self/status has no {field}.')


def current_rss_bytes() -> int:
    return _proc_status_bytes('VmRSS')


def peak_rss_bytes() -> int:
    """This process's peak RSS (``VmHWM``).

    Not ``getrusage``'s ``ru_maxrss``: Linux keeps that across ``execve``, so a child
    of a big process would report its parent's size.
    """
    return _proc_status_bytes('VmHWM')


def memory_worker(args: argparse.Namespace) -> None:
    """Peak memory of one model's training steps, in this (fresh) process; prints JSON."""
    import greenmim_mm  # noqa: F401
    from mmengine.registry import init_default_scope

    init_default_scope('mmpretrain')
    device = torch.device(args.device)
    cfg = load_model_configs(args)[args.memory_worker]
    batches = make_batches(cfg, args.batch_size, 1, np.random.default_rng(args.seed))
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
    baseline = current_rss_bytes()
    step = make_stepper(build_model(cfg, device), args)
    for _ in range(args.memory_steps):
        step(batches[0])
    if device.type == 'cuda':
        peak = torch.cuda.max_memory_allocated(device)
    else:
        peak = peak_rss_bytes() - baseline
    print(json.dumps(dict(peak_bytes=peak)))


def measure_memory(args: argparse.Namespace, name: str) -> int:
    """Run :func:`memory_worker` for ``name`` in a subprocess, return its peak bytes."""
    argv = [sys.executable, osp.abspath(__file__), '--memory-worker', name,
            '--arch', args.arch, '--batch-size', str(args.batch_size),
            '--device', args.device, '--amp-dtype', args.amp_dtype,
            '--memory-steps', str(args.memory_steps), '--seed', str(args.seed),
            '--greenmim-config', args.greenmim_config,
            '--simmim-config', args.simmim_config]
    if args.amp:
        argv.append('--amp')
    if args.fused_adamw:
        argv.append('--fused-adamw')
    if args.threads:
        argv += ['--threads', str(args.threads)]
    result = subprocess.run(argv, capture_output=True, text=True, cwd=REPO_ROOT)
    if result.returncode != 0:
        raise RuntimeError(f'The memory run of {name} failed:\n{result.stderr[-3000:]}')
    return json.loads(result.stdout.strip().splitlines()[-1])['peak_bytes']


# -------------------------------------------------------------------------- reports
def describe_setup(args: argparse.Namespace, cfgs: dict) -> Dict[str, str]:
    """One line per model: backbone, input size, window, mask generator."""
    rows = {}
    for name, cfg in cfgs.items():
        backbone = cfg.model.backbone
        stage_cfgs = backbone.get('stage_cfgs', {})
        block_cfgs = stage_cfgs.get('block_cfgs', {}) if isinstance(stage_cfgs,
                                                                    dict) else {}
        window = block_cfgs.get('window_size') or backbone.get('window_size', 7)
        masker = next(step for step in (cfg.get('train_pipeline')
                                        or cfg.train_dataloader.dataset.pipeline)
                      if 'Mask' in step['type'])
        rows[name] = (f"{backbone.type}(arch={args.arch}, {backbone.get('img_size')} px, "
                      f"window {window}), {masker['type']}(mask_ratio="
                      f"{masker['mask_ratio']})")
    return rows


def format_report(args: argparse.Namespace, setup: Dict[str, str],
                  times: Dict[str, Dict[str, List[float]]], flops: Dict[str, int],
                  memory: Optional[Dict[str, int]]) -> str:
    """The results as a markdown table, with the setup above it."""
    wall = {name: statistics.median(t['wall']) for name, t in times.items()}
    cpu = {name: statistics.median(t['cpu']) for name, t in times.items()}
    on_cpu = args.device == 'cpu'
    if on_cpu:
        device = f'CPU ({torch.get_num_threads()} threads)'
    else:
        device = torch.cuda.get_device_name(0)
    precision = f'AMP {args.amp_dtype}' if args.amp else 'fp32'
    optimizer = 'fused AdamW' if args.fused_adamw else 'AdamW'
    lines = [f'Swin-{args.arch[0].upper()}, batch {args.batch_size}, {device}, '
             f'{precision}, {optimizer}, torch {torch.__version__}; medians of '
             f'{args.steps} alternating steps after {args.warmup} warm-up steps each',
             f"- GreenMIM: {setup['greenmim']}",
             f"- SimMIM: {setup['simmim']}",
             '',
             '| model | step time (median) | min - max | '
             + ('CPU time (median) | ' if on_cpu else '')
             + 'images/s | GFLOPs / step | peak memory |',
             '|---|---|---|' + ('---|' if on_cpu else '') + '---|---|---|']
    for name, label in (('greenmim', 'GreenMIM'), ('simmim', 'SimMIM')):
        mem = f'{memory[name] / 2**20:.0f} MiB' if memory else 'n/a'
        row = (f'| {label} | {wall[name] * 1e3:.0f} ms | '
               f"{min(times[name]['wall']) * 1e3:.0f} - "
               f"{max(times[name]['wall']) * 1e3:.0f} ms | ")
        if on_cpu:
            row += f'{cpu[name] * 1e3:.0f} ms | '
        row += (f'{args.batch_size / wall[name]:.1f} | {flops[name] / 1e9:.1f} | '
                f'{mem} |')
        lines.append(row)
    ratio = f"{memory['greenmim'] / memory['simmim']:.0%} of SimMIM" if memory else 'n/a'
    row = (f"| **SimMIM / GreenMIM** | **{wall['simmim'] / wall['greenmim']:.2f}x** "
           '| | ')
    if on_cpu:
        row += f"**{cpu['simmim'] / cpu['greenmim']:.2f}x** | "
    row += (f"{wall['simmim'] / wall['greenmim']:.2f}x | "
            f"{flops['simmim'] / flops['greenmim']:.2f}x | **GreenMIM: {ratio}** |")
    lines.append(row)
    lines.append('')
    lines.append('GFLOPs: forward + backward of one step (torch.utils.flop_counter: '
                 'matmuls, convolutions, attention incl. padding).')
    if on_cpu:
        lines.append('CPU time: CPU seconds of the process (all threads) per step; '
                     'unlike wall time it does not grow when other processes share '
                     'the cores. Peak memory: peak resident set size of a fresh '
                     'process training only that model, above its size before the '
                     'model was built (weights, gradients, AdamW state, activations).')
    else:
        lines.append('Peak memory: torch.cuda.max_memory_allocated of a fresh process '
                     'training only that model.')
    return '\n'.join(lines)


def main(argv: Optional[List[str]] = None) -> Dict[str, object]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_worker:
        torch.manual_seed(args.seed)
        memory_worker(args)
        return {}

    import greenmim_mm  # noqa: F401  (registers GreenMIM and applies compat fixes)
    from mmengine.registry import init_default_scope

    init_default_scope('mmpretrain')
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    device = torch.device(args.device)
    cfgs = load_model_configs(args)
    batches = {name: make_batches(cfg, args.batch_size, NUM_BATCHES, rng)
               for name, cfg in cfgs.items()}
    steppers = {name: make_stepper(build_model(cfg, device), args)
                for name, cfg in cfgs.items()}
    flops = {name: count_flops(step, batches[name][0]) for name, step in steppers.items()}
    times = time_alternating(steppers, batches, args.steps, args.warmup)
    del steppers
    memory = None
    if not args.no_memory:
        memory = {name: measure_memory(args, name) for name in cfgs}

    print(format_report(args, describe_setup(args, cfgs), times, flops, memory))
    wall = {name: statistics.median(t['wall']) for name, t in times.items()}
    cpu = {name: statistics.median(t['cpu']) for name, t in times.items()}
    result = dict(args=vars(args), step_times_s=times, flops=flops,
                  peak_memory_bytes=memory, median_wall_s=wall, median_cpu_s=cpu,
                  speedup=wall['simmim'] / wall['greenmim'],
                  cpu_time_ratio=cpu['simmim'] / cpu['greenmim'])
    if memory:
        result['memory_ratio'] = memory['greenmim'] / memory['simmim']
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == '__main__':
    main()
