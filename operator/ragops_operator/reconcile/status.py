"""Status transactions: pure updates of `status.conditions` shaped like metav1.Condition.

A condition's lastTransitionTime moves only when its status changes, so a reconcile loop that
re-asserts the same state every pass does not churn the object (and GitOps tools watching it
do not see perpetual changes). No I/O and no clock: callers pass `now`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from ..api.common import Condition, ConditionStatus
from ..api.conditions import Reason


def set_condition(
    conditions: Sequence[Condition],
    *,
    type: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    observed_generation: int,
    now: datetime,
) -> list[Condition]:
    """`conditions` with `type` set; the transition time is kept unless the status changed."""
    previous = next((c for c in conditions if c.type == type), None)
    transition = previous.last_transition_time if previous is not None and previous.status == status else now
    updated = Condition(
        type=type,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=transition,
        observed_generation=observed_generation,
    )
    return [updated if c.type == type else c for c in conditions] if previous else [*conditions, updated]


def condition(conditions: Sequence[Condition], type: str) -> Condition | None:
    return next((c for c in conditions if c.type == type), None)


def is_true(conditions: Sequence[Condition], type: str) -> bool:
    found = condition(conditions, type)
    return found is not None and found.status == "True"


def refusal_reported(conditions: Sequence[Condition], type: str, generation: int, message: str | None = None) -> bool:
    """Whether this generation's spec was already refused (reason InvalidSpec on `type`).

    A refused spec is reported once: no further pass (nor Event) until the spec changes, which
    moves metadata.generation past the condition's observedGeneration. `message` narrows it to
    the same refusal.
    """
    found = condition(conditions, type)
    return (
        found is not None
        and found.status == "False"
        and found.reason == Reason.INVALID_SPEC
        and found.observed_generation == generation
        and (message is None or found.message == message)
    )
