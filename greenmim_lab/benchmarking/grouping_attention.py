"""The ``ops`` section: the grouping plan and group window attention, Swin-B stages.

- :func:`grouping_table`: per (stage, shift), the plan the training step uses (static
  shapes: a fixed group size and number of groups, built in the data loader) with its
  time and padding, next to Algorithm 1's optimum for the same masks (search over g,
  shapes vary with the mask), the published single-g plan (``g = min(ws^2, max w)``,
  one sample at a time) and padding every window to the largest count.
- :func:`attention_table`: group window attention on the visible tokens against
  mmpretrain's ``ShiftWindowMSA`` (the dense model's attention) on the whole map,
  forward and forward + backward, per (stage, shift).

Times: median thread-CPU time on the CPU, median wall time (synchronised) on CUDA.
"""
import os
from typing import Iterator, Tuple

import numpy as np
import torch
from mmpretrain.models.utils import ShiftWindowMSA

from greenmim_mm.models.backbones.layers.swin import effective_shift
from greenmim_mm.ops.group_attention import attention_layout, group_window_attention
from greenmim_mm.ops.grouping import plan_groups
from greenmim_mm.ops.masking import num_visible_units, random_unit_masks, stage_token_coords
from greenmim_mm.ops.visible_plan import static_group_shape
from greenmim_mm.ops.window_plan import plan_window_groups
from .measure import time_repeats

# Swin-B: (stride, embed dims, heads) of the four stages.
SWIN_B_STAGES = ((4, 128, 4), (8, 256, 8), (16, 512, 16), (32, 1024, 32))


