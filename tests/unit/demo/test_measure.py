"""The demo's SLO readings from /metrics: Prometheus' histogram_quantile, window deltas, the fault's size."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest

from ragops_operator.api.ragdeployment import SloSpec
from ragops_operator.demo.measure import (
    FAULT_FACTOR,
    analysis_results_between,
    histogram_quantile,
    latency_objective_ms,
    parse_scrape,
    parse_series,
    per_statement_delay_ms,
    percentile,
    sample_between,
)
from ragops_operator.prometheus import analysis_reading
from ragops_operator.reconcile.slo import Verdict, judge
from ragops_runtime.observability.metrics import QUERY_BUCKETS, DeploymentIdentity, RuntimeMetrics

INF = math.inf


@pytest.mark.parametrize(
    ("q", "buckets", "expected"),
    [
        # Prometheus' own examples: rank 0.95*10=9.5 in (0.25, 0.5] holding 10 -> 0.25 + 0.25 * 9.5/10
        (0.95, {0.1: 0, 0.25: 0, 0.5: 10, INF: 10}, 0.4875),
        # rank 1.9 of 2 falls in the first bucket, interpolated from 0
        (0.95, {0.1: 2, 0.25: 2, INF: 2}, 0.095),
        # rank in the +Inf bucket: the highest finite bound
        (0.95, {0.1: 0, 0.25: 0, INF: 4}, 0.25),
        # the median between two buckets
        (0.5, {1.0: 5, 2.0: 10, INF: 10}, 1.0),
        (0.75, {1.0: 5, 2.0: 10, INF: 10}, 1.5),
        # no observations, no +Inf bucket, q out of range: NaN in Prometheus, None here
        (0.95, {0.1: 0, INF: 0}, None),
        (0.95, {0.1: 3}, None),
        (1.5, {0.1: 1, INF: 1}, None),
    ],
)
def test_histogram_quantile_interpolates_as_prometheus_does(
    q: float, buckets: dict[float, float], expected: float | None
) -> None:
    result = histogram_quantile(q, buckets)
    if expected is None:
        assert result is None
    else:
        assert result == pytest.approx(expected)


SERVED = {"kb_version": "v1", "role": "stable"}


def _metrics(deployment: str = "demo") -> RuntimeMetrics:
    return RuntimeMetrics(DeploymentIdentity(namespace="demo", deployment=deployment, pod="demo-0"))


def _scrape(metrics: RuntimeMetrics, deployment: str = "demo") -> str:
    return metrics.render()[0].decode()


def test_a_window_is_the_difference_of_two_scrapes_of_real_runtime_metrics() -> None:
    metrics = _metrics()
    other = _metrics("other")
    for _ in range(5):
        metrics.observe_query(mode="retrieval_only", status="ok", seconds=0.02, stages={"retrieve": 0.015}, **SERVED)
    before = parse_scrape(_scrape(metrics), namespace="demo", deployment="demo")

    for _ in range(9):
        metrics.observe_query(mode="retrieval_only", status="ok", seconds=0.4, stages={"retrieve": 0.39}, **SERVED)
        other.observe_query(mode="retrieval_only", status="ok", seconds=9.0, stages={}, **SERVED)
    metrics.observe_query(mode="none", status="error", seconds=0.3, stages={}, **SERVED)
    metrics.feedback(1.0, **SERVED)
    metrics.feedback(0.5, **SERVED)
    metrics.cost(service="generation", usd=0.02, **SERVED)
    metrics.set_raters({("v1", "stable"): 2, ("v1", "probe"): 7})
    other.set_raters({("v1", "stable"): 30})
    text = _scrape(metrics) + _scrape(other)
    after = parse_scrape(text, namespace="demo", deployment="demo")

    sample = sample_between(before, after)
    assert sample.requests == 10
    assert sample.error_ratio == pytest.approx(0.1)
    # All 10 in (0.25, 0.5]: the 5 earlier fast queries are outside the window, the other deployment ignored.
    assert sample.p95_latency_seconds == pytest.approx(0.25 + 0.25 * 9.5 / 10)
    assert sample.satisfaction == pytest.approx(0.75)
    assert sample.cost_per_query_usd == pytest.approx(0.002)
    assert sample.raters == 2  # the gauge at the window's end; probes and the other deployment left out


def test_an_idle_window_has_no_latency_and_no_ratio() -> None:
    metrics = _metrics()
    scrape = parse_scrape(_scrape(metrics), namespace="demo", deployment="demo")
    sample = sample_between(scrape, scrape)
    assert sample.requests == 0
    assert sample.p95_latency_seconds is None and sample.error_ratio is None and sample.satisfaction is None
    assert sample.cost_per_query_usd is None
    assert sample.raters is None


def test_the_objective_is_twice_the_baseline_with_a_floor() -> None:
    assert latency_objective_ms(42.5, floor_ms=250) == 250
    assert latency_objective_ms(None, floor_ms=250) == 250
    assert latency_objective_ms(220.0, floor_ms=250) == 440
    assert latency_objective_ms(4_812.0, floor_ms=250) == 9_630


@pytest.mark.parametrize("objective_ms", [250, 440, 490, 999, 1000, 2_400, 9_630])
def test_the_fault_breaches_the_objective_whatever_the_buckets(objective_ms: int) -> None:
    """Every faulty query exceeds the objective, and so does the bucket-interpolated p95 that judge() sees."""
    delay = per_statement_delay_ms(objective_ms, 2)
    assert 2 * delay >= FAULT_FACTOR * objective_ms
    metrics = _metrics()
    before = parse_scrape(_scrape(metrics), namespace="demo", deployment="demo")
    for extra in range(12):
        metrics.observe_query(
            mode="retrieval_only", status="ok", seconds=(2 * delay + extra) / 1000, stages={}, **SERVED
        )
    sample = sample_between(before, parse_scrape(_scrape(metrics), namespace="demo", deployment="demo"))
    slo = SloSpec(p95_latency_ms=objective_ms, min_requests=10)
    check = judge(sample, slo)
    assert check.verdict is Verdict.BREACHED
    assert check.breaches[0].startswith("p95LatencyMs=")
    assert max(QUERY_BUCKETS) * 1000 > 2 * delay  # inside the finite buckets, where interpolation applies


def test_client_side_percentile_is_nearest_rank() -> None:
    assert percentile([], 0.95) is None
    assert percentile([5.0, 1.0, 3.0], 0.5) == 3.0
    assert percentile(list(map(float, range(1, 21))), 0.95) == 19.0


def test_a_rollout_reading_from_two_scrapes_compares_both_versions_over_the_window() -> None:
    metrics = _metrics()
    metrics.observe_query(mode="retrieval_only", status="ok", seconds=0.02, stages={}, kb_version="v1", role="stable")
    before = parse_series(_scrape(metrics), namespace="demo", deployment="demo")
    for _ in range(20):
        metrics.observe_query(
            mode="retrieval_only", status="ok", seconds=0.02, stages={}, kb_version="v1", role="stable"
        )
    for _ in range(4):
        metrics.observe_query(
            mode="retrieval_only", status="ok", seconds=0.4, stages={}, kb_version="v4", role="canary"
        )
    metrics.observe_query(mode="none", status="error", seconds=0.4, stages={}, kb_version="v4", role="canary")
    for value in (1.0, 0.5):
        metrics.overlap({("document", "rbo"): value}, kb_version="v4", role="shadow")
    metrics.shadow_query("error", kb_version="v4")
    metrics.probe_hit(True, kb_version="v4")
    metrics.probe_hit(False, kb_version="v4")
    metrics.set_raters({("v1", "stable"): 6, ("v4", "canary"): 2})
    after = parse_series(_scrape(metrics), namespace="demo", deployment="demo")

    results = analysis_results_between(before, after, overlap_level="document", overlap_measure="rbo")
    reading = analysis_reading(results, stable="v1", canary="v4", window=timedelta(seconds=10))
    # The query before the window is left out: 20 stable queries, not 21.
    assert reading.stable.requests == 20 and reading.stable.errors == 0
    assert reading.canary.requests == 5 and reading.canary.errors == 1
    # Prometheus' interpolation over each version's own buckets: (0.01, 0.025] and (0.25, 0.5].
    assert reading.stable.p95_seconds == pytest.approx(0.01 + 0.015 * 19 / 20)
    assert reading.canary.p95_seconds == pytest.approx(0.25 + 0.25 * 4.75 / 5)
    assert reading.shadow.overlap_sum == pytest.approx(1.5) and reading.shadow.comparisons == 2
    assert reading.shadow.errors == 1
    assert reading.canary_recall is not None and reading.canary_recall.rate == pytest.approx(0.5)
    # The raters gauge is read as it stands at the end (it counts over the runtime's own window).
    assert (reading.stable.raters, reading.canary.raters) == (6, 2)
