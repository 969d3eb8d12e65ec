"""The measuring instruments every benchmark section shares: one timer, one FLOP
counter, one GPU-busy meter and one markdown table writer.

- :func:`time_call` times a call in wall time and in CPU time of the calling thread
  (``time.thread_time``: with one torch thread, the op's own work, little disturbed by
  other jobs on a shared machine); on CUDA the device is synchronised before and after,
  so the wall time covers the GPU work the call queued.
- :func:`count_flops`: ``torch.utils.flop_counter`` over one call (forward + backward
  when the call trains).
- :func:`gpu_kernel_seconds`: the time the GPU spent in kernels during a call, from
  ``torch.profiler`` (the union of the kernels' intervals, so overlapping kernels of
  several streams count once). Divided by the wall time of the call it is how busy the
  GPU was; a host-bound step leaves it well below 1.
"""
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, List, Sequence, Tuple, TypeVar

import torch

T = TypeVar('T')


def synchronize(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], T], device: torch.device) -> Tuple[T, float, float]:
    """``(fn(), wall seconds, thread-CPU seconds)``, synchronised on CUDA."""
    synchronize(device)
    wall, cpu = time.perf_counter(), time.thread_time()
    out = fn()
    synchronize(device)
    return out, time.perf_counter() - wall, time.thread_time() - cpu


@dataclass
class Timing:
    """Seconds per call: wall time and CPU time of the calling thread."""
    wall: List[float] = field(default_factory=list)
    cpu: List[float] = field(default_factory=list)

    def add(self, wall: float, cpu: float) -> None:
        self.wall.append(wall)
        self.cpu.append(cpu)

    def median_ms(self, clock: str = 'wall') -> float:
        return 1e3 * statistics.median(self.wall if clock == 'wall' else self.cpu)


def time_repeats(fn: Callable[[], object], repeats: int, device: torch.device,
                 warmup: int = 1) -> Timing:
    """:func:`time_call` ``repeats`` times after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    timing = Timing()
    for _ in range(repeats):
        _, wall, cpu = time_call(fn, device)
        timing.add(wall, cpu)
    return timing


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call of ``fn`` (matmuls, convolutions, attention)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops()


def busy_seconds(intervals: Iterable[Tuple[float, float]]) -> float:
    """Length of the union of ``(start, end)`` intervals."""
    total, end = 0.0, float('-inf')
    for start, stop in sorted(intervals):
        if stop > end:
            total += stop - max(start, end)
            end = stop
    return total


def gpu_kernel_seconds(fn: Callable[[], object], calls: int) -> float:
    """Seconds the GPU spent in kernels (and copies) per call of ``fn``, profiled."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    intervals = [(event.time_range.start, event.time_range.end)
                 for event in prof.events() if event.device_type == DeviceType.CUDA]
    return 1e-6 * busy_seconds(intervals) / calls  # the profiler counts microseconds


def format_cell(value: object) -> str:
    if isinstance(value, float):
        return f'{value:.2f}' if abs(value) < 1000 else f'{value:.0f}'
    return str(value)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]],
                   title: str = '', notes: Sequence[str] = ()) -> str:
    """A markdown table (floats with two decimals), optionally with a title and notes."""
    lines = [f'### {title}', ''] if title else []
    lines.append('| ' + ' | '.join(header) + ' |')
    lines.append('|' + '---|' * len(header))
    lines += ['| ' + ' | '.join(format_cell(c) for c in row) + ' |' for row in rows]
    if notes:
        lines += [''] + [f'- {note}' for note in notes]
    return '\n'.join(lines)
