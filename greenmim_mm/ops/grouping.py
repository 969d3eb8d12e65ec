"""Optimal grouping of local windows (Algorithm 1 of GreenMIM), on window counts.

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

**A bound for static shapes.** With ``g`` fixed, the fill never needs more than
``ceil(2 T / g)`` groups (:func:`group_capacity`): a window left for a later group
did not fit beside group ``k`` (``total_k + w > g``, else the knapsack of group ``k``
was not maximal), so once some group is at most half full, every later window is more
than half a group and every later group holds exactly one such window; at most one
group is therefore at most half full, and fewer than ``2 T / g`` groups are more than
half full.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
from torch import Tensor

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


def group_capacity(num_tokens: int, group_size: int, max_windows: Optional[int] = None,
                   slack: Optional[float] = None) -> int:
    """Groups to allocate for ``num_tokens`` tokens in groups of ``group_size``.

    Without ``slack``: the guaranteed bound ``ceil(2 T / g)`` of the module doc (or
    ``max_windows``, the number of windows that can be non-empty, if smaller), which
    every mask fits. With ``slack``: ``ceil(T / g) * (1 + slack) + 1``, what random masks
    need in practice (the fill wastes 0-0.3 % for the stock geometries), capped by
    that bound; a batch that does not fit falls back to the bound.
    """
    least = -(-num_tokens // group_size)  # ceil(T / g)
    bound = -(-2 * num_tokens // group_size)
    if max_windows is not None:
        bound = min(bound, max_windows)
    if slack is None:
        return bound
    return min(bound, int(least * (1.0 + slack)) + 1)
