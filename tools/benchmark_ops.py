"""Benchmark of the core ops of greenmim_mm; prints one table per section.

    python tools/benchmark_ops.py                       # all sections
    python tools/benchmark_ops.py --sections grouping   # one section

Sections (a section is a function returning a :class:`Table`; add one to ``SECTIONS``):

- ``grouping``: plan time and padding waste of the optimal grouping for Swin-B at
  224 px, window 7, mask ratio 0.75, 32 px mask units, per-sample masks, per
  (stage, shift); against the published single-g plan (``g = min(ws^2, max w)``,
  one sample at a time) and padding every window to the largest count.
- ``attention``: group window attention on the visible tokens vs. the dense
  (stock ShiftWindowMSA math) window attention on the whole map, forward and
  forward + backward, per (stage, shift).
"""
import argparse
import os
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from greenmim_mm.ops.group_attention import group_window_attention
from greenmim_mm.ops.grouping import (GroupPlan, plan_groups, plan_window_groups,
                                      stage_token_coords)

# Swin-B: (stride, embed dims, heads) of the four stages; window 7 at 224 px.
SWIN_B_STAGES = ((4, 128, 4), (8, 256, 8), (16, 512, 16), (32, 1024, 32))


@dataclass
class Table:
    title: str
    header: Sequence[str]
    rows: List[Sequence[object]]
    notes: Sequence[str] = ()


def format_table(table: Table) -> str:
    """A Markdown table (readable as plain text too)."""
    cells = [[str(c) for c in table.header]] + [[_fmt(c) for c in r] for r in table.rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(table.header))]
    lines = [f'### {table.title}', '']
    for n, row in enumerate(cells):
        lines.append('| ' + ' | '.join(c.rjust(w) for c, w in zip(row, widths)) + ' |')
        if n == 0:
            lines.append('|' + '|'.join('-' * (w + 2) for w in widths) + '|')
    lines += [''] + [f'- {note}' for note in table.notes]
    return '\n'.join(lines)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f'{value:.2f}' if abs(value) < 1000 else f'{value:.0f}'
    return str(value)


def timings(fn: Callable[[], object], repeats: int) -> Tuple[List[float], List[float]]:
    """Wall and thread-CPU ms of ``repeats`` runs of ``fn`` (after one warm-up run)."""
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        t_wall, t_cpu = time.perf_counter(), time.thread_time()
        fn()
        cpu.append(1e3 * (time.thread_time() - t_cpu))
        wall.append(1e3 * (time.perf_counter() - t_wall))
    return wall, cpu


def timed(fn: Callable[[], object], repeats: int) -> Tuple[float, float]:
    """Median wall and thread-CPU milliseconds of ``fn`` over ``repeats`` runs."""
    wall, cpu = timings(fn, repeats)
    return statistics.median(wall), statistics.median(cpu)


def random_unit_mask(batch: int, grid: Tuple[int, int], ratio: float,
                     seed: int = 0) -> Tensor:
    """Per-sample random mask (B, Hu, Wu), True = masked, int(n * (1 - ratio)) visible."""
    gen = torch.Generator().manual_seed(seed)
    num_units = grid[0] * grid[1]
    ranks = torch.rand(batch, num_units, generator=gen).argsort(1)
    mask = torch.ones(batch, num_units, dtype=torch.bool)
    mask.scatter_(1, ranks[:, :int(num_units * (1 - ratio))], False)
    return mask.view(batch, *grid)


