"""Which documents each shard of a sharded build chunks, embeds and stores: disjoint, deterministic, balanced.

`KnowledgeBaseVersion.spec.build.parallelism: N` runs the build as an Indexed Job of N pods; pod
`i` (its completion index) is `Shard(i, N)`. Every shard reads the same sources into the same
documents (sorted by id, boilerplate removed over all of them), so every shard computes the same
assignment without talking to the others: largest first, each document to the share with the
fewest characters so far. Characters of cleaned text are what chunking and embedding cost grows with.

Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

MAX_SHARDS = 16
"""The most pods one build runs as (the KnowledgeBaseVersion schema's limit of spec.build.parallelism)."""


@dataclass(frozen=True)
class Shard:
    """Pod `index` of a build run by `count` pods."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 2 <= self.count <= MAX_SHARDS:
            raise ValueError(f"a sharded build has 2 to {MAX_SHARDS} shards, got {self.count}")
        if not 0 <= self.index < self.count:
            raise ValueError(f"shard index must be from 0 to {self.count - 1}, got {self.index}")


def assign_shares(sizes: Sequence[int], count: int) -> list[int]:
    """The share (0..count-1) of each item, given the items' sizes in listing order.

    Greedy longest-first: items by size descending (listing order among equals), each to the
    share with the smallest total (the lowest share among equals). No share ends more than the
    largest item above the mean.
    """
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    loads = [0] * count
    shares = [0] * len(sizes)
    for item in sorted(range(len(sizes)), key=lambda index: (-sizes[index], index)):
        target = min(range(count), key=lambda share: (loads[share], share))
        shares[item] = target
        loads[target] += max(sizes[item], 0)
    return shares
