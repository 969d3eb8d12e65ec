"""Where every visible token goes in (shifted) window attention: the window plan.

ShiftWindowMSA pads a stage's ``(H, W)`` map at the bottom/right to multiples of the
window ``ws``, rolls it by ``-shift`` and cuts ``ws x ws`` windows; with a shift, the
regions of ``get_attn_mask`` split the last window row and column. An *attention
window* is one (sample, local window, shift region): two visible tokens attend to each
other iff they share one. :func:`plan_window_groups` sorts the visible tokens of a
batch by attention window, counts them per window and packs the windows into groups
of ``g`` slots (:mod:`greenmim_mm.ops.grouping`), giving

- the *group plan* of the sdpa backend: the slot of every token in a ``(G, g)`` buffer,
  and the window and in-window position of every slot;
- the *sequence plan* of the flex backend: the tokens in window order (no padding),
  their windows and positions, and for every block of 128 of them the range of blocks
  their windows reach.

Both are numpy work on the CPU, done where the masks are made (the data loader, see
:mod:`greenmim_mm.ops.visible_plan`); the device only receives the index tensors.

**Static shapes.** A training step compiles once only if its shapes do not depend on
the mask. Given ``group_size`` (``g``, at least the largest count any mask can put in a
window: :func:`max_window_count`) and ``num_groups`` (a capacity, see
:func:`~greenmim_mm.ops.grouping.group_capacity`), the plan has exactly that shape:
unused groups are padding. Without them the plan is Algorithm 1's optimum for this
mask (the search over ``g``), whose shape varies.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, fields, replace
from typing import Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from .grouping import _pack, group_capacity

FLEX_BLOCK = 128
"""Tokens per query/key block of the flex backend's block mask."""