def stage_geometry(image: int, stride: int, window: int,
                   shifted: bool) -> Tuple[Tuple[int, int], int]:
    """Map size and effective shift (Swin: no shift when the map fits a window)."""
    hw = (image // stride, image // stride)
    shift = window // 2 if shifted and min(hw) > window else 0
    return hw, shift


# ----------------------------------------------------------------------------------
# Section: grouping
# ----------------------------------------------------------------------------------
def _window_counts(plan_tokens: Tensor, hw: Tuple[int, int], window: int,
                   shift: int) -> np.ndarray:
    """(B, windows per sample) visible counts of the attention windows."""
    plan = plan_window_groups(plan_tokens, hw, window, shift)
    token_window = plan.slot_window.view(-1)[plan.token_slot].numpy()
    batch = plan.batch_size
    per_sample = (-(-hw[0] // window) + (shift > 0)) * (-(-hw[1] // window) + (shift > 0))
    counts = np.bincount(token_window, minlength=batch * per_sample)
    return counts.reshape(batch, per_sample)


def published_waste(counts: np.ndarray, window: int) -> float:
    """Padding of the published plan, one sample at a time: g = min(ws^2, max w)."""
    padded = 0
    for sample in counts:
        g = min(window * window, int(sample.max()))
        plan: GroupPlan = plan_groups(sample, group_size=g)
        padded += plan.padding
    return padded / counts.sum()


def grouping_rows(batch: int = 128, image: int = 224, window: int = 7,
                  ratio: float = 0.75, repeats: int = 15) -> Table:
    torch.set_num_threads(1)
    mask = random_unit_mask(batch, (image // 32, image // 32), ratio)
    rows = []
    for stage, (stride, _, _) in enumerate(SWIN_B_STAGES, 1):
        for shifted in (False, True):
            hw, shift = stage_geometry(image, stride, window, shifted)
            if shifted and shift == 0:
                continue
            coords = stage_token_coords(mask, hw)
            coords_ms, _ = timed(lambda: stage_token_coords(mask, hw), repeats)
            wall, cpu = timings(
                lambda: plan_window_groups(coords, hw, window, shift), repeats)
            plan = plan_window_groups(coords, hw, window, shift)
            counts = _window_counts(coords, hw, window, shift)
            total = counts.sum()
            nonzero = counts[counts > 0]
            pad_all = (len(nonzero) * int(nonzero.max()) - total) / total
            rows.append((stage, f'{hw[0]}x{hw[1]}', shift, len(nonzero), total,
                         coords_ms, statistics.median(wall), statistics.median(cpu),
                         min(cpu), plan.group_size, plan.num_groups,
                         100 * plan.padding / total,
                         100 * published_waste(counts, window), 100 * pad_all))
    header = ('stage', 'map', 'shift', 'windows', 'tokens', 'coords ms', 'plan ms',
              'plan cpu ms', 'plan cpu min', 'g', 'groups', 'waste %',
              'published waste %', 'pad-to-max waste %')
    notes = (f'Swin-B, {image} px, window {window}, mask ratio {ratio}, 32 px units, '
             f'batch {batch} per-sample masks; one thread; {repeats} runs: median wall, '
             'median and min thread-CPU time (load average '
             f'{os.getloadavg()[0]:.1f} while measuring).',
             '"windows": non-empty attention windows (sample, window, shift region).',
             '"plan ms": plan_window_groups(coords) -> WindowGroupPlan; "coords ms": '
             'stage_token_coords(mask) (shared by all ops of the stage).',
             'waste = padded slots / visible tokens. published = g = min(ws^2, max w) '
             'and repeated max-fill knapsack per sample; pad-to-max = every window '
             'padded to the largest count.')
    return Table('Optimal grouping (Algorithm 1)', header, rows, notes)


# ----------------------------------------------------------------------------------
# Section: attention
# ----------------------------------------------------------------------------------
def relative_position_index(window: int) -> Tensor:
    """WindowMSA's relative_position_index buffer."""
    seq1 = torch.arange(0, (2 * window - 1) * window, 2 * window - 1)
    seq2 = torch.arange(0, window, 1)
    coords = (seq1[:, None] + seq2[None, :]).reshape(1, -1)
    return (coords + coords.T).flip(1).contiguous()


class WindowAttentionParams(nn.Module):
    """The parameters of mmpretrain's WindowMSA."""

    def __init__(self, dim: int, window: int, num_heads: int):
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(
            0.02 * torch.randn((2 * window - 1) ** 2, num_heads))
        self.register_buffer('relative_position_index', relative_position_index(window))


def dense_window_attention(x: Tensor, hw: Tuple[int, int], window: int, shift: int,
                           m: WindowAttentionParams) -> Tensor:
    """ShiftWindowMSA's forward on a whole ``(B, H*W, C)`` map (the stock math)."""
    batch, _, channels = x.shape
    height, width = hw
    x = x.view(batch, height, width, channels)
    pad_r, pad_b = (window - width % window) % window, (window - height % window) % window
    x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
    hp, wp = x.shape[1:3]
    if shift:
        x = torch.roll(x, (-shift, -shift), (1, 2))
    windows = x.view(batch, hp // window, window, wp // window, window, channels)
    windows = windows.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, channels)
    n = window * window
    q, k, v = m.qkv(windows).reshape(-1, n, 3, m.num_heads, channels // m.num_heads) \
        .permute(2, 0, 3, 1, 4)  # B*nW, nH, n, d each
    attn = (q * m.scale) @ k.transpose(-2, -1)
    bias = m.relative_position_bias_table[m.relative_position_index.view(-1)]
    attn = attn + bias.view(n, n, -1).permute(2, 0, 1).unsqueeze(0)
    if shift:
        region = _region_mask((hp, wp), window, shift)  # nW, n, n
        attn = (attn.view(-1, region.shape[0], m.num_heads, n, n)
                + region[None, :, None]).view(-1, m.num_heads, n, n)
    out = (attn.softmax(-1) @ v).transpose(1, 2).reshape(-1, n, channels)
    out = m.proj(out).view(batch, hp // window, wp // window, window, window, channels)
    out = out.permute(0, 1, 3, 2, 4, 5).reshape(batch, hp, wp, channels)
    if shift:
        out = torch.roll(out, (shift, shift), (1, 2))
    return out[:, :height, :width].reshape(batch, height * width, channels)


def _region_mask(hw_pad: Tuple[int, int], window: int, shift: int) -> Tensor:
    img = torch.zeros(hw_pad)
    cuts = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    for i, h in enumerate(cuts):
        for j, w in enumerate(cuts):
            img[h, w] = 3 * i + j
    wins = img.view(hw_pad[0] // window, window, hw_pad[1] // window, window)
    wins = wins.permute(0, 2, 1, 3).reshape(-1, window * window)
    diff = wins[:, None, :] - wins[:, :, None]
    return diff.ne(0).float() * -100.0


def attention_rows(batch: int = 16, image: int = 224, window: int = 7,
                   ratio: float = 0.75, repeats: int = 5,
                   threads: int = 1) -> Table:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    mask = random_unit_mask(batch, (image // 32, image // 32), ratio)
    rows = []
    for stage, (stride, dim, heads) in enumerate(SWIN_B_STAGES, 1):
        for shifted in (False, True):
            hw, shift = stage_geometry(image, stride, window, shifted)
            if shifted and shift == 0:
                continue
            m = WindowAttentionParams(dim, window, heads)
            coords = stage_token_coords(mask, hw)
            plan = plan_window_groups(coords, hw, window, shift)
            x_vis = torch.randn(batch, coords.shape[1], dim, requires_grad=True)
            x_all = torch.randn(batch, hw[0] * hw[1], dim, requires_grad=True)

            def grouped():
                return group_window_attention(
                    x_vis, plan, m.qkv, m.proj, m.num_heads, m.scale,
                    m.relative_position_bias_table, m.relative_position_index)

            def dense():
                return dense_window_attention(x_all, hw, window, shift, m)

            with torch.no_grad():
                _, g_fwd = timed(grouped, repeats)
                _, d_fwd = timed(dense, repeats)
            _, g_bwd = timed(lambda: grouped().sum().backward(), repeats)
            _, d_bwd = timed(lambda: dense().sum().backward(), repeats)
            rows.append((stage, f'{hw[0]}x{hw[1]}', shift, dim, heads, d_fwd, g_fwd,
                         d_fwd / g_fwd, d_bwd, g_bwd, d_bwd / g_bwd))
    header = ('stage', 'map', 'shift', 'C', 'heads', 'dense fwd ms', 'group fwd ms',
              'fwd speed-up', 'dense fwd+bwd ms', 'group fwd+bwd ms',
              'fwd+bwd speed-up')
    notes = (f'Swin-B window attention (qkv + attention + proj), {image} px, window '
             f'{window}, batch {batch}, mask ratio {ratio} for the group path '
             f'(per-sample masks); {threads} thread; median thread-CPU time of '
             f'{repeats} runs '
             f'(load average {os.getloadavg()[0]:.1f} while measuring).',
             'dense = ShiftWindowMSA math on the whole map; group = '
             "group_window_attention(backend='sdpa') on the visible tokens, plan built "
             'beforehand and its masks cached (as when a plan serves all blocks of a '
             'stage).')
    return Table('Group window attention vs dense window attention', header, rows, notes)


# A section maps a name to a function returning a Table.
SECTIONS: Dict[str, Callable[..., Table]] = {
    'grouping': grouping_rows,
    'attention': attention_rows,
}


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--sections', nargs='+', default=list(SECTIONS),
                        choices=list(SECTIONS))
    parser.add_argument('--batch', type=int, default=128, help='grouping batch')
    parser.add_argument('--attn-batch', type=int, default=16, help='attention batch')
    parser.add_argument('--repeats', type=int, default=25, help='grouping repeats')
    parser.add_argument('--attn-repeats', type=int, default=5)
    args = parser.parse_args(argv)
    kwargs = {'grouping': dict(batch=args.batch, repeats=args.repeats),
              'attention': dict(batch=args.attn_batch, repeats=args.attn_repeats)}
    for name in args.sections:
        print(format_table(SECTIONS[name](**kwargs.get(name, {}))), flush=True)
        print()


if __name__ == '__main__':
    main()
