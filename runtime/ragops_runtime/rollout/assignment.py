"""Which version answers a query: a pure, sticky assignment of clients to stable or canary.

A client's bucket is a hash of the step's `split_id` and the client's key, so every replica puts a
client in the same bucket without sharing state, the client keeps its version for the whole step
(a conversation never flips between versions), and a new step (a new `split_id`) reshuffles who
is in the canary, so the same few clients do not carry every candidate. Pure: no I/O, no clock.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from typing import Literal

from ..store import ProbePlan, VersionRecord

Role = Literal["stable", "canary"]
BUCKETS = 10_000
"""Hundredths of a percent: a weight of 1 % is 100 buckets."""


def bucket(*parts: str) -> int:
    """A uniform bucket in [0, BUCKETS) for `parts`, the same in every process (sha256, not hash())."""
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def assign(split_id: str | None, weight: int, client_key: str) -> Role:
    """`canary` for `weight` percent of client keys, the same ones for the life of `split_id`."""
    if split_id is None or weight <= 0:
        return "stable"
    return "canary" if bucket(split_id, client_key) < weight * 100 else "stable"


def mirrors(split_id: str | None, shadow_percent: float, query_id: uuid.UUID) -> bool:
    """Whether a query stable answered is also retrieved on the candidate (never shown).

    Keyed by the query, not the client: shadowing costs the user nothing, and a sample of queries
    is not skewed towards the clients that ask most. Independent of `assign` (another salt).
    """
    if split_id is None or shadow_percent <= 0:
        return False
    return bucket("shadow", split_id, str(query_id)) < shadow_percent * 100


@dataclass(frozen=True)
class ServedSplit:
    """The split a replica applies: the version records, not just their names (each has its own space)."""

    stable: VersionRecord | None
    canary: VersionRecord | None = None
    canary_weight: int = 0
    shadow_percent: float = 0.0
    split_id: str | None = None
    probe: ProbePlan | None = None

    def route(self, client_key: str) -> tuple[Role, VersionRecord]:
        """The role and version that answer `client_key`; stable when there is no candidate."""
        assert self.stable is not None, "route() needs a stable version"
        if self.canary is not None and assign(self.split_id, self.canary_weight, client_key) == "canary":
            return "canary", self.canary
        return "stable", self.stable

    def mirrors(self, query_id: uuid.UUID) -> VersionRecord | None:
        """The candidate to shadow a stable-served query on, or None."""
        if self.canary is not None and mirrors(self.split_id, self.shadow_percent, query_id):
            return self.canary
        return None

    @property
    def versions(self) -> tuple[str, ...]:
        return tuple(record.version for record in (self.stable, self.canary) if record is not None)
