"""Leader election decisions: who leads, read from the Lease alone (client-go's semantics)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ragops_operator.reconcile.leader import LeaseAction, LeaseRecord, LeaseTiming, decide_lease, released

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def held_by(
    holder: str | None, renewed_seconds_ago: float, lease_seconds: int = 15, transitions: int = 2
) -> LeaseRecord:
    renewed = NOW - timedelta(seconds=renewed_seconds_ago)
    return LeaseRecord(holder, lease_seconds, renewed - timedelta(minutes=5), renewed, transitions)


@pytest.mark.parametrize(
    ("case", "current", "action", "holder", "transitions"),
    [
        ("no lease yet: create it", None, LeaseAction.CREATE, "a", 0),
        ("ours: renew", held_by("a", 3), LeaseAction.RENEW, "a", 2),
        ("ours even if late: renew, nobody took it", held_by("a", 60), LeaseAction.RENEW, "a", 2),
        ("another's, live: stand by", held_by("b", 14.9), LeaseAction.STAND_BY, None, None),
        ("another's, expired: take over", held_by("b", 15), LeaseAction.TAKE_OVER, "a", 3),
        ("released (no holder): take over at once", held_by(None, 0), LeaseAction.TAKE_OVER, "a", 3),
    ],
)
def test_decide_lease(
    case: str, current: LeaseRecord | None, action: LeaseAction, holder: str | None, transitions: int | None
) -> None:
    decision = decide_lease(current, "a", 15, NOW)
    assert decision.action is action, case
    assert decision.leading is (action is not LeaseAction.STAND_BY)
    if holder is None:
        assert decision.record is None
        return
    assert decision.record is not None
    assert (decision.record.holder, decision.record.transitions, decision.record.renewed_at) == (
        holder,
        transitions,
        NOW,
    )
    if action is LeaseAction.RENEW:
        assert decision.record.acquired_at == current.acquired_at if current else False  # acquisition kept
    else:
        assert decision.record.acquired_at == NOW


def test_a_released_lease_is_free_at_once_for_anyone() -> None:
    free = released(held_by("a", 1), NOW)
    assert free.holder is None and free.expired(NOW)
    assert decide_lease(free, "b", 15, NOW).action is LeaseAction.TAKE_OVER


def test_a_leader_gives_up_before_anyone_may_take_over() -> None:
    """The renew deadline ends before the lease does, so two replicas never both believe they lead."""
    for lease_seconds in (2, 4, 15, 60):
        timing = LeaseTiming(lease_seconds)
        assert timing.retry_seconds < timing.renew_deadline_seconds < lease_seconds
