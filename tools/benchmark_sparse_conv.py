"""Sparse vs dense convolution time for the conv layers of Twins-L under GreenMIM masking.

For each conv of Twins-L (ALTGVT-L: dims 128/256/512/1024, sr 8/4/2/1, 224 px input)
it times, forward and forward + backward:

- ``dense``: ``F.conv2d`` on the full, unmasked ``(B, C, H, W)`` map, the cost of the
  dense model;
- ``sparse``: the visible-only op of :mod:`greenmim_mm.ops.sparse_conv` on the
  ``(1 - mask_ratio)`` share of tokens, index building included;
- ``masked dense``: scatter the visible tokens to a zero-filled map, ``F.conv2d``,
  gather the visible outputs back (what the visible-only path would do without
  sparse convolutions).

Usage::

    python tools/benchmark_sparse_conv.py [--batch 8] [--mask-ratio 0.75] \
        [--repeats 10] [--device cpu] [--threads 1 --clock cpu] [--markdown]

``sparse_conv_table(...) -> list[dict]`` returns the rows for other tools
(``tools/benchmark_ops.py``); ``format_table(rows)`` renders them.
"""
import argparse
import statistics
import time
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from greenmim_mm.ops import masking
from greenmim_mm.ops.sparse_conv import block_conv2d, submanifold_conv2d

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


def _time_ms(fn: Callable[[], None], repeats: int, device: torch.device,
             clock: str = 'wall') -> float:
    """Median time of ``fn`` in milliseconds, after two warm-up calls.

    ``clock='cpu'`` reads the CPU time of this process instead of the wall clock: with
    ``torch.set_num_threads(1)`` it is the op's own compute time, little disturbed by
    other jobs on a shared machine.
    """
    timer = time.process_time if clock == 'cpu' else time.perf_counter

    def sync():
        if device.type == 'cuda':
            torch.cuda.synchronize(device)

    for _ in range(2):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        start = timer()
        fn()
        sync()
        times.append((timer() - start) * 1e3)
    return statistics.median(times)


def _random_mask(batch: int, mask_ratio: float, seed: int) -> Tensor:
    num_units = UNIT_GRID[0] * UNIT_GRID[1]
    num_visible = masking.num_visible_units(num_units, mask_ratio)
    gen = torch.Generator().manual_seed(seed)
    keep = torch.rand(batch, num_units, generator=gen).argsort(1)[:, :num_visible]
    mask = torch.ones(batch, num_units, dtype=torch.bool).scatter_(1, keep, False)
    return mask.view(batch, *UNIT_GRID)


def _fwd_bwd(fn: Callable[[], Tensor]) -> Callable[[], None]:
    def run():
        fn().sum().backward()
    return run


