"""Optimal grouping of local windows (Algorithm 1 of GreenMIM) and the gather plan.

In a window-attention stage of the visible-only path every local window holds a
different number of visible tokens (0..ws^2). Attention runs on a buffer of shape
``(num_groups, g, C)``: windows are packed into groups of ``g`` slots, unused slots
are padding, and a mask forbids attention across windows and to padding. Padding
exists only inside attention (QKV, MLP and norms run on the unpadded tokens).

**Cost.** The attention of one group costs ``g^2`` score entries (``QK^T``, softmax,
``AV``) plus ``g`` slot rows (scattering q/k/v into the buffer, gathering the output),
both in units of one head-dim dot product per head. The cost of a partition into
``G`` groups of size ``g`` is therefore::

    cost(g, G) = G * (g^2 + SLOT_COST * g + GROUP_COST)      SLOT_COST = 1, GROUP_COST = 0

``GROUP_COST`` is a fixed per-group overhead (zero for the batched kernels used
here; the search and its pruning are exact for any non-negative integers).

**Search (Algorithm 1, complete).** For every candidate ``g`` from ``max_i w_i`` to
``sum_i w_i``: fill groups one at a time, each with a 0/1 knapsack of capacity ``g``
(weight = value = visible count of a window), until every window is placed; keep the
partition of least cost (ties: the smallest ``g``). Two exact shortcuts make it fast:

1. *Pruning.* ``G >= ceil(T / g)`` for ``T = sum_i w_i``, so
   ``cost(g) >= LB(g) = ceil(T / g) * f(g)`` with ``f(g) = g^2 + a g + b``; a ``g`` with
   ``LB(g) >= best`` cannot win (ties keep the smaller ``g``) and is skipped. Moreover
   ``LB(g) >= T * (g + a + b / g)``, which is non-decreasing in ``g`` once
   ``g^2 >= b``; so as soon as ``g^2 >= b`` and ``T * (g + a + b / g) >= best``, every
   larger ``g`` is beaten too and the search stops. The result equals the full search.
2. *Knapsack over value classes.* Windows of equal count are interchangeable, so a
   group is a vector ``t_j`` of how many windows of each distinct count ``v_j`` it takes:
   a bounded subset-sum over at most ``ws^2`` values (bitset DP). Among the subsets of
   largest total the tie-break is deterministic: the lexicographically largest
   (as many windows of the largest count as possible, then of the next, ...).
   Windows of one count are taken in increasing index order.
   *Repetition lemma.* Let ``P`` be the pattern chosen on multiset ``M`` (total
   ``S*``). If ``M - P`` still contains ``P``, then ``P`` is chosen on ``M - P`` again:
   ``P`` is feasible there with total ``S*``, no subset of ``M - P`` (a subset of
   ``M``) exceeds ``S*``, and no subset of ``M - P`` of total ``S*`` is
   lexicographically larger than ``P`` because it would be one of ``M`` as well. So a
   pattern is applied ``min_j floor(m_j / t_j)`` times at once, which is exactly what
   filling one group at a time would do (tested against a literal knapsack).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import (Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple,
                    Union)

import numpy as np
import torch
from torch import Tensor

from .masking import visible_token_coords

SLOT_COST = 1
"""Cost of one slot row of a group, relative to one attention score entry."""
GROUP_COST = 0
"""Fixed cost of one group, relative to one attention score entry."""

CountsLike = Union[np.ndarray, Tensor, Sequence[int]]


def group_cost(group_size: int, num_groups: int, slot_cost: int = SLOT_COST,
               fixed_cost: int = GROUP_COST) -> float:
    """``cost(g, G) = G * (g^2 + slot_cost * g + fixed_cost)``, see the module doc."""
    return float(num_groups * _per_group(group_size, slot_cost, fixed_cost))


def _per_group(g: int, slot_cost: int, fixed_cost: int) -> int:
    return g * g + slot_cost * g + fixed_cost


# ----------------------------------------------------------------------------------
# Packing of a multiset of window counts
# ----------------------------------------------------------------------------------
class _Packing(NamedTuple):
    """A partition of the windows with non-zero count, as arrays.

    ``window_group[i]`` / ``window_offset[i]``: group of window ``i`` and the slot at
    which its tokens start inside that group (windows of one group are laid out in
    order of decreasing count, ties by index).
    """
    group_size: int
    num_groups: int
    cost: float
    window_group: np.ndarray   # n, int64
    window_offset: np.ndarray  # n, int64


# A fill is a list of (pattern, repeats); a pattern is a list of (class j, t_j).
_Fill = List[Tuple[List[Tuple[int, int]], int]]


def _fill(values: Sequence[int], mults: Sequence[int], g: int) -> _Fill:
    """Fill groups of capacity ``g`` one knapsack at a time, patterns repeated at once.

    Args:
        values: distinct window counts, strictly decreasing, each in ``[1, g]``.
        mults: how many windows have each count.
        g: group size.

    Returns:
        ``[(pattern, repeats), ...]`` in group order; ``pattern`` lists ``(j, t_j)``
        with ``t_j > 0`` in increasing ``j`` (decreasing count).
    """
    k = len(values)
    mults = list(mults)
    # A group holds at most g // v windows of count v: the DP only sees the
    # effective multiplicity, so it is recomputed only where that changes.
    cap = [g // v for v in values]
    eff = [min(m, c) for m, c in zip(mults, cap)]
    full = (1 << (g + 1)) - 1
    # reach[j]: bitset of the totals <= g reachable with classes j..k-1.
    reach = [0] * (k + 1)
    reach[k] = 1
    dirty = k - 1  # reach[j] is stale for j <= dirty
    remaining = sum(mults)
    fill: _Fill = []
    while remaining:
        for j in range(dirty, -1, -1):
            bits, v = reach[j + 1], values[j]
            todo, step = eff[j], 1
            while todo:  # bounded multiplicity by binary splitting: 1, 2, 4, ..., rest
                t = min(step, todo)
                bits |= (bits << (t * v)) & full
                todo -= t
                step <<= 1
            reach[j] = bits
        left = reach[0].bit_length() - 1  # best total
        pattern = []
        for j in range(k):  # lexicographically largest: most of the largest counts
            v = values[j]
            if v > left or not eff[j]:
                continue  # t_j = 0 is forced, so reach[j + 1] holds `left`
            t = min(eff[j], left // v)
            below = reach[j + 1]
            while not (below >> (left - t * v)) & 1:
                t -= 1
            if t:
                pattern.append((j, t))
                left -= t * v
                if not left:
                    break
        repeats = min(mults[j] // t for j, t in pattern)
        dirty = -1
        for j, t in pattern:
            mults[j] -= t * repeats
            remaining -= t * repeats
            new_eff = min(mults[j], cap[j])
            if new_eff != eff[j]:
                eff[j] = new_eff
                dirty = j
        fill.append((pattern, repeats))
    return fill


def _search(values: Sequence[int], mults: Sequence[int], slot_cost: int,
            fixed_cost: int) -> Tuple[int, _Fill, int]:
    """Algorithm 1 with exact pruning: ``(g, fill, integer cost)`` of least cost."""
    total = sum(v * m for v, m in zip(values, mults))
    best: Optional[Tuple[int, _Fill, int]] = None
    for g in range(values[0], total + 1):
        per_group = _per_group(g, slot_cost, fixed_cost)
        if best is not None:
            # T * (g + a + b / g) >= best and g^2 >= b: no larger g can win (module doc).
            if g * g >= fixed_cost and total * per_group >= best[2] * g:
                break
            if -(-total // g) * per_group >= best[2]:
                continue
        fill = _fill(values, mults, g)
        cost = sum(r for _, r in fill) * per_group
        if best is None or cost < best[2]:
            best = (g, fill, cost)
    assert best is not None
    return best


def _layout(counts: np.ndarray, values: Sequence[int],
            fill: _Fill) -> Tuple[np.ndarray, np.ndarray]:
    """Vectorised ``(window_group, window_offset)`` of every window from a fill."""
    # One segment per (pattern, class): `t * repeats` windows of class j.
    seg_class, seg_len, seg_group0, seg_t, seg_start = [], [], [], [], []
    group0 = 0
    for pattern, repeats in fill:
        start = 0
        for j, t in pattern:
            seg_class.append(j)
            seg_len.append(t * repeats)
            seg_group0.append(group0)
            seg_t.append(t)
            seg_start.append(start)
            start += t * values[j]
        group0 += repeats
    seg_class_a = np.asarray(seg_class)
    # Segments of one class consume its windows in order: sort segments by class
    # (stable keeps the group order), windows by (count desc, index asc).
    seg_order = np.argsort(seg_class_a, kind='stable')
    seg_len_a = np.asarray(seg_len, dtype=np.int64)[seg_order]
    seg_group0_a = np.asarray(seg_group0, dtype=np.int64)[seg_order]
    seg_t_a = np.asarray(seg_t, dtype=np.int64)[seg_order]
    seg_start_a = np.asarray(seg_start, dtype=np.int64)[seg_order]
    seg_value = np.asarray(values, dtype=np.int64)[seg_class_a[seg_order]]
    seg_of = np.repeat(np.arange(len(seg_len_a)), seg_len_a)  # n
    first = np.cumsum(seg_len_a) - seg_len_a
    local = np.arange(len(seg_of)) - first[seg_of]  # index inside the segment
    group = seg_group0_a[seg_of] + local // seg_t_a[seg_of]
    offset = seg_start_a[seg_of] + (local % seg_t_a[seg_of]) * seg_value[seg_of]
    # Windows by (count desc, index asc); a 16-bit key gets numpy's radix sort.
    descending = values[0] - counts
    if values[0] < 1 << 16:
        descending = descending.astype(np.uint16)
    window_order = np.argsort(descending, kind='stable')
    window_group = np.empty(len(counts), dtype=np.int64)
    window_offset = np.empty(len(counts), dtype=np.int64)
    window_group[window_order] = group
    window_offset[window_order] = offset
    return window_group, window_offset


def _value_classes(counts: np.ndarray) -> Tuple[List[int], List[int]]:
    """Distinct counts in decreasing order and their multiplicities."""
    values, mults = np.unique(counts, return_counts=True)
    return values[::-1].tolist(), mults[::-1].tolist()


def _pack(counts: np.ndarray, group_size: Optional[int] = None,
          slot_cost: int = SLOT_COST, fixed_cost: int = GROUP_COST) -> _Packing:
    """Pack windows with positive ``counts`` (n,); ``group_size`` fixes g (no search)."""
    values, mults = _value_classes(counts)
    if group_size is None:
        g, fill, cost = _search(values, mults, slot_cost, fixed_cost)
    else:
        g = group_size
        fill = _fill(values, mults, g)
        cost = sum(r for _, r in fill) * _per_group(g, slot_cost, fixed_cost)
    window_group, window_offset = _layout(counts, values, fill)
    return _Packing(g, sum(r for _, r in fill), float(cost), window_group,
                    window_offset)


def _as_counts(counts: CountsLike, max_count: Optional[int]) -> np.ndarray:
    """Validate window counts and return them as an int64 array."""
    if isinstance(counts, Tensor):
        counts = counts.detach().cpu().numpy()
    array = np.asarray(counts)
    if array.ndim != 1:
        raise ValueError(
            f'counts must be a 1-D array with one entry per window, got shape '
            f'{array.shape}.')
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f'counts must be integers, got dtype {array.dtype}.')
    array = array.astype(np.int64)
    if array.size and int(array.min()) < 0:
        raise ValueError(
            f'Window counts must be >= 0, got a minimum of {int(array.min())}.')
    if max_count is not None and array.size and int(array.max()) > max_count:
        raise ValueError(
            f'A window holds at most max_count = ws*ws = {max_count} tokens, got a '
            f'count of {int(array.max())}.')
    if not array.any():
        raise ValueError(
            'The visible set is empty: every window count is zero, nothing to group.')
    return array


# ----------------------------------------------------------------------------------
# Public API: windows -> groups
# ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class GroupPlan:
    """A partition of windows into groups of ``group_size`` slots.

    Attributes:
        group_size: slots per group, ``g``.
        groups: window indices of each group (windows with a zero count appear
            nowhere, every other window in exactly one group, in slot order).
        cost: ``cost(g, G)`` of the module docstring.
        num_tokens: total visible count, ``sum_i w_i``.
    """
    group_size: int
    groups: List[List[int]]
    cost: float
    num_tokens: int = 0

    @property
    def num_groups(self) -> int:
        return len(self.groups)

    @property
    def padding(self) -> int:
        """Padded slots: ``num_groups * group_size - num_tokens``."""
        return self.num_groups * self.group_size - self.num_tokens


def plan_groups(counts: CountsLike, max_count: Optional[int] = None, *,
                group_size: Optional[int] = None) -> GroupPlan:
    """Optimal grouping of windows (Algorithm 1, full search over ``g``).

    Args:
        counts: ``(n,)`` integer visible-token count of every window, any order,
            zeros allowed (windows of all samples together).
        max_count: the largest valid count (``ws * ws``), checked if given.
        group_size: fix ``g`` instead of searching (the published code's plan uses
            ``g = min(ws^2, max_i w_i)``); must be ``>= max_i w_i``.

    Returns:
        The :class:`GroupPlan` of least ``cost(g, G)`` (ties: the smallest ``g``).

    Raises:
        ValueError: counts not 1-D integers, negative, above ``max_count``, or all zero.
    """
    array = _as_counts(counts, max_count)
    nonzero = np.flatnonzero(array)
    positive = array[nonzero]
    if group_size is not None and group_size < int(positive.max()):
        raise ValueError(
            f'group_size must be >= the largest window count {int(positive.max())}, '
            f'got {group_size}.')
    packing = _pack(positive, group_size)
    order = np.lexsort((packing.window_offset, packing.window_group))  # slot order
    bounds = np.cumsum(np.bincount(packing.window_group,
                                   minlength=packing.num_groups))[:-1]
    groups = [part.tolist() for part in np.split(nonzero[order], bounds)]
    return GroupPlan(packing.group_size, groups, packing.cost, int(positive.sum()))


# ----------------------------------------------------------------------------------
# Public API: visible tokens of a Swin stage -> gather/scatter plan
# ----------------------------------------------------------------------------------
@dataclass
class WindowGroupPlan:
    """Where every visible token goes in the ``(num_groups, group_size)`` buffer.

    An *attention window* is one (sample, local window, shift region) combination:
    tokens attend to each other iff they share one. With a cyclic shift, the shift
    regions of ShiftWindowMSA's ``get_attn_mask`` split the last window row/column,
    so the region mask becomes the window-id mask.

    Attributes:
        group_size: ``g``.
        num_groups: ``G``.
        token_slot: ``(B*N,)`` flat slot ``group * g + offset`` of every visible token,
            tokens flattened sample-major.
        slot_window: ``(G, g)`` attention-window id of each slot, -1 for padding.
        slot_pos: ``(G, g)`` position ``r * ws + c`` of the slot inside its (rolled)
            window, the row/column of the relative position index; 0 for padding.
        batch_size, num_tokens: ``B`` and ``N``.
        hw, window_size, shift: the stage geometry (``shift`` is the effective one).
        num_windows: attention windows holding at least one token.
        cost: ``cost(g, G)`` of the grouping.
    """
    group_size: int
    num_groups: int
    token_slot: Tensor
    slot_window: Tensor
    slot_pos: Tensor
    batch_size: int
    num_tokens: int
    hw: Tuple[int, int]
    window_size: int
    shift: int
    num_windows: int
    cost: float
    _cache: Dict[Any, Any] = field(default_factory=dict, init=False, repr=False,
                                   compare=False)

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

    def to(self, device: Union[str, torch.device]) -> 'WindowGroupPlan':
        """The same plan with its tensors on ``device`` (non-blocking copies)."""
        moved = {name: getattr(self, name).to(device, non_blocking=True)
                 for name in ('token_slot', 'slot_window', 'slot_pos')}
        return WindowGroupPlan(
            self.group_size, self.num_groups, batch_size=self.batch_size,
            num_tokens=self.num_tokens, hw=self.hw, window_size=self.window_size,
            shift=self.shift, num_windows=self.num_windows, cost=self.cost, **moved)

    def cached(self, key: Any, build: Callable[[], Any]) -> Any:
        """Memoise a derived tensor (masks, bias indices) on this plan."""
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]


def _check_geometry(coords: Tensor, hw: Tuple[int, int], window_size: int,
                    shift: int) -> np.ndarray:
    """Validate the inputs of :func:`plan_window_groups`; coords as int64 numpy."""
    if not isinstance(coords, Tensor) or coords.dim() != 3 or coords.shape[-1] != 2:
        raise ValueError(
            'coords must be a (B, N, 2) tensor of (row, col), got '
            f'{getattr(coords, "shape", type(coords))}.')
    if coords.dtype.is_floating_point or coords.dtype.is_complex \
            or coords.dtype == torch.bool:
        raise ValueError(f'coords must be an integer tensor, got {coords.dtype}.')
    if coords.shape[0] == 0 or coords.shape[1] == 0:
        raise ValueError(
            f'The visible set is empty (coords of shape {tuple(coords.shape)}): '
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
    array = coords.detach().cpu().numpy().astype(np.int64, copy=False)
    rows, cols = array[..., 0], array[..., 1]
    row_min, row_max, col_min, col_max = rows.min(), rows.max(), cols.min(), cols.max()
    if row_min < 0 or row_max >= height or col_min < 0 or col_max >= width:
        raise ValueError(
            f'coords must lie on the {height}x{width} map (0 <= row < {height}, '
            f'0 <= col < {width}), got rows in [{row_min}, {row_max}] and cols in '
            f'[{col_min}, {col_max}].')
    return array


def _window_key_tables(hw: Tuple[int, int], window_size: int,
                       shift: int) -> Tuple[np.ndarray, np.ndarray, int]:
    """``key = row_key[r] + col_key[c] = local_window * ws^2 + pos`` of a cell.

    ShiftWindowMSA pads the map at the bottom/right to multiples of ``ws``, rolls it
    by ``-shift`` and cuts ``ws x ws`` windows; with a shift, ``get_attn_mask``'s
    regions split the last window row/column. Those regions are exactly the windows
    of the *unrolled* map offset by ``ws - shift``: rows ``[0, s)`` and
    ``[H_pad - ws + s, H_pad)`` are the two regions of the last rolled window row
    (likewise columns). So a local window (an attention window of one sample) is
    ``(wr, wc) = ((r + ws - s) // ws, (c + ws - s) // ws)`` on a grid one larger
    when ``s > 0``, and ``pos = ((r - s) mod ws) * ws + (c - s) mod ws`` is the
    position in the rolled window, i.e. the row/column of the relative position
    index. The key ``(wr * grid_w + wc) * ws^2 + pos`` is a sum of a row and a
    column term.

    Returns:
        ``(row_key (H,), col_key (W,), windows_per_sample)``; keys are uint16 when
        they fit (numpy then sorts them with a radix sort).
    """
    height, width = hw
    ws = window_size
    offset = (ws - shift) % ws
    grid_h = -(-height // ws) + (shift > 0)
    grid_w = -(-width // ws) + (shift > 0)
    r, c = np.arange(height), np.arange(width)
    row_key = ((r + offset) // ws) * grid_w * ws * ws + ((r - shift) % ws) * ws  # H
    col_key = ((c + offset) // ws) * ws * ws + (c - shift) % ws  # W
    windows_per_sample = grid_h * grid_w
    if windows_per_sample * ws * ws <= 1 << 16:
        row_key, col_key = row_key.astype(np.uint16), col_key.astype(np.uint16)
    return row_key, col_key, windows_per_sample


def plan_window_groups(coords: Tensor, hw: Tuple[int, int], window_size: int,
                       shift: int) -> WindowGroupPlan:
    """Grouping plan of one (stage, shift) for visible tokens at ``coords``.

    Replicates ShiftWindowMSA (see :func:`_window_key_tables`): every (sample, window,
    shift region) is one attention window; the attention windows of all samples
    are packed together by the search of :func:`plan_groups`. Runs on the CPU
    (give it CPU coords, then ``.to(device)`` the plan), vectorised over tokens.

    Args:
        coords: ``(B, N, 2)`` integer (row, col) of the visible tokens, distinct
            within a sample, any order.
        hw: ``(H, W)`` of the feature map.
        window_size: ``ws``.
        shift: the *effective* shift (0 for W-MSA; the caller applies Swin's rule that
            it becomes 0 when the map is not larger than a window).

    Returns:
        The :class:`WindowGroupPlan`.

    Raises:
        ValueError: bad shapes, empty visible set, coords off the map or repeated,
            ``shift`` outside ``[0, ws)``.
    """
    array = _check_geometry(coords, hw, window_size, shift)
    batch, num_tokens = array.shape[:2]
    height, width = hw
    ws2 = window_size * window_size
    row_key, col_key, windows_per_sample = _window_key_tables(hw, window_size, shift)
    key = row_key[array[..., 0]]  # B, N
    key += col_key[array[..., 1]]
    # Sort the tokens of each sample by (window, pos): flat indices, sample-major.
    order = np.argsort(key, axis=1, kind='stable')  # B, N
    order += np.arange(0, batch * num_tokens, num_tokens)[:, None]
    order = order.reshape(-1)  # B*N
    sorted_key = key.reshape(-1)[order]  # B*N
    sorted_key_2d = sorted_key.reshape(batch, num_tokens)
    if (sorted_key_2d[:, 1:] == sorted_key_2d[:, :-1]).any():
        raise ValueError('coords must be distinct within each sample: a (row, col) '
                         'appears twice.')
    sample_base = np.arange(0, batch * windows_per_sample, windows_per_sample,
                            dtype=np.int64)[:, None]
    window_sorted = (sorted_key_2d // ws2 + sample_base).reshape(-1)  # B*N: window id
    counts = np.bincount(window_sorted, minlength=batch * windows_per_sample)  # B*nW
    window_start = (np.cumsum(counts.reshape(batch, -1), 1)
                    - counts.reshape(batch, -1)).reshape(-1)  # B*nW, first in sample

    nonzero = np.flatnonzero(counts)
    packing = _pack(counts[nonzero])
    g, num_groups = packing.group_size, packing.num_groups
    # Slot of a token = slot of its window's first token + its rank in the window,
    # rank = (index in the sorted sample) - window_start.
    slot_base = -window_start
    slot_base[nonzero] += packing.window_group * g + packing.window_offset
    slot_sorted = slot_base[window_sorted].reshape(batch, num_tokens)
    slot_sorted += np.arange(num_tokens)
    slot_sorted = slot_sorted.reshape(-1)  # B*N
    token_slot = np.empty(batch * num_tokens, dtype=np.int64)
    token_slot[order] = slot_sorted
    slot_window = np.full(num_groups * g, -1, dtype=np.int64)
    slot_window[slot_sorted] = window_sorted
    slot_pos = np.zeros(num_groups * g, dtype=np.int64)
    slot_pos[slot_sorted] = sorted_key % ws2
    return WindowGroupPlan(
        group_size=g, num_groups=num_groups,
        token_slot=torch.from_numpy(token_slot),  # B*N
        slot_window=torch.from_numpy(slot_window).view(num_groups, g),  # G, g
        slot_pos=torch.from_numpy(slot_pos).view(num_groups, g),  # G, g
        batch_size=batch, num_tokens=num_tokens, hw=(height, width),
        window_size=window_size, shift=shift, num_windows=len(nonzero),
        cost=packing.cost)


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
