"""The mask convention of greenmim_mm and the token layout of the visible-only path.

**Mask.** A mask is a bool tensor ``(B, Hu, Wu)`` over *mask units* (the encoder's
total stride, 32 px for Swin/Twins with patch 4); ``True`` means *masked*, i.e. hidden
from the encoder (the convention of mmpretrain's SimMIM, where 1 = masked). Every
sample keeps the same number of visible units, so the visible tokens of a batch form a
dense ``(B, N_vis, C)`` tensor at every stage.

**Token layout.** At a stage where one mask unit covers ``u x u`` tokens (u = 8, 4, 2, 1
for the four stages of Swin at patch 4), the visible tokens of a sample are ordered
*unit-major* -- visible units in row-major order of the unit grid -- and, inside a unit,
in *Morton (Z) order*. Z order is recursive: the four tokens of every aligned 2x2 block
are contiguous, in the order (0, 0), (0, 1), (1, 0), (1, 1), and the blocks themselves
follow Z order. So merging 2x2 blocks (Swin's patch merging) is a reshape of
``(B, N, C)`` to ``(B, N / 4, 4, C)``, and the merged tokens are again in this layout
with ``u / 2``. At ``u = 1`` token ``i`` of a sample is its ``i``-th visible unit.

Ops never rely on this order: they take tokens together with their ``(row, col)``
coordinates, which :func:`visible_token_coords` computes.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor


def unit_grid(image_hw: Tuple[int, int], unit_px: int) -> Tuple[int, int]:
    """Size ``(Hu, Wu)`` of the mask-unit grid of an image, checking divisibility."""
    height, width = image_hw
    if unit_px <= 0 or height % unit_px or width % unit_px:
        raise ValueError(
            f'Image size {height}x{width} is not divisible by the mask unit '
            f'{unit_px} px: resize or crop the input to a multiple of {unit_px}.')
    return height // unit_px, width // unit_px


def num_visible_units(num_units: int, mask_ratio: float) -> int:
    """Visible units per sample: ``int(num_units * (1 - mask_ratio))``, at least 1."""
    if not 0.0 < mask_ratio < 1.0:
        raise ValueError(
            f'mask_ratio must lie in the open interval (0, 1), got {mask_ratio}.')
    num_visible = int(num_units * (1 - mask_ratio))
    if num_visible < 1:
        raise ValueError(
            f'mask_ratio {mask_ratio} leaves no visible unit out of {num_units}: '
            'lower the ratio or use a larger image.')
    return num_visible


def random_unit_masks(batch: int, grid: Tuple[int, int], num_visible: int,
                      generator: Optional[torch.Generator] = None) -> Tensor:
    """Random unit masks ``(B, Hu, Wu)`` bool, True = masked, ``num_visible`` visible each.

    Every sample draws its own visible units uniformly without replacement (the
    mask of the data pipeline, benchmarks and tests); ``generator`` makes it
    reproducible, None uses torch's global generator.
    """
    num_units = grid[0] * grid[1]
    if not 0 < num_visible <= num_units:
        raise ValueError(f'num_visible must lie in [1, {num_units}] for a '
                         f'{grid[0]}x{grid[1]} unit grid, got {num_visible}.')
    order = torch.rand(batch, num_units, generator=generator).argsort(1)  # B, L
    mask = torch.ones(batch, num_units, dtype=torch.bool)
    mask.scatter_(1, order[:, :num_visible], False)
    return mask.view(batch, *grid)


def check_unit_mask(mask: Tensor) -> int:
    """Validate a unit mask and return the number of visible units per sample."""
    if mask.dtype != torch.bool or mask.dim() != 3:
        raise ValueError(
            'A unit mask must be a bool tensor (B, Hu, Wu) with True = masked, '
            f'got dtype {mask.dtype} and shape {tuple(mask.shape)}.')
    visible = (~mask).flatten(1).sum(1)  # B
    num_visible = int(visible[0])
    if num_visible == 0:
        raise ValueError('The mask hides every unit: at least one must be visible.')
    if bool((visible != num_visible).any()):
        raise ValueError(
            'Every sample must keep the same number of visible units, got '
            f'{visible.tolist()}: draw masks with a fixed mask ratio.')
    return num_visible


MASK_MODES = ('sample', 'batch')
"""``'sample'``: each image its own mask; ``'batch'``: the first image's for all."""


