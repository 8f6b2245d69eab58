"""The SLO watch of a RagDeployment's live revision: judge a reading, count breaches, decide rollback and bake.

`judge` turns one Prometheus reading (`SloSample`) into a `SloCheck`; `advance` folds checks into a
`WatchState` (the consecutive-breach count); `decide_rollback` and `bake_complete` turn that state
into the two decisions a handler acts on; `to_measurement` and `state_from_measurement` carry the
state through `status.slo`, so the watch survives an operator restart (level-based, not in memory).

A handler runs, per check interval: sample -> `judge` -> `advance` -> `decide_rollback`, then, only
if it does not roll back, `bake_complete`. It starts a fresh `WatchState()` whenever the live
revision changes (a promotion or a rollback): breaches of one revision say nothing about the next.

This module must stay pure: no I/O, no logging, no clock (callers pass `now`), no Kopf, Kubernetes
client or HTTP imports. Reading Prometheus is `ragops_operator.prometheus`'s job.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Literal

from ragops_operator.api.conditions import Reason
from ragops_operator.api.ragdeployment import RolloutSpec, SloMeasurement, SloSpec


@dataclass(frozen=True)
class SloSample:
    """One Prometheus reading over the SLO window; a field is None when its series is absent (or 0/0)."""

    requests: float | None
    p95_latency_seconds: float | None
    error_ratio: float | None
    satisfaction: float | None
    cost_per_query_usd: float | None
    raters: float | None = None
    """Distinct raters of the window (the runtime's ragops_feedback_raters); None when unknown, which
    leaves satisfaction unjudged like too few raters (docs/design/feedback-and-client-identity.md)."""


class Verdict(StrEnum):
    MET = "Met"
    BREACHED = "Breached"
    INCONCLUSIVE = "Inconclusive"


@dataclass(frozen=True)
class SloCheck:
    """The verdict of one check. `breaches` reads like "p95LatencyMs=1830>1000", one per breached objective."""

    verdict: Verdict
    breaches: tuple[str, ...]
    reason: Reason
    """SLOMet, SLOBreached, SLOInconclusive or MetricsUnavailable: the SLOHealthy condition's reason."""
    message: str


@dataclass(frozen=True)
class _Objective:
    name: str
    """The SloMeasurement field's wire name, so messages match what `kubectl get -o yaml` shows."""
    limit: float
    ceiling: bool
    """True: the measured value must not exceed the limit; False: it must not fall below it."""

    def compare(self, measured: float) -> tuple[bool, str]:
        """Whether `measured` breaches the objective, and the comparison as the message shows it."""
        breached = measured > self.limit if self.ceiling else measured < self.limit
        if breached:
            sign = ">" if self.ceiling else "<"
        else:
            sign = "<=" if self.ceiling else ">="
        return breached, f"{self.name}={format_value(measured)}{sign}{format_value(self.limit)}"


def format_value(value: float) -> str:
    """A measured value or limit as messages show it."""
    # Six significant digits: 1833.33 ms, 0.0123 USD; never "19.6" shown as "20" next to a limit of 20.
    return f"{value:.6g}"


def _known(value: float | None) -> float | None:
    # NaN compares False against every limit, so it would pass silently as Met; it means "no data".
    return None if value is None or math.isnan(value) else value


def judge(sample: SloSample | None, slo: SloSpec) -> SloCheck:
    """The verdict of one reading against the objectives.

    Missing data is never a breach: an unreachable Prometheus is MetricsUnavailable, too little traffic
    (below `minRequests`, or no query series at all) is SLOInconclusive, and an objective whose series
    is absent is left out of the verdict and named in the message.
    """
    if sample is None:
        return SloCheck(
            verdict=Verdict.INCONCLUSIVE,
            breaches=(),
            reason=Reason.METRICS_UNAVAILABLE,
            message=f"Prometheus could not be queried, so the SLOs over {slo.window} were not checked",
        )
    requests = _known(sample.requests)
    if requests is None:
        return SloCheck(
            verdict=Verdict.INCONCLUSIVE,
            breaches=(),
            reason=Reason.SLO_INCONCLUSIVE,
            message=f"no query series over {slo.window} (is the runtime scraped?); too little traffic to judge",
        )
    if requests < slo.min_requests:
        return SloCheck(
            verdict=Verdict.INCONCLUSIVE,
            breaches=(),
            reason=Reason.SLO_INCONCLUSIVE,
            message=f"{format_value(requests)} requests < minRequests {slo.min_requests} over {slo.window}; "
            "too little traffic to judge",
        )

    p95_seconds = _known(sample.p95_latency_seconds)
    satisfaction = _known(sample.satisfaction)
    too_few_raters = _too_few_raters(sample, slo) if satisfaction is not None else None
    readings = (
        (_Objective("p95LatencyMs", slo.p95_latency_ms, True), None if p95_seconds is None else p95_seconds * 1000),
        (_Objective("errorRate", slo.max_error_rate, True), _known(sample.error_ratio)),
        (_Objective("satisfaction", slo.min_satisfaction, False), None if too_few_raters else satisfaction),
        (_Objective("costPerQueryUsd", slo.max_cost_per_query_usd, True), _known(sample.cost_per_query_usd)),
    )
    compared = [objective.compare(value) for objective, value in readings if value is not None]
    unmeasured = [
        # Feedback is optional for users, so a window without any is normal, not a gap in the metrics.
        f"satisfaction not judged: {too_few_raters or 'no feedback in the window'}"
        if objective.name == "satisfaction"
        else f"{objective.name} not judged: no data in the window"
        for objective, value in readings
        if value is None
    ]
    scope = f"over {slo.window} ({format_value(requests)} requests)"
    if not compared:
        return SloCheck(
            verdict=Verdict.INCONCLUSIVE,
            breaches=(),
            reason=Reason.SLO_INCONCLUSIVE,
            message=f"no objective could be measured {scope}; " + "; ".join(unmeasured),
        )

    breaches = tuple(text for breached, text in compared if breached)
    met = [text for breached, text in compared if not breached]
    if breaches:
        parts = [f"{len(breaches)} of {len(compared)} objectives breached {scope}: {', '.join(breaches)}"]
        if met:
            parts.append(f"met: {', '.join(met)}")
        return SloCheck(
            verdict=Verdict.BREACHED,
            breaches=breaches,
            reason=Reason.SLO_BREACHED,
            message="; ".join(parts + unmeasured),
        )
    return SloCheck(
        verdict=Verdict.MET,
        breaches=(),
        reason=Reason.SLO_MET,
        message="; ".join(
            [f"all {'measured ' if unmeasured else ''}objectives met {scope}: {', '.join(met)}", *unmeasured]
        ),
    )


def _too_few_raters(sample: SloSample, slo: SloSpec) -> str | None:
    """Why the window's ratings are too few voices to judge satisfaction on, or None when they are enough.

    Ratings are one per (answer, rater), but one rater can still rate many answers: without a
    minimum of distinct raters, one client could rate a revision into a rollback (issue 16, item 9).
    """
    if slo.min_raters == 0:
        return None
    raters = _known(sample.raters)
    if raters is None:
        return (
            f"the number of distinct raters is unknown (no ragops_feedback_raters series), minRaters {slo.min_raters}"
        )
    if raters < slo.min_raters:
        return f"{format_value(raters)} distinct raters < minRaters {slo.min_raters}"
    return None


@dataclass(frozen=True)
class WatchState:
    """What the watch remembers between checks of one revision; `WatchState()` starts a revision's watch."""

    consecutive_breaches: int = 0
    last_check: SloCheck | None = None


def advance(state: WatchState, check: SloCheck) -> WatchState:
    """Folds one check into the state: Breached counts up, Met resets to 0, Inconclusive keeps the count.

    Inconclusive is neither a breach nor evidence of health. Resetting on it would let a revision
    that breaches every time it has traffic, with quiet windows (or Prometheus hiccups) in between,
    never reach the threshold; counting it would roll back a healthy revision because the night was
    quiet or Prometheus was restarted. So the count waits for the next conclusive check.
    """
    if check.verdict is Verdict.BREACHED:
        count = state.consecutive_breaches + 1
    elif check.verdict is Verdict.MET:
        count = 0
    else:
        count = state.consecutive_breaches
    return WatchState(consecutive_breaches=count, last_check=check)


@dataclass(frozen=True)
class RollbackDecision:
    roll_back: bool
    reason: Reason
    message: str


def rollback_threshold(slo: SloSpec, *, baking: bool) -> int:
    """Consecutive breaches that fail a revision: `failureThreshold`, or half of it (rounded up) during bake.

    During bake the new revision is the likeliest cause of a breach, and the last known-good revision
    is a recent, proven fallback, so acting on less evidence costs little and shortens the outage.
    Rounding up and the floor of 1 keep a threshold of 1 at 1 and never make bake laxer than after it.
    """
    if baking:
        return max(1, math.ceil(slo.failure_threshold / 2))
    return slo.failure_threshold


def decide_rollback(
    state: WatchState,
    slo: SloSpec,
    rollout: RolloutSpec,
    *,
    baking: bool,
    has_known_good: bool,
    current_revision_rolled_back: bool,
) -> RollbackDecision:
    """Whether to roll the live revision back to the last known-good one now.

    Below the threshold the reason is the last check's, so the caller can show it as is. At or above
    it, in this order: autoRollback off reports only (RollbackDisabled); a live revision that is itself
    the result of a rollback is not rolled back again, since its known-good predecessor now breaches
    too and bouncing between revisions would only add churn (the operator reports Degraded and waits
    for a spec change); without a known-good revision there is nothing to return to.
    """
    threshold = rollback_threshold(slo, baking=baking)
    phase = "during bake" if baking else "after bake"
    count = state.consecutive_breaches
    last = state.last_check
    if count < threshold:
        return RollbackDecision(
            roll_back=False,
            reason=last.reason if last is not None else Reason.SLO_INCONCLUSIVE,
            message=f"{count} consecutive breached checks < threshold {threshold} {phase}; no rollback",
        )

    failing = f"{count} consecutive breached checks >= threshold {threshold} {phase}"
    if last is not None and last.breaches:
        failing += f" (last: {', '.join(last.breaches)})"
    if not rollout.auto_rollback:
        return RollbackDecision(
            roll_back=False,
            reason=Reason.ROLLBACK_DISABLED,
            message=f"{failing}; autoRollback is off, so the breach is reported only",
        )
    if current_revision_rolled_back:
        return RollbackDecision(
            roll_back=False,
            reason=Reason.SLO_BREACHED,
            message=f"{failing}; the live revision is already the result of a rollback, so it is not rolled "
            "back again (no rollback loops): Degraded until the spec changes",
        )
    if not has_known_good:
        return RollbackDecision(
            roll_back=False,
            reason=Reason.SLO_BREACHED,
            message=f"{failing}; there is no known-good revision to return to: Degraded until the spec changes",
        )
    return RollbackDecision(
        roll_back=True,
        reason=Reason.ROLLED_BACK,
        message=f"{failing}; rolling back to the last known-good revision",
    )


def bake_complete(promoted_at: datetime, bake_time: timedelta, now: datetime, state: WatchState) -> bool:
    """True once `bake_time` has passed since promotion and the last check was not Breached.

    An inconclusive bake (no traffic, or Prometheus unreachable) still completes. Argo Rollouts'
    analysis would stall such a rollout forever, but a low-traffic service must still move on; the
    SLO watch goes on after bake with the normal threshold, so a later breach is still acted upon.
    A revision never checked at all (no Prometheus configured) completes on time alone. Pass
    timezone-aware datetimes: comparing aware and naive ones raises.
    """
    if now - promoted_at < bake_time:
        return False
    return state.last_check is None or state.last_check.verdict is not Verdict.BREACHED


_VERDICTS: dict[Verdict, Literal["Met", "Breached", "Inconclusive"]] = {
    Verdict.MET: "Met",
    Verdict.BREACHED: "Breached",
    Verdict.INCONCLUSIVE: "Inconclusive",
}
_REASON_OF_VERDICT = {
    Verdict.MET: Reason.SLO_MET,
    Verdict.BREACHED: Reason.SLO_BREACHED,
    Verdict.INCONCLUSIVE: Reason.SLO_INCONCLUSIVE,
}


def to_measurement(state: WatchState, sample: SloSample | None, *, checked_at: datetime) -> SloMeasurement:
    """`status.slo` after a check: the state returned by `advance` and the sample that was judged."""
    if state.last_check is None:
        raise ValueError("to_measurement needs the state returned by advance(), which holds the check")
    p95 = None if sample is None else _known(sample.p95_latency_seconds)
    return SloMeasurement(
        verdict=_VERDICTS[state.last_check.verdict],
        requests=None if sample is None else _known(sample.requests),
        p95_latency_ms=None if p95 is None else p95 * 1000,
        error_rate=None if sample is None else _known(sample.error_ratio),
        satisfaction=None if sample is None else _known(sample.satisfaction),
        raters=None if sample is None else _known(sample.raters),
        cost_per_query_usd=None if sample is None else _known(sample.cost_per_query_usd),
        consecutive_breaches=state.consecutive_breaches,
        checked_at=checked_at,
    )


def state_from_measurement(measured: SloMeasurement | None) -> WatchState:
    """The watch state recorded in `status.slo`, for the first check after an operator restart.

    The status keeps the verdict and the count, not the breaches or the exact reason, so the restored
    check carries the verdict's generic reason; that is all `advance`, `decide_rollback` and
    `bake_complete` read.
    """
    if measured is None:
        return WatchState()
    verdict = Verdict(measured.verdict)
    check = SloCheck(
        verdict=verdict,
        breaches=(),
        reason=_REASON_OF_VERDICT[verdict],
        message=f"restored from status.slo checked at {measured.checked_at.isoformat()}",
    )
    return WatchState(consecutive_breaches=measured.consecutive_breaches, last_check=check)