@dataclass
class WindowGroupPlan:
    """The plan of one (stage, window size, effective shift) for a batch of masks.

    Attributes:
        token_slot: ``(B*N,)`` int64, slot ``group * g + offset`` of every visible token
            (tokens flattened sample-major, in the order of the coords).
        slot_window: ``(G, g)`` int64 attention-window id of each slot, -1 for padding.
        slot_pos: ``(G, g)`` int64 position ``r * ws + c`` of the slot inside its
            (rolled) window, the row/column of the relative position index; 0 for
            padding.
        seq_order: ``(B*N,)`` int64, the tokens sorted by attention window (flex).
        seq_window: ``(B*N,)`` int64 attention window of each sequence position.
        seq_pos: ``(B*N,)`` int64 in-window position of each sequence position.
        block_low, block_high: ``(nB,)`` int64, for every block of ``FLEX_BLOCK``
            sequence positions the first and last key block its windows reach.
        group_size, num_groups: ``g`` and ``G``.
        batch_size, num_tokens: ``B`` and ``N``.
        hw, window_size, shift: the stage geometry (``shift`` is the effective one).

    Everything a training step reads is either a tensor or fixed by the geometry and the
    batch size, so a compiled step sees the same shapes and constants for every mask.
    ``num_windows`` and ``cost`` (statistics of this mask) are for reports only.
    """
    token_slot: Tensor
    slot_window: Tensor
    slot_pos: Tensor
    seq_order: Tensor
    seq_window: Tensor
    seq_pos: Tensor
    block_low: Tensor
    block_high: Tensor
    group_size: int
    num_groups: int
    batch_size: int
    num_tokens: int
    hw: Tuple[int, int]
    window_size: int
    shift: int
    num_windows: int
    cost: float

    @property
    def padding(self) -> int:
        """Padded slots, ``G * g - B * N``."""
        return self.num_groups * self.group_size - self.batch_size * self.num_tokens

    @property
    def one_window_per_group(self) -> bool:
        """True when no slot is padding and every group is a single window."""
        return self.padding == 0 and self.num_groups == self.num_windows

    @property
    def device(self) -> torch.device:
        return self.token_slot.device

    def _map_tensors(self, fn) -> 'WindowGroupPlan':
        return replace(self, **{f.name: fn(getattr(self, f.name)) for f in fields(self)
                                if isinstance(getattr(self, f.name), Tensor)})

    def to(self, device: Union[str, torch.device],
           non_blocking: bool = True) -> 'WindowGroupPlan':
        """The same plan with its tensors on ``device`` (non-blocking copies)."""
        return self._map_tensors(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> 'WindowGroupPlan':
        """Pinned copies of the tensors (the DataLoader calls this with pin_memory)."""
        return self._map_tensors(Tensor.pin_memory)


# ----------------------------------------------------------------------------------
# Geometry: which attention window and position a cell belongs to
# ----------------------------------------------------------------------------------
def window_key_tables(hw: Tuple[int, int], window_size: int,
                      shift: int) -> Tuple[np.ndarray, np.ndarray, int]:
    """``key = row_key[r] + col_key[c] = local_window * ws^2 + pos`` of a cell.

    The regions of ``get_attn_mask`` are exactly the windows of the *unrolled* map
    offset by ``ws - shift``: rows ``[0, s)`` and ``[H_pad - ws + s, H_pad)`` are the
    two regions of the last rolled window row (likewise columns). So a local window (an
    attention window of one sample) is ``(wr, wc) = ((r + ws - s) // ws, (c + ws - s)
    // ws)`` on a grid one larger when ``s > 0``, and ``pos = ((r - s) mod ws) * ws +
    (c - s) mod ws`` is the position in the rolled window, i.e. the row/column of the
    relative position index. The key ``(wr * grid_w + wc) * ws^2 + pos`` is a sum of a
    row and a column term.

    Returns:
        ``(row_key (H,), col_key (W,), windows_per_sample)``, int64.
    """
    height, width = hw
    ws = window_size
    offset = (ws - shift) % ws
    grid_h = -(-height // ws) + (shift > 0)
    grid_w = -(-width // ws) + (shift > 0)
    r, c = np.arange(height), np.arange(width)
    row_key = ((r + offset) // ws) * grid_w * ws * ws + ((r - shift) % ws) * ws  # H
    col_key = ((c + offset) // ws) * ws * ws + (c - shift) % ws  # W
    return row_key, col_key, grid_h * grid_w


def max_window_count(grid_hw: Tuple[int, int], unit: int, hw: Tuple[int, int],
                     window_size: int, shift: int, num_visible: int) -> Tuple[int, int]:
    """The most tokens any mask can put in one attention window, and how many windows.

    A mask with ``num_visible`` visible units of ``unit x unit`` tokens (on the
    ``grid_hw`` unit grid) puts at most the sum of the ``num_visible`` largest unit
    overlaps of a window into it. Returns ``(max count, windows per sample that some
    mask can make non-empty)``: the smallest group size that fits every mask, and the
    bound on the number of groups per sample.
    """
    height, width = hw
    grid_h, grid_w = grid_hw
    if (grid_h * unit, grid_w * unit) != (height, width):
        raise ValueError(f'A {grid_h}x{grid_w} grid of {unit}x{unit}-token units does '
                         f'not tile the {height}x{width} map.')
    row_key, col_key, windows_per_sample = window_key_tables(hw, window_size, shift)
    ws2 = window_size * window_size
    window = (row_key[:, None] + col_key[None, :]) // ws2  # H, W
    unit_id = (np.arange(height) // unit)[:, None] * grid_w + np.arange(width) // unit
    num_units = grid_h * grid_w
    overlap = np.bincount((window * num_units + unit_id).ravel(),
                          minlength=windows_per_sample * num_units)
    overlap = overlap.reshape(windows_per_sample, num_units)  # nW, units
    top = -np.sort(-overlap, axis=1)[:, :num_visible].sum(1)  # nW
    return int(top.max()), int((top > 0).sum())


def _check_geometry(coords: Union[Tensor, np.ndarray], hw: Tuple[int, int],
                    window_size: int, shift: int) -> np.ndarray:
    """Validate the inputs of :func:`plan_window_groups`; coords as int64 numpy."""
    shape = getattr(coords, 'shape', None)
    if shape is None or len(shape) != 3 or shape[-1] != 2:
        raise ValueError(
            f'coords must be a (B, N, 2) tensor of (row, col), got {shape or type(coords)}.')
    array = coords.detach().cpu().numpy() if isinstance(coords, Tensor) else coords
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f'coords must be an integer tensor, got {coords.dtype}.')
    if shape[0] == 0 or shape[1] == 0:
        raise ValueError(
            f'The visible set is empty (coords of shape {tuple(shape)}): '
            'at least one token per sample must be visible.')
    height, width = hw
    if height < 1 or width < 1:
        raise ValueError(f'The feature map must be non-empty, got hw={hw}.')
    if window_size < 1:
        raise ValueError(f'window_size must be >= 1, got {window_size}.')
    if not 0 <= shift < window_size:
        raise ValueError(
            f'shift must satisfy 0 <= shift < window_size = {window_size}, '
            f'got {shift}.')
    array = array.astype(np.int64, copy=False)
    rows, cols = array[..., 0], array[..., 1]
    row_min, row_max, col_min, col_max = rows.min(), rows.max(), cols.min(), cols.max()
    if row_min < 0 or row_max >= height or col_min < 0 or col_max >= width:
        raise ValueError(
            f'coords must lie on the {height}x{width} map (0 <= row < {height}, '
            f'0 <= col < {width}), got rows in [{row_min}, {row_max}] and cols in '
            f'[{col_min}, {col_max}].')
    return array


# ----------------------------------------------------------------------------------
# The plan
# ----------------------------------------------------------------------------------
def _flex_block_ranges(seq_window: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """First and last key block that the windows of every query block reach."""
    length = len(seq_window)
    index = np.arange(length)
    starts = np.ones(length, dtype=bool)
    starts[1:] = seq_window[1:] != seq_window[:-1]
    first = np.maximum.accumulate(np.where(starts, index, 0))  # L: first of my window
    ends = np.ones(length, dtype=bool)
    ends[:-1] = starts[1:]
    last = np.minimum.accumulate(np.where(ends, index, length)[::-1])[::-1]  # L
    block_first = index[::FLEX_BLOCK]  # nB: first token of each block
    block_last = np.minimum(block_first + FLEX_BLOCK - 1, length - 1)
    return first[block_first] // FLEX_BLOCK, last[block_last] // FLEX_BLOCK


def plan_window_groups(coords: Union[Tensor, np.ndarray], hw: Tuple[int, int],
                       window_size: int, shift: int, group_size: Optional[int] = None,
                       num_groups: Optional[int] = None) -> WindowGroupPlan:
    """The plan of one (stage, shift) for visible tokens at ``coords``.

    Replicates ShiftWindowMSA (see :func:`window_key_tables`): every (sample, window,
    shift region) is one attention window; the attention windows of all samples are
    packed together. Runs on the CPU, vectorised over tokens.

    Args:
        coords: ``(B, N, 2)`` integer (row, col) of the visible tokens, distinct
            within a sample, any order.
        hw: ``(H, W)`` of the feature map.
        window_size: ``ws``.
        shift: the *effective* shift (0 for W-MSA; the caller applies Swin's rule that
            it becomes 0 when the map is not larger than a window).
        group_size: a fixed ``g`` (static shapes) instead of Algorithm 1's search; it
            must be at least the largest window count.
        num_groups: with ``group_size``, the number of groups to allocate (static
            shapes); a mask that needs more falls back, with a warning, to the
            guaranteed bound ``ceil(2 B N / g)`` (:func:`group_capacity`).

    Raises:
        ValueError: bad shapes, empty visible set, coords off the map or repeated,
            ``shift`` outside ``[0, ws)``, a window larger than ``group_size``.
    """
    array = _check_geometry(coords, hw, window_size, shift)
    batch, num_tokens = array.shape[:2]
    ws2 = window_size * window_size
    row_key, col_key, windows_per_sample = window_key_tables(hw, window_size, shift)
    key = row_key[array[..., 0]] + col_key[array[..., 1]]  # B, N
    key += np.arange(batch)[:, None] * (windows_per_sample * ws2)  # sample-major
    order = np.argsort(key, axis=None, kind='stable')  # B*N: flat tokens by key
    sorted_key = key.reshape(-1)[order]  # B*N
    if (sorted_key[1:] == sorted_key[:-1]).any():
        raise ValueError('coords must be distinct within each sample: a (row, col) '
                         'appears twice.')
    window_sorted = sorted_key // ws2  # B*N: attention-window id
    counts = np.bincount(window_sorted, minlength=batch * windows_per_sample)  # B*nW
    window_start = np.cumsum(counts) - counts  # first sorted index of each window
    nonzero = np.flatnonzero(counts)
    if group_size is not None and counts.max() > group_size:
        raise ValueError(f'A window holds {counts.max()} visible tokens, more than '
                         f'group_size = {group_size}.')
    packing = _pack(counts[nonzero], group_size)
    g, used_groups = packing.group_size, packing.num_groups
    total_groups = used_groups if num_groups is None else num_groups
    if used_groups > total_groups:
        total_groups = group_capacity(batch * num_tokens, g)
        warnings.warn(
            f'This batch needs {used_groups} groups of {g} slots at a {hw[0]}x{hw[1]} '
            f'map (window {window_size}, shift {shift}), more than the {num_groups} '
            f'allocated: using the guaranteed bound {total_groups} (a compiled step '
            'compiles once more for this shape).')
    # Slot of a token = slot of its window's first token + its rank in the window.
    slot_base = -window_start
    slot_base[nonzero] += packing.window_group * g + packing.window_offset
    slot_sorted = slot_base[window_sorted] + np.arange(batch * num_tokens)  # B*N
    token_slot = np.empty(batch * num_tokens, dtype=np.int64)
    token_slot[order] = slot_sorted
    slot_window = np.full(total_groups * g, -1, dtype=np.int64)
    slot_window[slot_sorted] = window_sorted
    slot_pos = np.zeros(total_groups * g, dtype=np.int64)
    slot_pos[slot_sorted] = sorted_key % ws2
    block_low, block_high = _flex_block_ranges(window_sorted)
    return WindowGroupPlan(
        token_slot=torch.from_numpy(token_slot),  # B*N
        slot_window=torch.from_numpy(slot_window).view(total_groups, g),  # G, g
        slot_pos=torch.from_numpy(slot_pos).view(total_groups, g),  # G, g
        seq_order=torch.from_numpy(order),  # B*N
        seq_window=torch.from_numpy(window_sorted),  # B*N
        seq_pos=torch.from_numpy(sorted_key % ws2),  # B*N
        block_low=torch.from_numpy(block_low), block_high=torch.from_numpy(block_high),
        group_size=g, num_groups=total_groups, batch_size=batch, num_tokens=num_tokens,
        hw=(int(hw[0]), int(hw[1])), window_size=window_size, shift=shift,
        num_windows=len(nonzero), cost=packing.cost)
