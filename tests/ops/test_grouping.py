"""Optimal grouping (Algorithm 1) and the window gather plan."""
import itertools
from typing import Iterator, List, Sequence, Tuple

import numpy as np
import pytest
import torch

from greenmim_mm.ops.grouping import (GROUP_COST, SLOT_COST, _search, _value_classes,
                                      group_cost, plan_groups)


# ----------------------------------------------------------------------------------
# Literal references
# ----------------------------------------------------------------------------------
def literal_fill(counts: Sequence[int], g: int) -> List[List[int]]:
    """One group at a time, each the best subset by brute force.

    Best = largest total <= g, ties broken towards the lexicographically largest
    decreasing sequence of counts; windows of one count by increasing index; a group
    lists its windows by (count desc, index asc).
    """
    remaining = [i for i, c in enumerate(counts) if c > 0]
    groups = []
    while remaining:
        best = None
        for size in range(1, len(remaining) + 1):
            for subset in itertools.combinations(remaining, size):
                total = sum(counts[i] for i in subset)
                if total <= g:
                    key = (total, tuple(sorted((counts[i] for i in subset),
                                               reverse=True)))
                    best = key if best is None or key > best else best
        group = []
        for value in best[1]:  # lowest index of that count not taken yet
            group.append(next(i for i in remaining
                              if counts[i] == value and i not in group))
        groups.append(group)
        remaining = [i for i in remaining if i not in group]
    return groups


def fill_groups(counts: Sequence[int], g: int) -> List[List[int]]:
    """The fill of the implementation at a fixed ``g`` (``plan_groups(group_size=g)``)."""
    return plan_groups(counts, group_size=g).groups


def published_knapsack(capacity: int, weights: Sequence[int]) -> Tuple[int, List[int]]:
    """The 0/1 knapsack of the published code (item-wise DP table)."""
    n = len(weights)
    table = [[0] * (capacity + 1) for _ in range(n + 1)]
    for i in range(1, n + 1):
        for w in range(1, capacity + 1):
            table[i][w] = table[i - 1][w]
            if weights[i - 1] <= w:
                table[i][w] = max(table[i][w],
                                  weights[i - 1] + table[i - 1][w - weights[i - 1]])
    res, w, chosen = table[n][capacity], capacity, []
    for i in range(n, 0, -1):
        if res <= 0:
            break
        if res != table[i - 1][w]:
            chosen.append(i - 1)
            res -= weights[i - 1]
            w -= weights[i - 1]
    return table[n][capacity], chosen[::-1]


def published_num_groups(counts: Sequence[int], g: int) -> int:
    weights = [c for c in counts if c > 0]
    num_groups = 0
    while weights:
        _, chosen = published_knapsack(g, weights)
        weights = [w for i, w in enumerate(weights) if i not in chosen]
        num_groups += 1
    return num_groups


def set_partitions(items: Sequence[int]) -> Iterator[List[List[int]]]:
    """Every partition of ``items`` into non-empty groups (Bell(n) of them)."""
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for partition in set_partitions(rest):
        yield [[first]] + partition
        for i in range(len(partition)):
            yield partition[:i] + [[first] + partition[i]] + partition[i + 1:]


def optimal_cost(counts: Sequence[int], slot_cost: int = SLOT_COST,
                 fixed_cost: int = GROUP_COST) -> int:
    """The least cost over ALL partitions of the non-empty windows, from the
    definition: ``G`` groups of one size ``g`` cost ``G * (g^2 + a g + b)``, and a
    partition needs ``g`` >= its largest group total (larger ``g`` only costs more)."""
    best = None
    for partition in set_partitions([c for c in counts if c > 0]):
        g = max(sum(group) for group in partition)
        cost = len(partition) * (g * g + slot_cost * g + fixed_cost)
        best = cost if best is None or cost < best else best
    return best


def random_counts(rng: np.random.Generator, n: int, high: int) -> List[int]:
    return rng.integers(0, high + 1, size=n).tolist()


# ----------------------------------------------------------------------------------
# plan_groups
# ----------------------------------------------------------------------------------
def check_partition(counts, plan):
    counts = np.asarray(counts)
    placed = sorted(i for group in plan.groups for i in group)
    assert placed == np.flatnonzero(counts).tolist()  # each non-empty window once
    assert all(counts[group].sum() <= plan.group_size for group in plan.groups)
    assert plan.cost == group_cost(plan.group_size, len(plan.groups))
    assert plan.num_tokens == counts.sum()


