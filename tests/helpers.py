"""Helpers shared by the tests (importable from every test module: pytest puts
``tests/`` on ``sys.path`` for its ``conftest.py``).

- :func:`random_masks`: the package's one random unit-mask maker with a seed.
- :func:`tiny_greenmim`: a GreenMIM model (decoder of 32 channels, normalised-pixel
  loss) around a tiny backbone config, seeded.
- :func:`layout_coords`, :func:`gather_at`, :func:`scatter_at`: the token layout of
  the visible-only path (unit-major, Z order inside a unit) and token placement,
  written here from their definitions, independent of ``greenmim_mm.ops.masking``,
  so references built on them do not reuse the layout code they check.
"""
from functools import lru_cache
from typing import List, Sequence, Tuple

import torch
from torch import Tensor

from greenmim_mm.ops.masking import random_unit_masks


def random_masks(batch: int, grid: Sequence[int], num_visible: int,
                 seed: int = 0) -> Tensor:
    """Random per-sample unit masks ``(B, Hu, Wu)``, True = masked, ``num_visible``
    visible each, reproducible from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    return random_unit_masks(batch, tuple(grid), num_visible, generator=generator)


@lru_cache(maxsize=None)
def z_order(unit: int) -> Tuple[Tuple[int, int], ...]:
    """``(row, col)`` of the cells of a ``unit x unit`` block in Z order, recursively:
    the four quadrants top-left, top-right, bottom-left, bottom-right, each in Z
    order (``unit`` a power of 2)."""
    if unit == 1:
        return ((0, 0), )
    half = unit // 2
    return tuple((qr * half + r, qc * half + c)
                 for qr, qc in ((0, 0), (0, 1), (1, 0), (1, 1))
                 for r, c in z_order(half))


def layout_coords(mask: Tensor, unit: int) -> Tensor:
    """``(B, N, 2)`` coordinates of the visible tokens at ``unit x unit`` tokens per
    mask unit, in the documented layout: visible units in row-major order, the tokens
    of a unit in Z order."""
    coords: List[List[Tuple[int, int]]] = []
    for sample in mask.tolist():
        coords.append([(ur * unit + r, uc * unit + c)
                       for ur, row in enumerate(sample)
                       for uc, masked in enumerate(row) if not masked
                       for r, c in z_order(unit)])
    return torch.tensor(coords, dtype=torch.long).view(mask.shape[0], -1, 2)


def gather_at(dense: Tensor, coords: Tensor) -> Tensor:
    """Tokens ``(B, N, C)`` of a ``(B, H, W, C)`` map at ``coords`` ``(B, N, 2)``."""
    batch = torch.arange(dense.shape[0])[:, None]
    return dense[batch, coords[..., 0], coords[..., 1]]


def scatter_at(tokens: Tensor, coords: Tensor, hw: Sequence[int]) -> Tensor:
    """A zero ``(B, H, W, C)`` map holding ``tokens`` ``(B, N, C)`` at ``coords``."""
    batch = torch.arange(tokens.shape[0])[:, None].expand(coords.shape[:2])
    dense = tokens.new_zeros(tokens.shape[0], *hw, tokens.shape[2])
    return dense.index_put((batch, coords[..., 0], coords[..., 1]), tokens)


def visible_layout_tokens(dense: Tensor, mask: Tensor) -> Tensor:
    """The visible tokens of a ``(B, H, W, C)`` map in the documented layout (the
    mask grid divides the map into square units)."""
    return gather_at(dense, layout_coords(mask, dense.shape[1] // mask.shape[1]))


def run_log(work_dir: str) -> str:
    """The log files of the runs in ``work_dir`` (``<timestamp>/<timestamp>.log``, where
    mmengine writes everything, the reports the terminal leaves out included), oldest
    first, as one text."""
    import glob
    import os.path as osp

    logs = sorted(glob.glob(osp.join(work_dir, '*', '*.log')))
    assert logs, f'no log file under {work_dir}'
    texts = []
    for log in logs:
        with open(log) as f:
            texts.append(f.read())
    return ''.join(texts)


def tiny_greenmim(backbone: dict, seed: int = 0, mask_mode: str = 'sample',
                  embed_dim: int = 128):
    """A GreenMIM model with a light decoder around ``backbone`` (its last stage is
    ``embed_dim`` wide), weights drawn after ``torch.manual_seed(seed)``; build it in
    mmpretrain's registry scope."""
    from mmpretrain.registry import MODELS
    torch.manual_seed(seed)
    model = MODELS.build(dict(
        type='GreenMIM', backbone=backbone, mask_mode=mask_mode,
        data_preprocessor=dict(mean=[123.675, 116.28, 103.53],
                               std=[58.395, 57.12, 57.375], to_rgb=True),
        neck=dict(type='GreenMIMDecoder', patch_size=32, embed_dim=embed_dim,
                  decoder_embed_dim=32, decoder_num_heads=2),
        head=dict(type='MAEPretrainHead', norm_pix=True, patch_size=32,
                  loss=dict(type='PixelReconstructionLoss', criterion='L2'))))
    model.init_weights()
    return model
