"""The training-step benchmark: models of a comparison timed side by side.

:func:`run_side_by_side` builds every variant at one batch size, counts the FLOPs of a
step, warms each up, then times ``steps`` steps of each, alternating the models step
by step (and the order every step) so that all see the same machine state. On CUDA it
then profiles a few steps of each to get how busy the GPU was. Peak memory comes from
a fresh process per model (:mod:`.memory`).

:func:`run_steps` is the section: one side-by-side run per batch size; at batch
``'max'`` every model runs alone at the largest batch that fits on the GPU.
"""
import math
import warnings
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Union

import torch

from . import memory
from .comparisons import Variant, describe
from .measure import (Timing, count_flops, gpu_kernel_seconds, markdown_table,
                      time_call)
from .steps import StepOptions, TrainStep, make_batches

NUM_BATCHES = 3  # distinct batches (masks) each model cycles through
PROFILED_STEPS = 3  # steps profiled on CUDA for the GPU-busy fraction


@dataclass
class StepResult:
    """One model at one batch size."""
    name: str
    batch_size: int
    group: str  # the batch size asked for: a number or 'max'
    timing: Timing = field(default_factory=Timing)
    flops: Optional[int] = None
    peak_bytes: Optional[int] = None
    gpu_busy: Optional[float] = None  # GPU kernel time / wall time per step

    @property
    def images_per_s(self) -> float:
        return self.batch_size / (self.timing.median_ms() / 1e3)


def run_side_by_side(variants: Sequence[Variant], batch_size: int,
                     options: StepOptions, steps: int, warmup: int,
                     measure_memory: bool = True, memory_steps: int = 2,
                     group: str = '') -> List[StepResult]:
    """Time the training steps of ``variants`` at ``batch_size``, alternating them."""
    device = torch.device(options.device)
    batches = {v.name: make_batches(v.cfg, batch_size, NUM_BATCHES, options)
               for v in variants}
    stepper = {v.name: TrainStep(v.cfg, options) for v in variants}
    results = {v.name: StepResult(v.name, batch_size, group or str(batch_size))
               for v in variants}
    for name, step in stepper.items():  # counted eagerly, before any compile
        try:
            results[name].flops = count_flops(lambda: step(batches[name][0]))
        except Exception as error:  # noqa: BLE001  (e.g. FlexAttention's operator)
            warnings.warn(f'{name}: FLOPs not counted: {type(error).__name__}: {error}')
        step.compile()
    names = list(stepper)
    for i in range(warmup):
        for name in names:
            stepper[name](batches[name][i % NUM_BATCHES])
    for i in range(steps):
        for name in (names if i % 2 == 0 else names[::-1]):
            batch = batches[name][(warmup + i) % NUM_BATCHES]
            loss, wall, cpu = time_call(lambda: stepper[name](batch), device)
            results[name].timing.add(wall, cpu)
            if not math.isfinite(float(loss)):
                raise RuntimeError(f'{name}: the loss is {float(loss)} at timed step {i}.')
    if device.type == 'cuda':
        for name, step in stepper.items():
            kernel_s = gpu_kernel_seconds(lambda: step(batches[name][0]), PROFILED_STEPS)
            results[name].gpu_busy = kernel_s / (results[name].timing.median_ms() / 1e3)
    del stepper, batches
    if device.type == 'cuda':
        torch.cuda.empty_cache()
    if measure_memory:
        for v in variants:
            results[v.name].peak_bytes = memory.peak_bytes(v.cfg, batch_size, options,
                                                           memory_steps)
    return list(results.values())


def max_batch(variant: Variant, options: StepOptions, memory_steps: int = 2) -> int:
    """The largest batch of ``variant`` that trains on the GPU, eager (probes in fresh
    processes; compiled steps usually need less memory, not more)."""
    eager = StepOptions(**{**options.__dict__, 'compile': False})
    return memory.largest_batch(
        lambda b: memory.peak_bytes(variant.cfg, b, eager, memory_steps) is not None)


