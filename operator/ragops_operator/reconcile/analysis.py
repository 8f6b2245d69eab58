"""Relative analysis of a rollout: the candidate against the stable version, in the same window.

One Prometheus reading (`AnalysisReading`: per version, user queries, golden probes and shadow
comparisons over the same range) becomes one `AnalysisVerdict`: a row per objective, each Pass,
Fail or Inconclusive. The comparisons are like with like: user traffic with user traffic, probes
with probes. Too little data is Inconclusive, never Pass and never Fail; so is a difference
beyond the limit that is not yet statistically significant (for the rates, a one-sided test at
95 %), which keeps a handful of unlucky queries from aborting a good candidate while the data
that would show it accumulates.

Where a rollout goes from here (abort after failures, wait on inconclusive checks) is the step
machine's business (`reconcile.progressive`). This module must stay pure: no I/O, no clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from ragops_operator.api.rollout import AnalysisSpec, AnalysisVerdict, ObjectiveResult

from .slo import SloSample, format_value

Z_95_ONE_SIDED = 1.6448536269514722
UNQUERIED = "Prometheus could not be queried"
"""How a check made without a reading begins (the rollout tells an outage's start and end by it)."""
COST_TOLERANCE_USD = 1e-6
"""Cost differences below a millionth of a dollar per query never fail the cost ratio (0 vs 0.0000001)."""


Source = Literal["user", "probe", "shadow"]


@dataclass(frozen=True)
class TrafficReading:
    """One version's queries of one kind (user or probe) over the window; None: the series is absent."""

    requests: float | None = None
    errors: float | None = None
    p95_seconds: float | None = None
    cost_usd: float | None = None
    rating_sum: float | None = None
    ratings: float | None = None
    raters: float | None = None
    """Distinct raters of this version's answers in the runtime's feedback window (ragops_feedback_raters)."""


@dataclass(frozen=True)
class Proportion:
    """Successes out of trials, e.g. golden probes whose top k held a relevant document."""

    successes: float
    trials: float

    @property
    def rate(self) -> float | None:
        return self.successes / self.trials if self.trials > 0 else None


@dataclass(frozen=True)
class ShadowReading:
    """The candidate's shadow retrievals: overlap with stable's results, and how many failed."""

    overlap_sum: float | None = None
    comparisons: float | None = None
    """Completed shadow retrievals (ok or empty), each observed in the overlap histogram."""
    errors: float = 0.0
    """Shadow retrievals that failed: no result in common with stable's, so they count as overlap 0."""
    dropped: float = 0.0
    """Shadow retrievals not run because the runtime was saturated (not evidence either way)."""


@dataclass(frozen=True)
class AnalysisReading:
    """Everything one check compares, read over one window ending now."""

    window_seconds: float
    stable: TrafficReading = field(default_factory=TrafficReading)
    canary: TrafficReading = field(default_factory=TrafficReading)
    stable_probes: TrafficReading = field(default_factory=TrafficReading)
    canary_probes: TrafficReading = field(default_factory=TrafficReading)
    stable_recall: Proportion | None = None
    canary_recall: Proportion | None = None
    shadow: ShadowReading = field(default_factory=ShadowReading)

    def canary_slo_sample(self) -> SloSample:
        """The candidate's own user traffic as the absolute SLO watch reads it."""
        return slo_sample(self.canary)


def slo_sample(reading: TrafficReading) -> SloSample:
    """A version's user traffic as the absolute SLO judge reads it (`reconcile.slo.judge`)."""
    requests = _known(reading.requests)
    per_query = requests if requests is not None and requests > 0 else None
    ratings = _known(reading.ratings)
    return SloSample(
        requests=requests,
        p95_latency_seconds=reading.p95_seconds,
        error_ratio=None if per_query is None else (reading.errors or 0.0) / per_query,
        satisfaction=None
        if reading.rating_sum is None or ratings is None or ratings <= 0
        else reading.rating_sum / ratings,
        cost_per_query_usd=None if per_query is None or reading.cost_usd is None else reading.cost_usd / per_query,
        raters=reading.raters,
    )


@dataclass(frozen=True)
class Applicable:
    """What the current step can be judged on."""

    user_traffic: bool
    """The candidate answers users (weight > 0)."""
    shadow: bool
    """Stable's queries are mirrored to the candidate (shadow percent > 0)."""
    probes: bool
    """Probes run on both versions."""
    golden_probes: bool
    """The probes come from a golden set, so recall is measured."""


@dataclass(frozen=True)
class Objective:
    name: str
    source: Source | None
    stable: float | None
    canary: float | None
    limit: str
    verdict: AnalysisVerdict
    required: bool
    """An inconclusive required objective makes the whole check inconclusive; an optional one is only noted."""
    samples: str = ""
    message: str = ""

    def to_status(self) -> ObjectiveResult:
        return ObjectiveResult(
            name=self.name,
            source=self.source,
            stable=self.stable,
            canary=self.canary,
            limit=self.limit,
            verdict=self.verdict,
            samples=self.samples,
            message=self.message,
        )

    def describe(self) -> str:
        values = f"canary {_show(self.canary)} vs stable {_show(self.stable)}" if self.stable is not None else ""
        if self.stable is None and self.canary is not None:
            values = f"canary {_show(self.canary)}"
        parts = [f"{self.name} {self.verdict.value}"]
        if values:
            parts.append(f"{values} (limit {self.limit}; {self.source} traffic, {self.samples})")
        if self.message:
            parts.append(self.message)
        return ": ".join(parts)


@dataclass(frozen=True)
class AnalysisCheck:
    verdict: AnalysisVerdict
    objectives: tuple[Objective, ...]
    message: str

    def failed(self) -> tuple[Objective, ...]:
        return tuple(o for o in self.objectives if o.verdict is AnalysisVerdict.FAIL)


def _inconclusive(
    name: str,
    source: Source | None,
    limit: str,
    message: str,
    *,
    required: bool = True,
    samples: str = "",
    stable: float | None = None,
    canary: float | None = None,
) -> Objective:
    return Objective(name, source, stable, canary, limit, AnalysisVerdict.INCONCLUSIVE, required, samples, message)


def _show(value: float | None) -> str:
    return "n/a" if value is None else format_value(round(value, 6))


def _known(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else value


def exceeds_significantly(x1: float, n1: float, x2: float, n2: float, margin: float) -> bool:
    """Whether rate x1/n1 exceeds rate x2/n2 by more than `margin`, one-sided at 95 %.

    Agresti-Caffo: one success and one failure added to each side, so 0/30 against 0/3000 still
    has a variance and a single error in a small sample is not significant.
    """
    p1, p2 = (x1 + 1) / (n1 + 2), (x2 + 1) / (n2 + 2)
    se = math.sqrt(p1 * (1 - p1) / (n1 + 2) + p2 * (1 - p2) / (n2 + 2))
    return (p1 - p2 - margin) / se > Z_95_ONE_SIDED


def _traffic_source(
    reading: AnalysisReading, limits: AnalysisSpec, applicable: Applicable
) -> tuple[Source | None, TrafficReading, TrafficReading, str]:
    """User traffic when both versions have enough of it, else probes when they have, else none (and why)."""
    reasons = []
    if applicable.user_traffic:
        stable, canary = _known(reading.stable.requests) or 0, _known(reading.canary.requests) or 0
        if min(stable, canary) >= limits.min_requests:
            return "user", reading.stable, reading.canary, ""
        reasons.append(
            f"user requests stable {_show(stable)}, canary {_show(canary)} < minRequests {limits.min_requests}"
        )
    if applicable.probes:
        stable, canary = _known(reading.stable_probes.requests) or 0, _known(reading.canary_probes.requests) or 0
        if min(stable, canary) >= limits.min_probes:
            return "probe", reading.stable_probes, reading.canary_probes, ""
        reasons.append(f"probes stable {_show(stable)}, canary {_show(canary)} < minProbes {limits.min_probes}")
    return None, TrafficReading(), TrafficReading(), "; ".join(reasons)


def _samples(source: Source | None, stable: TrafficReading, canary: TrafficReading) -> str:
    noun = "probes" if source == "probe" else "requests"
    return f"{_show(canary.requests)}/{_show(stable.requests)} {noun}"


def _latency(
    source: Source | None, stable: TrafficReading, canary: TrafficReading, why: str, limits: AnalysisSpec
) -> Objective | None:
    ratio = limits.max_p95_latency_ratio
    if "p95LatencyMs" in limits.skip:
        return None
    limit = f"<= {format_value(ratio)} x stable (+{format_value(limits.latency_tolerance_ms)} ms)"
    if source is None:
        return _inconclusive("p95LatencyMs", None, limit, why)
    p95_s, p95_c = _known(stable.p95_seconds), _known(canary.p95_seconds)
    stable_ms = None if p95_s is None else p95_s * 1000
    canary_ms = None if p95_c is None else p95_c * 1000
    samples = _samples(source, stable, canary)
    if stable_ms is None or canary_ms is None:
        message = "no latency histogram for one version"
        return _inconclusive(
            "p95LatencyMs", source, limit, message, samples=samples, stable=stable_ms, canary=canary_ms
        )
    failed = canary_ms > ratio * stable_ms and canary_ms - stable_ms > limits.latency_tolerance_ms
    return Objective(
        "p95LatencyMs",
        source,
        stable_ms,
        canary_ms,
        limit,
        AnalysisVerdict.FAIL if failed else AnalysisVerdict.PASS,
        True,
        samples,
    )


def _error_rate(
    source: Source | None, stable: TrafficReading, canary: TrafficReading, why: str, limits: AnalysisSpec
) -> Objective | None:
    margin = limits.max_error_rate_increase
    if "errorRate" in limits.skip:
        return None
    limit = f"<= stable + {format_value(margin)}"
    if source is None:
        return _inconclusive("errorRate", None, limit, why)
    n_s, n_c = stable.requests or 0.0, canary.requests or 0.0
    x_s, x_c = min(stable.errors or 0.0, n_s), min(canary.errors or 0.0, n_c)
    rate_s, rate_c = x_s / n_s, x_c / n_c
    samples = _samples(source, stable, canary)
    if rate_c - rate_s <= margin:
        return Objective("errorRate", source, rate_s, rate_c, limit, AnalysisVerdict.PASS, True, samples)
    if exceeds_significantly(x_c, n_c, x_s, n_s, margin):
        return Objective("errorRate", source, rate_s, rate_c, limit, AnalysisVerdict.FAIL, True, samples)
    waiting = "above the limit but not yet significant at 95%: waiting for more queries"
    return _inconclusive("errorRate", source, limit, waiting, samples=samples, stable=rate_s, canary=rate_c)


def _satisfaction(reading: AnalysisReading, limits: AnalysisSpec, applicable: Applicable) -> Objective | None:
    drop = limits.max_satisfaction_drop
    if "satisfaction" in limits.skip or not applicable.user_traffic:
        return None
    limit = f">= stable - {format_value(drop)}"
    ratings_s, ratings_c = _known(reading.stable.ratings) or 0.0, _known(reading.canary.ratings) or 0.0
    raters_s, raters_c = _known(reading.stable.raters), _known(reading.canary.raters)
    samples = f"{_show(ratings_c)}/{_show(ratings_s)} ratings"
    if limits.min_raters > 0:
        samples += f", {_show(raters_c)}/{_show(raters_s)} raters"
    mean_s = (reading.stable.rating_sum or 0.0) / ratings_s if ratings_s > 0 else None
    mean_c = (reading.canary.rating_sum or 0.0) / ratings_c if ratings_c > 0 else None
    few = None
    if min(ratings_s, ratings_c) < limits.min_ratings or mean_s is None or mean_c is None:
        few = f"fewer than minRatings {limits.min_ratings} ratings per version: not judged"
    elif limits.min_raters > 0 and (raters_s is None or raters_c is None):
        # The gauge is absent while the runtime cannot read its database: raters unknown, not zero.
        few = f"distinct raters unknown (no ragops_feedback_raters series), minRaters {limits.min_raters}: not judged"
    elif limits.min_raters > 0 and min(raters_s or 0.0, raters_c or 0.0) < limits.min_raters:
        few = f"fewer than minRaters {limits.min_raters} distinct raters per version: not judged"
    if few is not None:
        return _inconclusive(
            "satisfaction", "user", limit, few, required=False, samples=samples, stable=mean_s, canary=mean_c
        )
    assert mean_s is not None and mean_c is not None  # no mean is "fewer than minRatings" above
    verdict = AnalysisVerdict.FAIL if mean_s - mean_c > drop else AnalysisVerdict.PASS
    return Objective("satisfaction", "user", mean_s, mean_c, limit, verdict, False, samples)


def _cost(reading: AnalysisReading, limits: AnalysisSpec, applicable: Applicable) -> Objective | None:
    ratio = limits.max_cost_ratio
    if "costPerQueryUsd" in limits.skip or not applicable.user_traffic:
        return None
    limit = f"<= {format_value(ratio)} x stable"
    stable, canary = reading.stable, reading.canary
    samples = _samples("user", stable, canary)
    n_s, n_c = _known(stable.requests) or 0.0, _known(canary.requests) or 0.0
    if min(n_s, n_c) < limits.min_requests or stable.cost_usd is None or canary.cost_usd is None:
        few = "too few user queries (or no cost series): not judged"
        return _inconclusive("costPerQueryUsd", "user", limit, few, required=False, samples=samples)
    per_s, per_c = stable.cost_usd / n_s, canary.cost_usd / n_c
    verdict = AnalysisVerdict.FAIL if per_c > ratio * per_s + COST_TOLERANCE_USD else AnalysisVerdict.PASS
    return Objective("costPerQueryUsd", "user", per_s, per_c, limit, verdict, False, samples)


def _shadow_overlap(reading: AnalysisReading, limits: AnalysisSpec, applicable: Applicable) -> Objective | None:
    floor = limits.min_shadow_overlap
    if "shadowOverlap" in limits.skip or not applicable.shadow:
        return None
    name = f"shadowOverlap ({limits.overlap_measure}@{limits.overlap_level})"
    limit = f">= {format_value(floor)}"
    shadow = reading.shadow
    observed = (_known(shadow.comparisons) or 0.0) + shadow.errors
    samples = (
        f"{_show(observed)} comparisons ({_show(shadow.errors)} errors, {_show(shadow.dropped)} dropped when saturated)"
    )
    if observed < limits.min_shadow_queries:
        few = f"fewer than minShadowQueries {limits.min_shadow_queries} comparisons"
        return _inconclusive(name, "shadow", limit, few, samples=samples)
    mean = (shadow.overlap_sum or 0.0) / observed
    verdict = AnalysisVerdict.FAIL if mean < floor else AnalysisVerdict.PASS
    return Objective(name, "shadow", None, mean, limit, verdict, True, samples)


def _golden_recall(reading: AnalysisReading, limits: AnalysisSpec, applicable: Applicable) -> Objective | None:
    margin = limits.max_recall_drop
    if "goldenRecall" in limits.skip or not applicable.golden_probes:
        return None
    limit = f">= stable - {format_value(margin)}"
    stable, canary = reading.stable_recall or Proportion(0, 0), reading.canary_recall or Proportion(0, 0)
    samples = f"{_show(canary.trials)}/{_show(stable.trials)} golden probes"
    if min(stable.trials, canary.trials) < limits.min_probes or stable.rate is None or canary.rate is None:
        few = f"fewer than minProbes {limits.min_probes} golden probes per version"
        return _inconclusive(
            "goldenRecall", "probe", limit, few, samples=samples, stable=stable.rate, canary=canary.rate
        )
    if stable.rate - canary.rate <= margin:
        return Objective("goldenRecall", "probe", stable.rate, canary.rate, limit, AnalysisVerdict.PASS, True, samples)
    # Misses are the rate that must not grow: candidate misses vs stable misses.
    significant = exceeds_significantly(
        canary.trials - canary.successes, canary.trials, stable.trials - stable.successes, stable.trials, margin
    )
    if significant:
        return Objective("goldenRecall", "probe", stable.rate, canary.rate, limit, AnalysisVerdict.FAIL, True, samples)
    waiting = "below the limit but not yet significant at 95%: waiting for more probes"
    return _inconclusive(
        "goldenRecall", "probe", limit, waiting, samples=samples, stable=stable.rate, canary=canary.rate
    )


def judge_analysis(
    reading: AnalysisReading | None, limits: AnalysisSpec, applicable: Applicable, *, unavailable: str = ""
) -> AnalysisCheck:
    """The verdict of one reading: Fail if any objective fails, Inconclusive if a required one cannot be
    judged (or nothing can), Pass otherwise. Satisfaction and cost are optional: judged when the data
    is there, noted when it is not (feedback and paid models are not every deployment's).

    No reading (`unavailable` says why) is Inconclusive: an outage of the metrics is no evidence
    against the candidate, nor for it."""
    if reading is None:
        why = f" ({unavailable})" if unavailable else ""
        return AnalysisCheck(AnalysisVerdict.INCONCLUSIVE, (), f"{UNQUERIED}{why}: nothing compared, nothing decided")
    source, stable, canary, why = _traffic_source(reading, limits, applicable)
    traffic_applies = applicable.user_traffic or applicable.probes
    candidates = [
        _latency(source, stable, canary, why, limits) if traffic_applies else None,
        _error_rate(source, stable, canary, why, limits) if traffic_applies else None,
        _satisfaction(reading, limits, applicable),
        _cost(reading, limits, applicable),
        _shadow_overlap(reading, limits, applicable),
        _golden_recall(reading, limits, applicable),
    ]
    objectives = tuple(o for o in candidates if o is not None)
    window = f"over {format_value(round(reading.window_seconds))}s"
    failed = [o for o in objectives if o.verdict is AnalysisVerdict.FAIL]
    if failed:
        return AnalysisCheck(
            AnalysisVerdict.FAIL, objectives, f"failed {window}: " + "; ".join(o.describe() for o in failed)
        )
    waiting = [o for o in objectives if o.verdict is AnalysisVerdict.INCONCLUSIVE and o.required]
    if waiting:
        return AnalysisCheck(
            AnalysisVerdict.INCONCLUSIVE,
            objectives,
            f"inconclusive {window}: " + "; ".join(o.describe() for o in waiting),
        )
    if not any(o.verdict is AnalysisVerdict.PASS for o in objectives):
        return AnalysisCheck(
            AnalysisVerdict.INCONCLUSIVE,
            objectives,
            f"nothing to compare {window}: the candidate serves no users, shadows nothing and is not probed",
        )
    passed = ", ".join(o.name for o in objectives if o.verdict is AnalysisVerdict.PASS)
    return AnalysisCheck(AnalysisVerdict.PASS, objectives, f"passed {window}: {passed}")