def sparse_conv_table(batch: int = 8, mask_ratio: float = 0.75, repeats: int = 10,
                      device: str = 'cpu', seed: int = 0, clock: str = 'wall',
                      convs: Sequence[tuple] = TWINS_L_CONVS) -> List[Dict]:
    """Time dense vs sparse convolution for each conv of ``convs``.

    Returns one dict per conv with keys ``op``, ``shape``, ``tokens`` (visible /
    total), ``dense_fwd_ms``, ``sparse_fwd_ms``, ``masked_dense_fwd_ms``,
    ``dense_fwd_bwd_ms``, ``sparse_fwd_bwd_ms``, ``masked_dense_fwd_bwd_ms``,
    ``fwd_speedup`` and ``fwd_bwd_speedup`` (dense time / sparse time).
    """
    dev = torch.device(device)
    mask = _random_mask(batch, mask_ratio, seed)
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for name, unit, c_in, c_out, kernel, kind in convs:
        hw = (UNIT_GRID[0] * unit, UNIT_GRID[1] * unit)
        coords = masking.visible_token_coords(mask, unit)  # CPU, as from the data pipeline
        num = coords.shape[1]
        groups = c_in if kind == 'submanifold' else 1
        weight = torch.randn(c_out, c_in // groups, kernel, kernel, generator=gen) * 0.05
        weight = weight.to(dev).requires_grad_()
        bias = torch.zeros(c_out, device=dev, requires_grad=True)
        x = torch.randn(batch, num, c_in, generator=gen).to(dev).requires_grad_()
        x_dense = torch.randn(batch, c_in, *hw, generator=gen).to(dev).requires_grad_()
        coords_dev = coords.to(dev)
        if kind == 'submanifold':
            conv_kwargs = dict(padding=kernel // 2, groups=groups)

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
            return masking.gather_tokens(out, coords_dev if kind == 'submanifold'
                                         else out_coords)

        row = dict(op=name,
                   shape=f'{batch}x{c_in}x{hw[0]}x{hw[1]} -> {c_out}, k={kernel}',
                   tokens=f'{num}/{hw[0] * hw[1]}')
        for label, fn in (('dense', dense), ('sparse', sparse), ('masked_dense', masked_dense)):
            with torch.no_grad():
                row[f'{label}_fwd_ms'] = _time_ms(fn, repeats, dev, clock)
            row[f'{label}_fwd_bwd_ms'] = _time_ms(_fwd_bwd(fn), repeats, dev, clock)
        row['fwd_speedup'] = row['dense_fwd_ms'] / row['sparse_fwd_ms']
        row['fwd_bwd_speedup'] = row['dense_fwd_bwd_ms'] / row['sparse_fwd_bwd_ms']
        rows.append(row)
    return rows


def format_table(rows: List[Dict], markdown: bool = False) -> str:
    """Render :func:`sparse_conv_table` rows as plain text or a Markdown table."""
    header = ['op', 'input -> Cout', 'visible', 'dense fwd', 'sparse fwd', 'masked-dense fwd',
              'speed-up fwd', 'dense f+b', 'sparse f+b', 'masked-dense f+b', 'speed-up f+b']
    body = [[r['op'], r['shape'], r['tokens'],
             f"{r['dense_fwd_ms']:.2f}", f"{r['sparse_fwd_ms']:.2f}",
             f"{r['masked_dense_fwd_ms']:.2f}", f"{r['fwd_speedup']:.2f}x",
             f"{r['dense_fwd_bwd_ms']:.2f}", f"{r['sparse_fwd_bwd_ms']:.2f}",
             f"{r['masked_dense_fwd_bwd_ms']:.2f}", f"{r['fwd_bwd_speedup']:.2f}x"]
            for r in rows]
    if markdown:
        lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
        lines += ['| ' + ' | '.join(cells) + ' |' for cells in body]
        return '\n'.join(lines)
    widths = [max(len(str(c)) for c in col) for col in zip(header, *body)]
    fmt = '  '.join(f'{{:<{w}}}' for w in widths)
    return '\n'.join([fmt.format(*header)] + [fmt.format(*cells) for cells in body])


def main(argv: Optional[Sequence[str]] = None) -> List[Dict]:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--mask-ratio', type=float, default=0.75)
    parser.add_argument('--repeats', type=int, default=10)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--threads', type=int, default=None,
                        help='torch CPU threads (default: torch\'s choice)')
    parser.add_argument('--clock', choices=('wall', 'cpu'), default='wall',
                        help='wall time, or process CPU time (use with --threads 1 on a '
                        'shared machine)')
    parser.add_argument('--markdown', action='store_true', help='print a Markdown table')
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = sparse_conv_table(args.batch, args.mask_ratio, args.repeats, args.device,
                             args.seed, args.clock)
    print(f'Sparse vs dense conv time (ms, {args.clock} clock, median of {args.repeats}), '
          f'Twins-L at 224 px, batch {args.batch}, mask ratio {args.mask_ratio}, '
          f'device {args.device}, torch {torch.__version__}, '
          f'{torch.get_num_threads()} thread(s)')
    print(format_table(rows, args.markdown))
    return rows


if __name__ == '__main__':
    main()