def apply_mask_mode(mask: Tensor, mask_mode: str) -> Tensor:
    """``(B, Hu, Wu)`` masks as ``mask_mode`` says: as they are, or the first for all."""
    if mask_mode not in MASK_MODES:
        raise ValueError(f'mask_mode must be one of {MASK_MODES}, got {mask_mode!r}.')
    if mask_mode == 'batch':
        return mask[:1].expand_as(mask).contiguous()
    return mask


def visible_unit_ids(mask: Tensor) -> Tensor:
    """Row-major indices of the visible units of each sample, ``(B, N_units_vis)``."""
    num_visible = check_unit_mask(mask)
    # Stable sort puts the visible units (key 0) first, keeping row-major order.
    order = torch.sort(mask.flatten(1).to(torch.uint8), dim=1, stable=True)[1]
    return order[:, :num_visible]


def morton_offsets(unit: int, device=None) -> Tensor:
    """``(row, col)`` of the cells of a ``unit x unit`` block in Z order, ``(u*u, 2)``."""
    if unit < 1 or unit & (unit - 1):
        raise ValueError(f'The unit size in tokens must be a power of 2, got {unit}.')
    index = torch.arange(unit * unit, device=device)
    row = torch.zeros_like(index)
    col = torch.zeros_like(index)
    for bit in range(max(unit.bit_length() - 1, 0)):
        # Z order interleaves bits: even bits of the index -> col, odd bits -> row.
        col |= ((index >> (2 * bit)) & 1) << bit
        row |= ((index >> (2 * bit + 1)) & 1) << bit
    return torch.stack([row, col], dim=1)


def visible_token_coords(mask: Tensor, unit: int) -> Tensor:
    """Coordinates of the visible tokens in the layout above, ``(B, N_vis, 2)``.

    Args:
        mask: ``(B, Hu, Wu)`` bool unit mask, True = masked.
        unit: tokens per mask unit along each side at this stage (a power of 2).
    """
    return unit_token_coords(visible_unit_ids(mask), mask.shape[2], unit)


def unit_token_coords(unit_ids: Tensor, width_units: int, unit: int) -> Tensor:
    """:func:`visible_token_coords` from the ``(B, Nu)`` visible unit ids (row-major on
    a grid ``width_units`` wide): ``(B, Nu*u*u, 2)``, a few ops on their device."""
    unit_rc = torch.stack([unit_ids // width_units, unit_ids % width_units], -1)
    offsets = morton_offsets(unit, device=unit_ids.device)  # u*u, 2
    coords = unit_rc[:, :, None, :] * unit + offsets[None, None]  # B, Nu, u*u, 2
    return coords.flatten(1, 2)


def gather_tokens(feature_map: Tensor, coords: Tensor) -> Tensor:
    """Tokens of a dense ``(B, H, W, C)`` map at ``coords`` ``(B, N, 2)`` -> ``(B, N, C)``."""
    batch, _, width, channels = feature_map.shape
    flat_index = coords[..., 0] * width + coords[..., 1]  # B, N
    flat = feature_map.reshape(batch, -1, channels)
    return flat.gather(1, flat_index[..., None].expand(-1, -1, channels))


def scatter_tokens(tokens: Tensor, coords: Tensor, hw: Tuple[int, int],
                   fill: float = 0.0) -> Tensor:
    """Place ``(B, N, C)`` tokens at ``coords`` on a ``(B, H, W, C)`` map filled with ``fill``."""
    batch, _, channels = tokens.shape
    height, width = hw
    flat_index = coords[..., 0] * width + coords[..., 1]  # B, N
    dense = tokens.new_full((batch, height * width, channels), fill)
    dense = dense.scatter(1, flat_index[..., None].expand(-1, -1, channels), tokens)
    return dense.view(batch, height, width, channels)


def stage_token_coords(mask: Tensor, hw: Tuple[int, int]) -> Tensor:
    """Coordinates ``(B, N, 2)`` of the visible tokens of a stage with an ``(H, W)`` map.

    Args:
        mask: ``(B, Hu, Wu)`` bool unit mask, True = masked.
        hw: the stage's token map; a mask unit must cover a whole ``u x u`` block.

    Raises:
        ValueError: the unit grid does not divide the map into equal square units.
    """
    _, grid_h, grid_w = mask.shape
    height, width = hw
    if height % grid_h or width % grid_w or height // grid_h != width // grid_w:
        raise ValueError(
            f'The mask unit must divide the feature map: a {grid_h}x{grid_w} unit grid '
            f'does not tile a {height}x{width} map with square units.')
    return visible_token_coords(mask, height // grid_h)