def test_plan_groups_partition_and_cost():
    rng = np.random.default_rng(0)
    for _ in range(20):
        counts = random_counts(rng, int(rng.integers(1, 60)), 49)
        if not any(counts):
            continue
        check_partition(counts, plan_groups(counts, max_count=49))


def test_fill_equals_literal_one_group_at_a_time():
    rng = np.random.default_rng(1)
    for _ in range(60):
        counts = random_counts(rng, int(rng.integers(1, 10)), 9)
        if not any(counts):
            continue
        for g in range(max(counts), max(counts) + 6):
            assert fill_groups(counts, g) == literal_fill(counts, g)


def test_fill_repeats_patterns_like_literal_on_many_windows():
    # Few distinct counts, many copies: the repetition lemma does the work.
    counts = [5, 3, 3, 2, 5, 1, 3, 2, 2, 5, 1, 4]
    for g in (5, 6, 7, 9):
        assert fill_groups(counts, g) == literal_fill(counts, g)
    plan = plan_groups(counts)
    assert plan.groups[0] == literal_fill(counts, plan.group_size)[0]


def test_plan_is_optimal_over_all_partitions():
    """Algorithm 1 (a knapsack fill per g, every g) reaches the least cost over all
    partitions, for random multisets of up to 9 windows of counts up to ws^2."""
    rng = np.random.default_rng(2)
    for _ in range(100):
        counts = random_counts(rng, int(rng.integers(1, 10)), int(rng.choice([4, 9, 49])))
        if not any(counts):
            continue
        plan = plan_groups(counts)
        check_partition(counts, plan)
        assert plan.cost == optimal_cost(counts), counts


@pytest.mark.parametrize('slot_cost,fixed_cost', [(0, 0), (1, 40), (3, 500)])
def test_pruned_search_is_optimal_for_other_costs(slot_cost, fixed_cost):
    """The pruning (module doc) stays exact for other cost constants."""
    rng = np.random.default_rng(3)
    for _ in range(15):
        counts = [c for c in random_counts(rng, int(rng.integers(1, 9)), 12) if c]
        if not counts:
            continue
        values, mults = _value_classes(np.asarray(counts))
        cost = _search(values, mults, slot_cost, fixed_cost)[2]
        assert cost == optimal_cost(counts, slot_cost, fixed_cost), counts


def test_search_takes_a_larger_group_when_it_pays():
    # g = 5 needs three groups (75 + 15); g = 6 packs 3 + 3 together (2 * 42).
    plan = plan_groups([5, 3, 3])
    assert plan.group_size == 6 and sorted(map(sorted, plan.groups)) == [[0], [1, 2]]


def test_never_costlier_than_published_or_one_window_per_group():
    rng = np.random.default_rng(3)
    ws2 = 16
    for _ in range(25):
        counts = random_counts(rng, int(rng.integers(1, 14)), ws2)
        if not any(counts):
            continue
        plan = plan_groups(counts, max_count=ws2)
        g_pub = min(ws2, max(counts))
        assert plan.cost <= group_cost(g_pub, published_num_groups(counts, g_pub))
        assert plan.cost <= group_cost(max(counts), int(np.count_nonzero(counts)))


def test_fixed_group_size_and_input_types():
    counts = np.array([0, 4, 4, 1, 0, 3])
    plan = plan_groups(torch.from_numpy(counts), group_size=8)
    assert plan.group_size == 8
    check_partition(counts, plan)
    assert plan_groups(counts.tolist()).groups == plan_groups(counts).groups
    with pytest.raises(ValueError, match='group_size must be >= the largest'):
        plan_groups(counts, group_size=3)


def test_large_batch_is_packed_tightly():
    rng = np.random.default_rng(4)
    counts = rng.integers(0, 50, size=8192)
    plan = plan_groups(counts, max_count=49)
    check_partition(counts, plan)
    assert plan.group_size == 49 and plan.padding <= 0.02 * plan.num_tokens


@pytest.mark.parametrize('counts,message', [
    ([3, -1, 2], 'must be >= 0'),
    ([3, 50, 2], 'at most max_count'),
    ([[1, 2]], '1-D'),
    ([1.5, 2.0], 'integers'),
    ([0, 0, 0], 'visible set is empty'),
    ([], 'visible set is empty'),
])
def test_plan_groups_bad_input(counts, message):
    with pytest.raises(ValueError, match=message):
        plan_groups(np.asarray(counts), max_count=49)
