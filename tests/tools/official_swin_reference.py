"""The published GreenMIM Swin pretraining loss, as the published code computes it at
two commits, for the converter's exactness tests (written here from that code; it
shares nothing with the package). Like the published code it works on the visible
tokens only, in the published token order, with their coordinates.

- ``'4beb99e'`` (2022-05-27, ``models_swin.py``: the paper's code, the released
  checkpoints). Tokens in mask-unit-major order (units row-major, each unit's tokens
  row-major). ``PatchMerging`` views each visible unit's ``r x r`` tokens as
  ``(r/2, 2, r/2, 2)`` blocks and concatenates every 2x2 block row-first
  (``(0, 0), (0, 1), (1, 0), (1, 1)``). The coordinates of the merged tokens are taken
  from the row-major coordinates of the half-size map with the *unit-major* visibility
  mask: wrong (scrambled) in every stage that has more than one token per unit, i.e.
  stages 1 and 2 of 4. ``corrected_coords=True`` uses the right coordinates instead
  (what the tests compare the converted model with when those stages have blocks).
  The published code derives the tokens per unit from the map size as ``H // 7`` or
  ``H // 6`` (7x7 or 6x6 unit grids only, 224 or 192 px).
- ``'b981012'`` (2023-01-16, ``modeling/green_swin_models.py``: the current code).
  Tokens in row-major order; ``PatchMerging`` gathers each visible 2x2 block by its
  coordinates, in row-major block order, and concatenates it column-first like Swin
  (``(0, 0), (1, 0), (0, 1), (1, 1)``); the merged coordinates are right.

Window attention at both commits (``GroupingModule`` + ``WindowAttention``): the window
of a token is ``(coord + (ws - shift) % ws) // ws`` (Swin's shifted windows unrolled);
a window not smaller than the map shrinks to it and never shifts; attention adds the
relative position bias inside a window and ``-100`` between windows. The published
code packs windows into groups ("grouping" mode) when a stage has more than
``2 * ws**2`` visible tokens, and otherwise attends over all of them with that mask
("masking" mode); this reference always takes the masking mode: the two differ only by
terms ``exp(-100)`` relative.
"""
from typing import Tuple

import torch
import torch.nn.functional as F
from official_mae_reference import (decoder, linear, ln, mlp, pixel_loss, random_masking,
                                    self_attention, token_coords, token_mask)
from official_models import PublishedSwin
from torch import Tensor

COMMITS = ('4beb99e', 'b981012')


def unit_major(values: Tensor, side: int, tokens_per_unit: int) -> Tensor:
    """Rows ``(side*side, ...)`` of a row-major map re-ordered unit by unit (units of
    ``tokens_per_unit`` tokens a side, row-major; row-major inside a unit)."""
    grid, r = side // tokens_per_unit, tokens_per_unit
    order = torch.arange(side * side).view(grid, r, grid, r).permute(0, 2, 1, 3)
    return values[order.reshape(-1)]


def window_attention(x: Tensor, coords: Tensor, sd: dict, name: str, heads: int,
                     window: int, shift: int) -> Tensor:
    """Published window attention of visible tokens ``(B, N, C)`` at ``coords``."""
    group = (coords + (window - shift) % window) // window  # N, 2
    same = (group[:, None] == group[None]).all(-1)  # N, N
    rel = coords[:, None] - coords[None] + window - 1  # N, N, 2
    index = torch.where(same, rel[..., 0] * (2 * window - 1) + rel[..., 1], 0)
    bias = sd[f'{name}.relative_position_bias_table'][index] * same[..., None]  # N, N, h
    additive = bias.permute(2, 0, 1) + torch.where(same, 0.0, -100.0)  # h, N, N
    return self_attention(x, sd, name, heads, additive)


