"""The ``sparse-conv`` section: the conv layers of Twins-L under GreenMIM masking.

For each conv of Twins-L (ALTGVT-L: dims 128/256/512/1024, sr 8/4/2/1, 224 px) it
times, forward and forward + backward:

- ``dense``: ``F.conv2d`` on the full, unmasked ``(B, C, H, W)`` map (the dense model);
- ``sparse``: the visible-only op of :mod:`greenmim_mm.ops.sparse_conv` on the
  ``1 - mask_ratio`` share of the tokens, index building included;
- ``masked dense``: scatter the visible tokens to a zero-filled map, ``F.conv2d``,
  gather the visible outputs back (the visible-only path without sparse convs).

Times: median thread-CPU time on the CPU, median wall time (synchronised) on CUDA.
"""
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from greenmim_mm.ops import masking
from greenmim_mm.ops.sparse_conv import block_conv2d, submanifold_conv2d
from .measure import time_repeats

UNIT_GRID = (7, 7)  # 224 px / 32 px mask units
# (name, tokens per unit u, Cin, Cout, kernel, kind); Twins-L at 224 px.
TWINS_L_CONVS = (
    ('PEG 3x3 dw, stage 1', 8, 128, 128, 3, 'submanifold'),
    ('PEG 3x3 dw, stage 2', 4, 256, 256, 3, 'submanifold'),
    ('PEG 3x3 dw, stage 3', 2, 512, 512, 3, 'submanifold'),
    ('kv sub-sampling sr=8, stage 1', 8, 128, 128, 8, 'block'),
    ('kv sub-sampling sr=4, stage 2', 4, 256, 256, 4, 'block'),
    ('kv sub-sampling sr=2, stage 3', 2, 512, 512, 2, 'block'),
    ('patch embed 2x2 s2, 1->2', 8, 128, 256, 2, 'block'),
    ('patch embed 2x2 s2, 2->3', 4, 256, 512, 2, 'block'),
    ('patch embed 2x2 s2, 3->4', 2, 512, 1024, 2, 'block'),
)
KINDS = ('dense', 'sparse', 'masked dense')


def _fwd_bwd(fn: Callable[[], Tensor]) -> Callable[[], None]:
    return lambda: fn().sum().backward()


def sparse_conv_table(batch: int = 8, mask_ratio: float = 0.75, repeats: int = 10,
                      device: str = 'cpu', seed: int = 0,
                      convs=TWINS_L_CONVS) -> dict:
    dev = torch.device(device)
    clock = 'wall' if dev.type == 'cuda' else 'cpu'
    gen = torch.Generator().manual_seed(seed)
    num_visible = masking.num_visible_units(UNIT_GRID[0] * UNIT_GRID[1], mask_ratio)
    mask = masking.random_unit_masks(batch, UNIT_GRID, num_visible, gen)
    rows = []
    for name, unit, c_in, c_out, kernel, kind in convs:
        hw = (UNIT_GRID[0] * unit, UNIT_GRID[1] * unit)
        coords = masking.visible_token_coords(mask, unit)  # CPU, as from the pipeline
        coords_dev = coords.to(dev)
        groups = c_in if kind == 'submanifold' else 1
        weight = (torch.randn(c_out, c_in // groups, kernel, kernel, generator=gen) * 0.05
                  ).to(dev).requires_grad_()
        bias = torch.zeros(c_out, device=dev, requires_grad=True)
        x = torch.randn(batch, coords.shape[1], c_in, generator=gen).to(dev).requires_grad_()
        x_dense = torch.randn(batch, c_in, *hw, generator=gen).to(dev).requires_grad_()
        if kind == 'submanifold':
            conv_kwargs = dict(padding=kernel // 2, groups=groups)
            out_coords = coords_dev

            def sparse() -> Tensor:
                return submanifold_conv2d(x, coords, hw, weight, bias, groups=groups)
        else:
            conv_kwargs = dict(stride=kernel)
            out_coords = block_conv2d(x, coords, hw, weight, bias)[1].to(dev)

            def sparse() -> Tensor:
                return block_conv2d(x, coords, hw, weight, bias)[0]

        def dense() -> Tensor:
            return F.conv2d(x_dense, weight, bias, **conv_kwargs)

        def masked_dense() -> Tensor:
            zero_filled = masking.scatter_tokens(x, coords_dev, hw).permute(0, 3, 1, 2)
            out = F.conv2d(zero_filled, weight, bias, **conv_kwargs).permute(0, 2, 3, 1)
            return masking.gather_tokens(out, out_coords)

        ms = {}
        for label, fn in zip(KINDS, (dense, sparse, masked_dense)):
            with torch.no_grad():
                ms[label, 'fwd'] = time_repeats(fn, repeats, dev, 2).median_ms(clock)
            ms[label, 'bwd'] = time_repeats(_fwd_bwd(fn), repeats, dev, 2).median_ms(clock)
        rows.append([name, f'{batch}x{c_in}x{hw[0]}x{hw[1]} -> {c_out}, k={kernel}',
                     f'{coords.shape[1]}/{hw[0] * hw[1]}']
                    + [ms[k, 'fwd'] for k in KINDS]
                    + [f"{ms['dense', 'fwd'] / ms['sparse', 'fwd']:.2f}x"]
                    + [ms[k, 'bwd'] for k in KINDS]
                    + [f"{ms['dense', 'bwd'] / ms['sparse', 'bwd']:.2f}x"])
    header = ['op', 'input -> Cout', 'visible', 'dense fwd', 'sparse fwd',
              'masked-dense fwd', 'speed-up fwd', 'dense f+b', 'sparse f+b',
              'masked-dense f+b', 'speed-up f+b']
    notes = (f'Milliseconds, median {"wall" if clock == "wall" else "thread-CPU"} time of '
             f'{repeats} after 2 warm-up runs; Twins-L at 224 px, batch {batch}, mask '
             f'ratio {mask_ratio}, {device}, {torch.get_num_threads()} thread(s), torch '
             f'{torch.__version__}. speed-up = dense / sparse.', )
    return dict(title='Sparse vs dense convolution', header=header, rows=rows,
                notes=notes)
