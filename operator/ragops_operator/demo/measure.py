"""The demo's SLO readings, computed from two scrapes of the runtime's /metrics instead of Prometheus.

`make demo` must run on a machine that has only run `make install`, and Prometheus is a Debian
package that needs root to install, so the demo reads the runtime's own exposition before and
after a burst of traffic and computes what `ragops_operator.prometheus.slo_queries` asks
Prometheus for, over that burst: the increase of the query counter, `histogram_quantile(0.95, ...)`
of the duration histogram's increase (Prometheus' interpolation, reproduced below), the error
share, mean feedback and cost per query. One difference: Prometheus' `increase()` extrapolates to
the window's edges; a difference of two scrapes does not need to, since they bound the window.

Pure: parses text and does arithmetic. No HTTP, no clock.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from ragops_operator.reconcile.slo import SloSample

QUERIES = "ragops_queries_total"
DURATION_BUCKET = "ragops_query_duration_seconds_bucket"
FEEDBACK_SUM = "ragops_feedback_score_sum"
FEEDBACK_COUNT = "ragops_feedback_score_count"
COST = "ragops_cost_usd_total"
RATERS = "ragops_feedback_raters"


@dataclass(frozen=True)
class Scrape:
    """The series of one deployment that the SLO queries read, summed over pods as the queries do."""

    queries: float
    errors: float
    buckets: Mapping[float, float]
    """Cumulative count per upper bound `le` (math.inf for +Inf)."""
    feedback_sum: float
    feedback_count: float
    cost_usd: float | None
    """None when no cost series is exported (the SLO query then has no data either)."""
    raters: float | None = None
    """The largest per-version count of distinct raters in the runtime's window, as the SLO query reads it."""