def merge_2022(x: Tensor, visible: Tensor, side: int, tokens_per_unit: int,
               corrected_coords: bool):
    """4beb99e's ``PatchMerging`` concat and its new ``(visible, coords)``.

    ``x``: ``(B, N, C)`` visible tokens in unit-major order; ``visible``: ``(side**2,)``
    bool over the whole map in unit-major order.
    """
    r = tokens_per_unit
    if r != (side // 7 if side % 7 == 0 else side // 6):
        raise ValueError('the 2022 code only runs 7x7 or 6x6 unit grids (224/192 px)')
    batch, _, dims = x.shape
    x = x.reshape(batch, -1, r // 2, 2, r // 2, 2, dims)  # B, unit, a, kh, b, kw, C
    x = x.permute(0, 1, 2, 4, 3, 5, 6).reshape(batch, -1, 4 * dims)  # row-first 2x2
    visible = visible.view(-1, r // 2, 2, r // 2, 2).any(4).any(2).reshape(-1)
    half = side // 2
    if corrected_coords:
        coords = unit_major(token_coords(half, half), half, r // 2)[visible]
    else:  # the published code: row-major coordinates under a unit-major mask
        coords = token_coords(half, half)[visible]
    return x, visible, coords


def merge_2023(x: Tensor, coords: Tensor, side: int):
    """b981012's ``PatchMerging`` concat of row-major visible tokens at ``coords``."""
    block = coords // 2
    slot = (coords[:, 1] % 2) * 2 + coords[:, 0] % 2  # (0,0) (1,0) (0,1) (1,1)
    order = torch.argsort((block[:, 0] * (side // 2) + block[:, 1]) * 4 + slot)
    x = x[:, order].reshape(x.shape[0], -1, 4 * x.shape[2])
    return x, block[order[::4]]


def swin_encoder(sd: dict, arch: PublishedSwin, img: Tensor, unit_mask: Tensor,
                 commit: str, corrected_coords: bool = False) -> Tensor:
    """``SwinTransformer.forward_features``: ``(B, N_vis units, C)``, row-major units."""
    if commit not in COMMITS:
        raise ValueError(f'commit must be one of {COMMITS}')
    x = F.conv2d(img, sd['encoder.patch_embed.proj.weight'],
                 sd['encoder.patch_embed.proj.bias'], stride=arch.patch_size)
    side = x.shape[-1]
    x = ln(x.flatten(2).transpose(1, 2), sd, 'encoder.patch_embed.norm')  # B, N, C
    r = side // arch.grid  # tokens per unit side
    coords = token_coords(side, side)
    visible = ~token_mask(unit_mask, arch.grid, r)
    if commit == '4beb99e':  # divide the map into units first
        x, coords, visible = (unit_major(x.transpose(0, 1), side, r).transpose(0, 1),
                              unit_major(coords, side, r), unit_major(visible, side, r))
    x, coords = x[:, visible], coords[visible]
    for i, depth in enumerate(arch.depths):
        side, window, shift = arch.stage_geometry(i)
        for j in range(depth):
            p = f'encoder.layers.{i}.blocks.{j}'
            x = x + window_attention(ln(x, sd, f'{p}.norm1'), coords, sd, f'{p}.attn',
                                     arch.num_heads[i], window, shift if j % 2 else 0)
            x = x + mlp(ln(x, sd, f'{p}.norm2'), sd, f'{p}.mlp')
        if i < len(arch.depths) - 1:
            if commit == '4beb99e':
                x, visible, coords = merge_2022(x, visible, side, r, corrected_coords)
                r //= 2
            else:
                x, coords = merge_2023(x, coords, side)
            name = f'encoder.layers.{i}.downsample'
            x = linear(ln(x, sd, f'{name}.norm'), sd, f'{name}.reduction')
    return ln(x, sd, 'encoder.norm')


def published_swin(sd: dict, arch: PublishedSwin, img: Tensor, noise: Tensor,
                   commit: str, corrected_coords: bool = False) -> Tuple[Tensor, Tensor]:
    """The published pretraining ``(loss, predictions (B, units, unit**2 * 3))`` of
    ``img`` ``(B, 3, H, W)`` with the batch's masking ``noise`` ``(1, units)``."""
    unit_mask, ids_restore = random_masking(noise)
    latent = swin_encoder(sd, arch, img, unit_mask, commit, corrected_coords)
    pred = decoder(sd, latent, ids_restore, arch.decoder_num_heads)
    return pixel_loss(img, pred, unit_mask, arch.unit), pred