def unit_masks(batch: int, image: int, ratio: float, seed: int = 0) -> torch.Tensor:
    grid = (image // 32, image // 32)
    return random_unit_masks(batch, grid, num_visible_units(grid[0] * grid[1], ratio),
                             torch.Generator().manual_seed(seed))


def swin_stages(image: int, window: int) -> Iterator[Tuple[int, Tuple[int, int], int,
                                                           ShiftWindowMSA]]:
    """``(stage, map hw, effective shift, ShiftWindowMSA)`` per (stage, shift)."""
    for stage, (stride, dim, heads) in enumerate(SWIN_B_STAGES, 1):
        hw = (image // stride, image // stride)
        for shift in (0, window // 2):
            attn = ShiftWindowMSA(dim, heads, window, shift)
            if shift and effective_shift(attn, hw) == 0:
                continue  # Swin does not shift a map of one window
            yield stage, hw, effective_shift(attn, hw), attn


def _window_counts(coords: torch.Tensor, hw: Tuple[int, int], window: int,
                   shift: int) -> np.ndarray:
    """``(B, windows per sample)`` visible counts of the attention windows."""
    plan = plan_window_groups(coords, hw, window, shift)
    token_window = plan.slot_window.view(-1)[plan.token_slot].numpy()
    per_sample = (-(-hw[0] // window) + (shift > 0)) * (-(-hw[1] // window) + (shift > 0))
    counts = np.bincount(token_window, minlength=plan.batch_size * per_sample)
    return counts.reshape(plan.batch_size, per_sample)


def published_waste(counts: np.ndarray, window: int) -> float:
    """Padding of the published plan, one sample at a time: g = min(ws^2, max w)."""
    padded = sum(plan_groups(sample, group_size=min(window * window, int(sample.max())))
                 .padding for sample in counts)
    return padded / counts.sum()


def grouping_table(batch: int = 128, image: int = 224, window: int = 7,
                   ratio: float = 0.75, repeats: int = 25) -> dict:
    device = torch.device('cpu')  # plans are made on the CPU
    mask = unit_masks(batch, image, ratio)
    rows = []
    grid = tuple(mask.shape[1:])
    num_visible = int((~mask[0]).sum())
    for stage, hw, shift, _ in swin_stages(image, window):
        coords = stage_token_coords(mask, hw)
        unit = hw[0] // grid[0]
        g, groups = static_group_shape(grid, unit, hw, (window, shift), num_visible,
                                       batch)

        def static_plan():
            return plan_window_groups(coords, hw, window, shift, group_size=g,
                                      num_groups=groups)
        plan_t = time_repeats(static_plan, repeats, device)
        optimal = plan_window_groups(coords, hw, window, shift)
        used = plan_window_groups(coords, hw, window, shift, group_size=g)
        counts = _window_counts(coords, hw, window, shift)
        total, nonzero = counts.sum(), counts[counts > 0]
        pad_all = (len(nonzero) * int(nonzero.max()) - total) / total
        rows.append((stage, f'{hw[0]}x{hw[1]}', shift, len(nonzero), total,
                     plan_t.median_ms(), plan_t.median_ms('cpu'), g, groups,
                     100 * (g * used.num_groups - total) / total,
                     100 * (g * groups - total) / total, optimal.group_size,
                     optimal.num_groups, 100 * optimal.padding / total,
                     100 * published_waste(counts, window), 100 * pad_all))
    header = ('stage', 'map', 'shift', 'windows', 'tokens', 'plan ms', 'plan cpu ms',
              'static g', 'static groups', 'fill waste %', 'static waste %',
              'optimal g', 'optimal groups', 'optimal waste %', 'published waste %',
              'pad-to-max waste %')
    notes = (f'Swin-B, {image} px, window {window}, mask ratio {ratio}, 32 px units, batch '
             f'{batch}, per-sample masks; {torch.get_num_threads()} thread(s); {repeats} '
             'runs: median wall and thread-CPU time (load average '
             f'{os.getloadavg()[0]:.1f}).',
             '"windows": non-empty attention windows (sample, window, shift region). '
             '"plan": the static plan of the training step (what greenmim_collate '
             'builds in the loader), g = the largest count any mask can put in a window, '
             'groups = ceil(T / g) * 1.02 + 1 (capped by the windows that can be '
             'non-empty); "fill waste": padding of the groups the masks fill, "static '
             'waste": with the unused groups too (what the step computes).',
             '"optimal": Algorithm 1 for these masks (search over g; its shapes vary '
             'with the mask). waste = padded slots / visible tokens. published = '
             'g = min(ws^2, max w) and repeated max-fill knapsack per sample; '
             'pad-to-max = every window padded to the largest count.')
    return dict(title='Grouping plan: static (the training step) vs Algorithm 1',
                header=header, rows=rows,
                notes=notes)


def attention_table(batch: int = 16, image: int = 224, window: int = 7,
                    ratio: float = 0.75, repeats: int = 5, device: str = 'cpu') -> dict:
    dev = torch.device(device)
    clock = 'wall' if dev.type == 'cuda' else 'cpu'
    torch.manual_seed(0)
    mask = unit_masks(batch, image, ratio)
    rows = []
    for stage, hw, shift, attn in swin_stages(image, window):
        attn = attn.to(dev)
        w_msa = attn.w_msa
        coords = stage_token_coords(mask, hw)
        g, groups = static_group_shape(tuple(mask.shape[1:]), hw[0] // mask.shape[1],
                                       hw, (window, shift), int((~mask[0]).sum()), batch)
        plan = plan_window_groups(coords, hw, window, shift, group_size=g,
                                  num_groups=groups).to(dev)
        layout = attention_layout(plan)  # once per (stage, shift), as in the model
        dim = w_msa.embed_dims
        x_vis = torch.randn(batch, coords.shape[1], dim, device=dev, requires_grad=True)
        x_all = torch.randn(batch, hw[0] * hw[1], dim, device=dev, requires_grad=True)

        def grouped():
            return group_window_attention(
                x_vis, plan, w_msa.qkv, w_msa.proj, w_msa.num_heads, w_msa.scale,
                w_msa.relative_position_bias_table, w_msa.relative_position_index,
                layout=layout)

        def dense():
            return attn(x_all, hw)

        ms = {}
        for name, fn in (('group', grouped), ('dense', dense)):
            with torch.no_grad():
                ms[name, 'fwd'] = time_repeats(fn, repeats, dev).median_ms(clock)
            ms[name, 'bwd'] = time_repeats(lambda: fn().sum().backward(), repeats,
                                           dev).median_ms(clock)
        rows.append((stage, f'{hw[0]}x{hw[1]}', shift, dim, w_msa.num_heads,
                     ms['dense', 'fwd'], ms['group', 'fwd'],
                     ms['dense', 'fwd'] / ms['group', 'fwd'], ms['dense', 'bwd'],
                     ms['group', 'bwd'], ms['dense', 'bwd'] / ms['group', 'bwd']))
    header = ('stage', 'map', 'shift', 'C', 'heads', 'dense fwd ms', 'group fwd ms',
              'fwd speed-up', 'dense fwd+bwd ms', 'group fwd+bwd ms', 'fwd+bwd speed-up')
    notes = (f'Swin-B window attention (qkv + attention + proj), {image} px, window '
             f'{window}, batch {batch}, mask ratio {ratio} for the group path (per-sample '
             f'masks); {device}, {torch.get_num_threads()} thread(s); median '
             f'{"wall" if clock == "wall" else "thread-CPU"} time of {repeats} runs '
             f'(load average {os.getloadavg()[0]:.1f}).',
             "dense = mmpretrain's ShiftWindowMSA on the whole map; group = "
             "group_window_attention(backend='sdpa') on the visible tokens with the "
             "training step's static plan, built beforehand, its attention layout made "
             'once (as when a plan serves all blocks of a stage).')
    return dict(title='Group window attention vs dense window attention', header=header,
                rows=rows, notes=notes)
