"""Which documents each shard of a sharded build takes: disjoint, covering, deterministic, balanced."""

from __future__ import annotations

import random

import pytest

from ragops_runtime.kb.sharding import MAX_SHARDS, Shard, assign_shares


@pytest.mark.parametrize(
    ("sizes", "count", "expected"),
    [
        ([], 3, []),
        ([5], 3, [0]),
        ([1, 1, 1, 1], 2, [0, 1, 0, 1]),  # equal sizes: listing order, lowest share first
        ([10, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1], 2, [0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]),  # the big one alone
        ([3, 9, 4], 3, [2, 0, 1]),
        ([7, 7], 1, [0, 0]),
    ],
)
def test_assign_shares_table(sizes: list[int], count: int, expected: list[int]) -> None:
    assert assign_shares(sizes, count) == expected


def test_shares_are_balanced_within_the_largest_item() -> None:
    rng = random.Random(7)
    for count in (2, 3, 4, 16):
        sizes = [rng.randint(1, 50_000) for _ in range(500)]
        shares = assign_shares(sizes, count)
        assert shares == assign_shares(list(sizes), count)  # deterministic
        loads = [sum(size for size, share in zip(sizes, shares, strict=True) if share == s) for s in range(count)]
        assert sum(loads) == sum(sizes)
        assert max(loads) - sum(sizes) / count <= max(sizes)


@pytest.mark.parametrize(("index", "count"), [(0, 1), (0, MAX_SHARDS + 1), (3, 3), (-1, 2)])
def test_a_shard_outside_its_range_is_refused(index: int, count: int) -> None:
    with pytest.raises(ValueError, match="shard"):
        Shard(index, count)


def test_assign_shares_needs_a_share() -> None:
    with pytest.raises(ValueError, match="count"):
        assign_shares([1], 0)
