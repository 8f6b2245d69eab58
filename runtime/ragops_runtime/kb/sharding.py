"""Which units of the sources each shard of a sharded build reads: disjoint, deterministic, balanced.

`KnowledgeBaseVersion.spec.build.parallelism: N` runs the build as an Indexed Job of N pods; pod
`i` (its completion index) is `Shard(i, N)`. Every shard lists the same units (files and URLs, in
source order) with the same sizes, so every shard computes the same assignment without talking
to the others: largest first, each unit to the slice with the fewest bytes so far. Sizes are the
bytes on disk, a fair proxy for the text to chunk and embed; a URL counts as nothing (its size is
unknown before fetching), so URLs spread over the emptiest slices.

Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

MAX_SHARDS = 64
"""The most pods one build runs as (the KnowledgeBaseVersion schema's limit too)."""


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


def assign_slices(sizes: Sequence[int], count: int) -> list[int]:
    """The slice (0..count-1) of each unit, given the units' sizes in listing order.

    Greedy longest-first: units by size descending (listing order among equals), each to the
    slice with the fewest bytes (the lowest slice among equals). No slice ends more than the
    largest unit above the mean.
    """
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    loads = [0] * count
    slices = [0] * len(sizes)
    for unit in sorted(range(len(sizes)), key=lambda index: (-sizes[index], index)):
        target = min(range(count), key=lambda slice_number: (loads[slice_number], slice_number))
        slices[unit] = target
        loads[target] += max(sizes[unit], 0)
    return slices
