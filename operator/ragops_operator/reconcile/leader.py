"""Leader election over a coordination.k8s.io Lease: who may reconcile, decided from the Lease alone.

Kopf's peering is not leader election: replicas of equal priority all pause (kopf/_core/engines/
peering.py), and it has no lock. So replicas compete for a Lease with the semantics of client-go's
leaderelection package: the holder renews `renewTime` well within `leaseDurationSeconds`; anyone
may take over a Lease whose holder has not renewed for that long (or released it); every write
carries the resourceVersion it read, so of two replicas racing for an expired Lease exactly one
wins (the apiserver refuses the other with 409). Pure: the caller reads the Lease, asks, writes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum


@dataclass(frozen=True)
class LeaseRecord:
    holder: str | None
    lease_seconds: int
    acquired_at: datetime | None
    renewed_at: datetime | None
    transitions: int = 0

    def expired(self, now: datetime) -> bool:
        if not self.holder or self.renewed_at is None:
            return True
        return now >= self.renewed_at + timedelta(seconds=self.lease_seconds)


class LeaseAction(StrEnum):
    CREATE = "Create"
    """No Lease exists: create it, held by us."""
    RENEW = "Renew"
    """We hold it: write a fresh renewTime."""
    TAKE_OVER = "TakeOver"
    """Another holder let it expire (or released it): write ourselves as holder."""
    STAND_BY = "StandBy"
    """Another holder is live: do nothing and ask again later."""


@dataclass(frozen=True)
class LeaseDecision:
    action: LeaseAction
    record: LeaseRecord | None
    """What to write (None when standing by)."""

    @property
    def leading(self) -> bool:
        """Whether the write, if it succeeds, makes (or keeps) us the leader."""
        return self.action is not LeaseAction.STAND_BY


def decide_lease(current: LeaseRecord | None, identity: str, lease_seconds: int, now: datetime) -> LeaseDecision:
    if current is None:
        return LeaseDecision(LeaseAction.CREATE, LeaseRecord(identity, lease_seconds, now, now, 0))
    if current.holder == identity:
        return LeaseDecision(LeaseAction.RENEW, replace(current, lease_seconds=lease_seconds, renewed_at=now))
    if current.expired(now):
        return LeaseDecision(
            LeaseAction.TAKE_OVER, LeaseRecord(identity, lease_seconds, now, now, current.transitions + 1)
        )
    return LeaseDecision(LeaseAction.STAND_BY, None)


def released(current: LeaseRecord, now: datetime) -> LeaseRecord:
    """The record a leader writes when it stops cleanly, so a standby takes over at once.

    As client-go's ReleaseOnCancel: no holder, and a one-second lease that is already over.
    """
    return replace(current, holder=None, lease_seconds=1, renewed_at=now - timedelta(seconds=1))


@dataclass(frozen=True)
class LeaseTiming:
    """client-go's defaults (15 s lease, 10 s renew deadline, 2 s retry) scaled to `lease_seconds`."""

    lease_seconds: int

    @property
    def retry_seconds(self) -> float:
        return max(self.lease_seconds / 7.5, 0.5)

    @property
    def renew_deadline_seconds(self) -> float:
        """A leader that could not renew for this long stops leading, before anyone may take over."""
        return self.lease_seconds * 2 / 3