def run_steps(variants: Sequence[Variant], batch_sizes: Sequence[Union[int, str]],
              options: StepOptions, steps: int, warmup: int,
              measure_memory: bool = True, memory_steps: int = 2) -> List[StepResult]:
    """The section: :func:`run_side_by_side` for each batch size (``'max'``: each
    model alone at its own largest batch)."""
    results = []
    for batch_size in batch_sizes:
        if batch_size != 'max':
            results += run_side_by_side(variants, int(batch_size), options, steps,
                                        warmup, measure_memory, memory_steps)
            continue
        for variant in variants:
            largest = max_batch(variant, options, memory_steps)
            results += run_side_by_side([variant], largest, options, steps, warmup,
                                        measure_memory, memory_steps, group='max')
    return results


def _ratio(value: Optional[float], baseline: Optional[float], fmt: str) -> str:
    return format(value / baseline, fmt) if value and baseline else 'n/a'


STEP_HEADER = ['batch', 'model', 'step time (median)', 'min - max', 'thread CPU time',
               'images/s', 'GFLOPs / step', 'peak memory', 'GPU busy', 'speed-up vs {}',
               'memory vs {}']


def step_rows(results: Sequence[StepResult], baseline: str) -> List[list]:
    """Rows of :data:`STEP_HEADER`, with ratios against ``baseline`` in the same batch
    group; by images/s, so that 'max' rows (each model at its own batch) compare
    throughput."""
    base = {r.group: r for r in results if r.name == baseline}
    rows = []
    for r in results:
        b = base.get(r.group)
        rows.append([
            r.group if r.group == str(r.batch_size) else f'{r.group} ({r.batch_size})',
            r.name, f'{r.timing.median_ms():.1f} ms',
            f'{min(r.timing.wall) * 1e3:.1f} - {max(r.timing.wall) * 1e3:.1f} ms',
            f"{r.timing.median_ms('cpu'):.1f} ms", f'{r.images_per_s:.1f}',
            f'{r.flops / 1e9:.1f}' if r.flops else 'n/a',
            f'{r.peak_bytes / 2**20:.0f} MiB' if r.peak_bytes else 'n/a',
            f'{r.gpu_busy:.0%}' if r.gpu_busy is not None else 'n/a',
            _ratio(r.images_per_s, b and b.images_per_s, '.2f') + 'x',
            _ratio(r.peak_bytes, b and b.peak_bytes, '.0%')])
    return rows


def steps_table(results: Sequence[StepResult], variants: Sequence[Variant],
                options: StepOptions, title: str = '') -> str:
    """The section's markdown table (no GPU-busy column on the CPU) and its notes."""
    on_cuda = options.device == 'cuda'
    baseline = variants[-1].name
    keep = [i for i, name in enumerate(STEP_HEADER) if on_cuda or name != 'GPU busy']
    header = [STEP_HEADER[i].format(baseline) for i in keep]
    rows = [[row[i] for i in keep] for row in step_rows(results, baseline)]
    precision = f'autocast {options.amp_dtype}' if options.amp else 'fp32'
    device = (torch.cuda.get_device_name(0) if on_cuda
              else f'CPU ({torch.get_num_threads()} threads)')
    notes = [f'{device}, {precision}, {"compiled" if options.compile else "eager"}, '
             f'{"fused " if options.fused_adamw else ""}AdamW, torch {torch.__version__}.']
    notes += [describe(v) for v in variants]
    notes.append(
        'Step time: median wall time of alternating `model.train_step` calls (batches '
        'made and collated beforehand, as DataLoader workers would'
        + (', CUDA synchronised' if on_cuda else '') + '); thread CPU time: CPU time '
        'of the training thread. GFLOPs: forward + backward (torch.utils.flop_counter). '
        'Peak memory: ' + ('torch.cuda.max_memory_allocated' if on_cuda else
                           'peak RSS above the size before the model was built')
        + ' of a fresh process training that model alone.'
        + (' GPU busy: GPU kernel time per step (torch.profiler) / step time.'
           if on_cuda else ''))
    return markdown_table(header, rows, title, notes)
