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
:mod:`greenmim_mm.ops.visible_plan`). **What travels** is a :class:`PackedWindowPlan`,
two index tensors in the smallest integer dtype that holds them: the slot of every
token and the key (``window * ws^2 + pos``, -1 for padding) of every slot. Everything
else is derived from those two by :func:`unpack_window_plan`, a few elementwise, cumsum
and scatter kernels on whatever device they are on (no host sync, static shapes): the
slots' windows and positions, and the sequence plan, whose order is the slot order
without the padding (each attention window is a contiguous run, windows ordered by
group). :func:`plan_window_groups` goes through the same unpacking, so the plan a model
gets from the loader equals the one it would build from the mask.

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


def index_dtype(max_value: int) -> torch.dtype:
    """The smallest of int16/int32/int64 that holds ``-1 .. max_value``."""
    for dtype in (torch.int16, torch.int32):
        if max_value <= torch.iinfo(dtype).max:
            return dtype
    return torch.int64


def narrow(array: np.ndarray) -> Tensor:
    """``array`` (integers >= -1) as a tensor of :func:`index_dtype`."""
    top = int(array.max()) if array.size else 0
    return torch.from_numpy(array).to(index_dtype(top))


@dataclass
class WindowGroups:
    """The integers of a window plan, the same in its working and its packed form:
    ``g`` and ``G`` (``group_size``, ``num_groups``), ``B`` and ``N`` (``batch_size``,
    ``num_tokens``), the stage geometry (``hw``, ``window_size``, the effective
    ``shift``), and for reports only ``num_windows`` and ``cost`` of this mask."""
    group_size: int
    num_groups: int
    batch_size: int
    num_tokens: int
    hw: Tuple[int, int]
    window_size: int
    shift: int
    num_windows: int
    cost: float


@dataclass
class WindowGroupPlan(WindowGroups):
    """The plan of one (stage, window size, effective shift) for a batch of masks.

    Attributes:
        token_slot: ``(B*N,)`` int64, slot ``group * g + offset`` of every visible token
            (tokens flattened sample-major, in the order of the coords).
        slot_window: ``(G, g)`` int64 attention-window id of each slot, -1 for padding.
        slot_pos: ``(G, g)`` int64 position ``r * ws + c`` of the slot inside its
            (rolled) window, the row/column of the relative position index; 0 for
            padding.
        seq_order: ``(B*N,)`` int64, the tokens in slot order without the padding
            (flex): every attention window is a contiguous run.
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
def _flex_block_ranges(seq_window: Tensor) -> Tuple[Tensor, Tensor]:
    """First and last key block that the windows of every query block reach (torch,
    on ``seq_window``'s device: windows are contiguous runs of the sequence)."""
    length = seq_window.shape[0]
    index = torch.arange(length, device=seq_window.device)
    starts = torch.ones(length, dtype=torch.bool, device=seq_window.device)
    starts[1:] = seq_window[1:] != seq_window[:-1]
    first = torch.cummax(torch.where(starts, index, 0), 0).values  # L: first of my window
    ends = torch.ones_like(starts)
    ends[:-1] = starts[1:]
    last = torch.cummin(torch.where(ends, index, length).flip(0), 0).values.flip(0)  # L
    block_first = index[::FLEX_BLOCK]  # nB: first token of each block
    block_last = (block_first + FLEX_BLOCK - 1).clamp(max=length - 1)
    return first[block_first] // FLEX_BLOCK, last[block_last] // FLEX_BLOCK


@dataclass
class PackedWindowPlan(WindowGroups):
    """A :class:`WindowGroupPlan` as it travels from the loader workers: what cannot be
    derived cheaply, in the smallest integer dtypes (:func:`index_dtype`).

    Attributes:
        token_slot: ``(B*N,)`` slot of every visible token.
        slot_key: ``(G*g,)`` ``window * ws^2 + pos`` of every slot, -1 for padding.
        the rest: the integers of :class:`WindowGroupPlan`.
    """
    token_slot: Tensor
    slot_key: Tensor

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.token_slot, self.slot_key))

    def pin_memory(self) -> 'PackedWindowPlan':
        return replace(self, token_slot=self.token_slot.pin_memory(),
                       slot_key=self.slot_key.pin_memory())

    def to(self, device: Union[str, torch.device],
           non_blocking: bool = True) -> 'WindowGroupPlan':
        """The working :class:`WindowGroupPlan` on ``device`` (copied, then unpacked
        there)."""
        return unpack_window_plan(replace(
            self, token_slot=self.token_slot.to(device, non_blocking=non_blocking),
            slot_key=self.slot_key.to(device, non_blocking=non_blocking)))


def unpack_window_plan(packed: PackedWindowPlan) -> WindowGroupPlan:
    """Everything :class:`WindowGroupPlan` holds, from the token slots and slot keys,
    on their device: elementwise ops, one cumsum, two scatters, no host sync."""
    ws2 = packed.window_size ** 2
    token_slot = packed.token_slot.long()  # B*N
    slot_key = packed.slot_key.long()  # G*g
    real = slot_key >= 0  # G*g
    slot_window = torch.where(real, slot_key // ws2, -1)  # G*g
    slot_pos = torch.where(real, slot_key % ws2, 0)  # G*g
    # Sequence position of a token = number of real slots before its slot.
    token_rank = (torch.cumsum(real, 0) - 1)[token_slot]  # B*N
    seq_order = torch.empty_like(token_slot).index_copy_(
        0, token_rank, torch.arange(token_slot.shape[0], device=token_slot.device))
    seq_key = torch.empty_like(token_slot).index_copy_(0, token_rank,
                                                       slot_key[token_slot])  # B*N
    seq_window = seq_key // ws2
    block_low, block_high = _flex_block_ranges(seq_window)
    shape = (packed.num_groups, packed.group_size)
    return WindowGroupPlan(
        token_slot=token_slot, slot_window=slot_window.view(shape),
        slot_pos=slot_pos.view(shape), seq_order=seq_order, seq_window=seq_window,
        seq_pos=seq_key % ws2, block_low=block_low, block_high=block_high,
        **{f.name: getattr(packed, f.name) for f in fields(WindowGroups)})


def plan_window_groups(coords: Union[Tensor, np.ndarray], hw: Tuple[int, int],
                       window_size: int, shift: int, group_size: Optional[int] = None,
                       num_groups: Optional[int] = None) -> WindowGroupPlan:
    """The plan of one (stage, shift) for visible tokens at ``coords``: the
    :func:`pack_window_groups` of them, unpacked on the CPU (same arguments)."""
    return unpack_window_plan(pack_window_groups(coords, hw, window_size, shift,
                                                 group_size, num_groups))


def pack_window_groups(coords: Union[Tensor, np.ndarray], hw: Tuple[int, int],
                       window_size: int, shift: int, group_size: Optional[int] = None,
                       num_groups: Optional[int] = None) -> PackedWindowPlan:
    """The packed plan of one (stage, shift) for visible tokens at ``coords``.

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
    slot_key = np.full(total_groups * g, -1, dtype=np.int64)
    slot_key[slot_sorted] = sorted_key
    return PackedWindowPlan(
        token_slot=narrow(token_slot), slot_key=narrow(slot_key),  # B*N, G*g
        group_size=g, num_groups=total_groups, batch_size=batch, num_tokens=num_tokens,
        hw=(int(hw[0]), int(hw[1])), window_size=window_size, shift=shift,
        num_windows=len(nonzero), cost=packing.cost)