def parse_scrape(text: str, *, namespace: str, deployment: str) -> Scrape:
    """The deployment's series in a Prometheus text exposition (other deployments' are ignored)."""
    queries = errors = feedback_sum = feedback_count = 0.0
    cost: float | None = None
    raters: float | None = None
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if labels.get("namespace") != namespace or labels.get("deployment") != deployment:
                continue
            if sample.name == QUERIES:
                queries += sample.value
                if labels.get("status") == "error":
                    errors += sample.value
            elif sample.name == DURATION_BUCKET:
                bound = float(labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
            elif sample.name == FEEDBACK_SUM:
                feedback_sum += sample.value
            elif sample.name == FEEDBACK_COUNT:
                feedback_count += sample.value
            elif sample.name == COST:
                cost = (cost or 0.0) + sample.value
            elif sample.name == RATERS and labels.get("role") not in ("shadow", "probe"):
                raters = max(raters or 0.0, sample.value)
    return Scrape(queries, errors, buckets, feedback_sum, feedback_count, cost, raters)


def histogram_quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """Prometheus' `histogram_quantile` over cumulative bucket counts; None where it returns NaN.

    The rank q * total falls in the first bucket whose cumulative count reaches it; the value is
    interpolated linearly inside that bucket, from 0 for the lowest bucket (when its bound is
    positive); a rank in the +Inf bucket returns the highest finite bound.
    """
    if not 0 <= q <= 1 or math.inf not in buckets:
        return None
    bounds = sorted(buckets)
    total = buckets[math.inf]
    if total <= 0:
        return None
    rank = q * total
    for index, bound in enumerate(bounds):
        count = buckets[bound]
        if count < rank:
            continue
        if bound == math.inf:
            return bounds[-2] if len(bounds) > 1 else None
        lower = bounds[index - 1] if index > 0 else 0.0
        below = buckets[bounds[index - 1]] if index > 0 else 0.0
        if index == 0 and bound <= 0:
            return bound
        in_bucket = count - below
        if in_bucket <= 0:
            return bound
        return lower + (bound - lower) * (rank - below) / in_bucket
    return None


def sample_between(before: Scrape, after: Scrape) -> SloSample:
    """The `SloSample` of the window between two scrapes of the same runtime process."""
    requests = after.queries - before.queries
    increase = {le: count - before.buckets.get(le, 0.0) for le, count in after.buckets.items()}
    rated = after.feedback_count - before.feedback_count
    cost = None
    if after.cost_usd is not None and requests > 0:
        cost = (after.cost_usd - (before.cost_usd or 0.0)) / requests
    return SloSample(
        requests=requests,
        p95_latency_seconds=histogram_quantile(0.95, increase) if requests > 0 else None,
        error_ratio=(after.errors - before.errors) / requests if requests > 0 else None,
        satisfaction=(after.feedback_sum - before.feedback_sum) / rated if rated > 0 else None,
        cost_per_query_usd=cost,
        raters=after.raters,
    )


def latency_objective_ms(baseline_p95_ms: float | None, *, floor_ms: int, factor: float = 2.0) -> int:
    """The demo's p95 objective: `factor` x the last known-good version's measured p95, at least `floor_ms`.

    A fixed number cannot fit both of the demo's modes: retrieval-only answers take milliseconds,
    answers generated by the Anthropic API seconds. Anchoring the objective on the baseline, as
    canary analysis does, keeps "twice as slow as before" a breach in both.
    """
    measured = 0.0 if baseline_p95_ms is None else baseline_p95_ms
    return max(floor_ms, math.ceil(measured * factor / 10) * 10)


FAULT_FACTOR = 1.25
"""A faulty query is slowed by this multiple of the objective. The p95 is read from histogram buckets,
interpolated as if each bucket were uniform, so it can sit below the true value; if every query is at
least 1.25 x the objective, the interpolated p95 is at least 0.95 of a bucket bound above 1.25 x the
objective, hence above it, whatever the bucket layout."""


def per_statement_delay_ms(objective_ms: int, statements_per_query: int) -> int:
    """The injected delay per statement that makes every faulty query exceed the objective on its own."""
    return math.ceil(FAULT_FACTOR * objective_ms / max(1, statements_per_query))


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of client-side timings, for the tables (not for the SLO verdict)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


SeriesKey = tuple[str, tuple[tuple[str, str], ...]]
Series = tuple[Mapping[str, str], float]


def parse_series(text: str, *, namespace: str, deployment: str) -> dict[SeriesKey, float]:
    """Every sample of the deployment in an exposition, keyed by name and labels (for rollout readings)."""
    found: dict[SeriesKey, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("namespace") == namespace and sample.labels.get("deployment") == deployment:
                found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def analysis_results_between(
    before: Mapping[SeriesKey, float],
    after: Mapping[SeriesKey, float],
    *,
    overlap_level: str,
    overlap_measure: str,
) -> dict[str, list[Series]]:
    """What `prometheus.analysis_queries` returns, computed from two scrapes that bound the window.

    The same groups (by kb_version and role, status, hit or outcome) of the counters' increase, and
    the p95 of each version and role from its histogram's increase, so `prometheus.analysis_reading`
    picks the two versions out of them exactly as it does out of Prometheus' answer.
    """
    increase = {key: value - before.get(key, 0.0) for key, value in after.items()}

    def grouped(metric: str, by: Sequence[str], **match: str) -> list[Series]:
        sums: dict[tuple[tuple[str, str], ...], float] = {}
        for (name, pairs), value in increase.items():
            labels = dict(pairs)
            if name != metric or any(labels.get(key) != wanted for key, wanted in match.items()):
                continue
            group = tuple((key, labels.get(key, "")) for key in by)
            sums[group] = sums.get(group, 0.0) + value
        return [(dict(group), value) for group, value in sums.items()]

    buckets: dict[tuple[str, str], dict[float, float]] = {}
    for (name, pairs), value in increase.items():
        if name == DURATION_BUCKET:
            labels = dict(pairs)
            per_le = buckets.setdefault((labels.get("kb_version", ""), labels.get("role", "")), {})
            per_le[float(labels["le"])] = per_le.get(float(labels["le"]), 0.0) + value
    p95: list[Series] = []
    for (version, role), per_le in buckets.items():
        quantile = histogram_quantile(0.95, per_le)
        if quantile is not None:
            p95.append(({"kb_version": version, "role": role}, quantile))
    raters: dict[tuple[str, str], float] = {}
    for (name, pairs), value in after.items():
        if name == RATERS:  # a gauge over the runtime's own window: its latest value, max over pods
            labels = dict(pairs)
            group = (labels.get("kb_version", ""), labels.get("role", ""))
            raters[group] = max(raters.get(group, 0.0), value)
    overlap = {"role": "shadow", "level": overlap_level, "measure": overlap_measure}
    return {
        "requests": grouped(QUERIES, ("kb_version", "role", "status")),
        "p95_seconds": p95,
        "cost_usd": grouped(COST, ("kb_version", "role")),
        "rating_sum": grouped(FEEDBACK_SUM, ("kb_version", "role")),
        "ratings": grouped(FEEDBACK_COUNT, ("kb_version", "role")),
        "overlap_sum": grouped("ragops_shadow_overlap_sum", ("kb_version",), **overlap),
        "overlap_count": grouped("ragops_shadow_overlap_count", ("kb_version",), **overlap),
        "shadow_outcomes": grouped("ragops_shadow_queries_total", ("kb_version", "outcome")),
        "probe_hits": grouped("ragops_probe_hits_total", ("kb_version", "hit")),
        "raters": [({"kb_version": version, "role": role}, count) for (version, role), count in raters.items()],
    }
