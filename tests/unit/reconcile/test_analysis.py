"""Relative analysis verdicts: candidate against stable in the same window, like with like."""

from __future__ import annotations

import pytest

from ragops_operator.api.rollout import AnalysisSpec, AnalysisVerdict
from ragops_operator.reconcile.analysis import (
    AnalysisReading,
    Applicable,
    Proportion,
    ShadowReading,
    TrafficReading,
    exceeds_significantly,
    judge_analysis,
    slo_sample,
)

LIMITS = AnalysisSpec()
USER = Applicable(user_traffic=True, shadow=False, probes=False, golden_probes=False)
USER_AND_PROBES = Applicable(user_traffic=True, shadow=False, probes=True, golden_probes=True)
PROBES_ONLY = Applicable(user_traffic=False, shadow=False, probes=True, golden_probes=True)
SHADOW_ONLY = Applicable(user_traffic=False, shadow=True, probes=False, golden_probes=False)
NOTHING = Applicable(user_traffic=False, shadow=False, probes=False, golden_probes=False)


def traffic(
    requests: float = 1000,
    errors: float = 0,
    p95: float = 0.300,
    cost: float | None = 1.0,
    rating_sum: float | None = None,
    ratings: float | None = None,
    raters: float | None = None,
) -> TrafficReading:
    return TrafficReading(requests, errors, p95, cost, rating_sum, ratings, raters)


def reading(**fields: object) -> AnalysisReading:
    base: dict[str, object] = {"window_seconds": 120.0, "stable": traffic(), "canary": traffic(requests=100, cost=0.1)}
    base.update(fields)
    return AnalysisReading(**base)  # type: ignore[arg-type]


def objective(check_objectives: tuple[object, ...], name: str) -> object:
    return next(o for o in check_objectives if getattr(o, "name", "").startswith(name))


def verdicts(applicable: Applicable, **fields: object) -> dict[str, AnalysisVerdict]:
    check = judge_analysis(reading(**fields), LIMITS, applicable)
    return {o.name.split(" ")[0]: o.verdict for o in check.objectives}


def test_a_healthy_candidate_passes_every_user_objective() -> None:
    check = judge_analysis(reading(), LIMITS, USER)
    assert check.verdict is AnalysisVerdict.PASS
    assert [o.name for o in check.objectives] == ["p95LatencyMs", "errorRate", "satisfaction", "costPerQueryUsd"]
    latency = check.objectives[0]
    assert (latency.source, latency.stable, latency.canary) == ("user", 300.0, 300.0)
    # Satisfaction without ratings is noted, never blocking: feedback is optional.
    assert check.objectives[2].verdict is AnalysisVerdict.INCONCLUSIVE and not check.objectives[2].required
    assert check.message.startswith("passed over 120s: p95LatencyMs, errorRate, costPerQueryUsd")


def test_no_reading_is_inconclusive_never_pass_nor_fail() -> None:
    check = judge_analysis(None, LIMITS, USER)
    assert check.verdict is AnalysisVerdict.INCONCLUSIVE
    assert "Prometheus could not be queried" in check.message


@pytest.mark.parametrize(
    ("stable_ms", "canary_ms", "expected"),
    [
        (300, 370, AnalysisVerdict.PASS),  # 1.23x: within 1.25x
        (300, 380, AnalysisVerdict.FAIL),  # 1.27x and 80 ms slower
        (10, 30, AnalysisVerdict.PASS),  # 3x, but 20 ms: within the 25 ms tolerance
        (10, 40, AnalysisVerdict.FAIL),  # 4x and 30 ms
        (300, 100, AnalysisVerdict.PASS),  # faster
    ],
)
def test_p95_latency_ratio_with_a_tolerance_for_small_latencies(
    stable_ms: float, canary_ms: float, expected: AnalysisVerdict
) -> None:
    result = verdicts(USER, stable=traffic(p95=stable_ms / 1000), canary=traffic(requests=100, p95=canary_ms / 1000))
    assert result["p95LatencyMs"] is expected


def test_missing_latency_histogram_is_inconclusive() -> None:
    check = judge_analysis(reading(canary=traffic(requests=100, p95=float("nan"), cost=0.1)), LIMITS, USER)
    latency = check.objectives[0]
    assert latency.verdict is AnalysisVerdict.INCONCLUSIVE and latency.message == "no latency histogram for one version"
    assert check.verdict is AnalysisVerdict.INCONCLUSIVE


@pytest.mark.parametrize(
    ("stable", "canary", "expected"),
    [
        ((10, 1000), (2, 100), AnalysisVerdict.PASS),  # 2% vs 1%: +0.01, at the limit
        ((10, 1000), (10, 100), AnalysisVerdict.FAIL),  # 10% vs 1%: significant
        ((0, 1000), (2, 60), AnalysisVerdict.INCONCLUSIVE),  # 3.3% vs 0%, but 2 errors in 60 is not evidence yet
        ((0, 5000), (40, 1000), AnalysisVerdict.FAIL),  # 4% vs 0% over 1000 queries
    ],
)
def test_error_rate_difference_fails_only_when_significant(
    stable: tuple[int, int], canary: tuple[int, int], expected: AnalysisVerdict
) -> None:
    result = verdicts(
        USER,
        stable=traffic(requests=stable[1], errors=stable[0]),
        canary=traffic(requests=canary[1], errors=canary[0], cost=canary[1] / 1000),
    )
    assert result["errorRate"] is expected


def test_significance_test_is_one_sided_and_respects_the_margin() -> None:
    assert exceeds_significantly(50, 500, 5, 500, 0.01)
    assert not exceeds_significantly(5, 500, 50, 500, 0.01)  # the candidate is better
    assert not exceeds_significantly(12, 500, 5, 500, 0.05)  # 2.4% vs 1%: within a 5-point margin
    assert not exceeds_significantly(1, 30, 0, 30000, 0.0)  # one error in 30 queries


def test_too_little_user_traffic_is_inconclusive_and_says_how_little() -> None:
    check = judge_analysis(reading(canary=traffic(requests=12)), LIMITS, USER)
    assert check.verdict is AnalysisVerdict.INCONCLUSIVE
    assert "user requests stable 1000, canary 12 < minRequests 30" in check.message


def test_probes_decide_at_zero_user_traffic() -> None:
    quiet = reading(
        stable=traffic(requests=0),
        canary=traffic(requests=0),
        stable_probes=traffic(requests=60, p95=0.05, cost=None),
        canary_probes=traffic(requests=60, p95=0.055, cost=None),
        stable_recall=Proportion(57, 60),
        canary_recall=Proportion(56, 60),
    )
    check = judge_analysis(quiet, LIMITS, USER_AND_PROBES)
    assert check.verdict is AnalysisVerdict.PASS, check.message
    by_name = {o.name: o for o in check.objectives}
    assert by_name["p95LatencyMs"].source == "probe" and by_name["errorRate"].source == "probe"
    assert by_name["goldenRecall"].verdict is AnalysisVerdict.PASS
    # Cost and satisfaction need user traffic: noted, not blocking.
    assert by_name["costPerQueryUsd"].verdict is AnalysisVerdict.INCONCLUSIVE


def test_user_traffic_is_preferred_over_probes_when_there_is_enough() -> None:
    both = reading(
        stable_probes=traffic(requests=60, p95=5.0),
        canary_probes=traffic(requests=60, p95=0.01),
        stable_recall=Proportion(60, 60),
        canary_recall=Proportion(60, 60),
    )
    latency = judge_analysis(both, LIMITS, USER_AND_PROBES).objectives[0]
    assert latency.source == "user" and latency.stable == 300.0


def test_a_recall_regression_under_golden_probes_fails() -> None:
    worse = reading(
        stable_probes=traffic(requests=120),
        canary_probes=traffic(requests=120),
        stable_recall=Proportion(114, 120),
        canary_recall=Proportion(90, 120),
    )
    check = judge_analysis(worse, LIMITS, PROBES_ONLY)
    assert check.verdict is AnalysisVerdict.FAIL
    recall = next(o for o in check.objectives if o.name == "goldenRecall")
    assert (recall.stable, recall.canary) == (0.95, 0.75)
    assert "goldenRecall Fail: canary 0.75 vs stable 0.95 (limit >= stable - 0.05; probe traffic" in check.message


def test_a_small_recall_drop_on_few_probes_waits() -> None:
    unsure = reading(
        stable_probes=traffic(requests=20),
        canary_probes=traffic(requests=20),
        stable_recall=Proportion(20, 20),
        canary_recall=Proportion(18, 20),
    )
    recall = next(o for o in judge_analysis(unsure, LIMITS, PROBES_ONLY).objectives if o.name == "goldenRecall")
    assert recall.verdict is AnalysisVerdict.INCONCLUSIVE
    assert "not yet significant" in recall.message


def test_golden_recall_needs_min_probes() -> None:
    few = reading(
        stable_probes=traffic(requests=5),
        canary_probes=traffic(requests=5),
        stable_recall=Proportion(5, 5),
        canary_recall=Proportion(0, 5),
    )
    check = judge_analysis(few, LIMITS, PROBES_ONLY)
    assert check.verdict is AnalysisVerdict.INCONCLUSIVE
    assert all(o.verdict is AnalysisVerdict.INCONCLUSIVE for o in check.objectives)


def test_satisfaction_is_judged_with_enough_ratings() -> None:
    rated = verdicts(
        USER,
        stable=traffic(rating_sum=40, ratings=50, raters=12),
        canary=traffic(requests=100, cost=0.1, rating_sum=15, ratings=25, raters=3),
    )
    assert rated["satisfaction"] is AnalysisVerdict.FAIL  # 0.6 vs 0.8: a drop of 0.2 > 0.1
    fine = verdicts(
        USER,
        stable=traffic(rating_sum=40, ratings=50, raters=12),
        canary=traffic(requests=100, cost=0.1, rating_sum=19, ratings=25, raters=3),
    )
    assert fine["satisfaction"] is AnalysisVerdict.PASS


@pytest.mark.parametrize(
    ("canary_raters", "why"),
    [
        (1, "fewer than minRaters 3 distinct raters per version: not judged"),
        (2, "fewer than minRaters 3 distinct raters per version: not judged"),
        (None, "distinct raters unknown (no ragops_feedback_raters series), minRaters 3: not judged"),
    ],
)
def test_satisfaction_needs_distinct_raters_not_just_ratings(canary_raters: float | None, why: str) -> None:
    """25 bad ratings of the candidate from one or two clients: never a Fail (nor a Pass), only noted."""
    check = judge_analysis(
        reading(
            stable=traffic(rating_sum=40, ratings=50, raters=12),
            canary=traffic(requests=100, cost=0.1, rating_sum=5, ratings=25, raters=canary_raters),
        ),
        LIMITS,
        USER,
    )
    satisfaction = next(o for o in check.objectives if o.name == "satisfaction")
    assert satisfaction.verdict is AnalysisVerdict.INCONCLUSIVE and not satisfaction.required
    assert satisfaction.message == why
    raters = "n/a" if canary_raters is None else str(canary_raters)
    assert satisfaction.samples == f"25/50 ratings, {raters}/12 raters"
    # Optional: the other objectives decide, and they pass.
    assert check.verdict is AnalysisVerdict.PASS
    # minRaters 0 turns the check off: the same ratings fail the candidate.
    off = judge_analysis(check_reading := reading(
        stable=traffic(rating_sum=40, ratings=50, raters=12),
        canary=traffic(requests=100, cost=0.1, rating_sum=5, ratings=25, raters=canary_raters),
    ), LIMITS.model_copy(update={"min_raters": 0}), USER)  # fmt: skip
    assert check_reading.canary.raters == canary_raters
    assert next(o for o in off.objectives if o.name == "satisfaction").verdict is AnalysisVerdict.FAIL


def test_cost_ratio() -> None:
    assert verdicts(USER, canary=traffic(requests=100, cost=0.2))["costPerQueryUsd"] is AnalysisVerdict.FAIL  # 2x
    assert verdicts(USER, canary=traffic(requests=100, cost=0.14))["costPerQueryUsd"] is AnalysisVerdict.PASS
    free = verdicts(USER, stable=traffic(cost=0.0), canary=traffic(requests=100, cost=0.0))
    assert free["costPerQueryUsd"] is AnalysisVerdict.PASS


def test_shadow_overlap_floor_counts_errors_as_no_overlap() -> None:
    good = reading(shadow=ShadowReading(overlap_sum=40, comparisons=50))
    assert judge_analysis(good, LIMITS, SHADOW_ONLY).verdict is AnalysisVerdict.PASS
    failing = reading(shadow=ShadowReading(overlap_sum=40, comparisons=50, errors=40))
    check = judge_analysis(failing, LIMITS, SHADOW_ONLY)
    overlap = check.objectives[0]
    assert overlap.name == "shadowOverlap (rbo@document)"
    assert overlap.canary == pytest.approx(40 / 90) and overlap.verdict is AnalysisVerdict.FAIL
    assert "90 comparisons (40 errors, 0 dropped when saturated)" in overlap.samples


def test_shadow_overlap_needs_min_comparisons() -> None:
    check = judge_analysis(reading(shadow=ShadowReading(overlap_sum=1, comparisons=5)), LIMITS, SHADOW_ONLY)
    assert check.verdict is AnalysisVerdict.INCONCLUSIVE


def test_a_shadow_only_step_does_not_judge_user_traffic() -> None:
    check = judge_analysis(reading(shadow=ShadowReading(overlap_sum=45, comparisons=50)), LIMITS, SHADOW_ONLY)
    assert [o.name for o in check.objectives] == ["shadowOverlap (rbo@document)"]


def test_nothing_applicable_is_inconclusive() -> None:
    check = judge_analysis(reading(), LIMITS, NOTHING)
    assert check.verdict is AnalysisVerdict.INCONCLUSIVE
    assert "nothing to compare" in check.message


def test_a_disabled_objective_is_not_checked() -> None:
    limits = AnalysisSpec(skip=["p95LatencyMs", "costPerQueryUsd"])
    check = judge_analysis(reading(canary=traffic(requests=100, p95=9.0, cost=50.0)), limits, USER)
    assert [o.name for o in check.objectives] == ["errorRate", "satisfaction"]
    assert check.verdict is AnalysisVerdict.PASS


def test_a_failure_wins_over_inconclusive_objectives() -> None:
    mixed = reading(canary=traffic(requests=100, p95=2.0), shadow=ShadowReading(overlap_sum=0, comparisons=0))
    applicable = Applicable(user_traffic=True, shadow=True, probes=False, golden_probes=False)
    check = judge_analysis(mixed, LIMITS, applicable)
    assert check.verdict is AnalysisVerdict.FAIL
    assert check.failed()[0].name == "p95LatencyMs"


def test_objectives_render_as_status_rows() -> None:
    row = judge_analysis(reading(), LIMITS, USER).objectives[0].to_status()
    assert row.model_dump(by_alias=True, exclude_none=True) == {
        "name": "p95LatencyMs",
        "source": "user",
        "stable": 300.0,
        "canary": 300.0,
        "limit": "<= 1.25 x stable (+25 ms)",
        "verdict": AnalysisVerdict.PASS,
        "samples": "100/1000 requests",
        "message": "",
    }


def test_the_candidates_slo_sample() -> None:
    sample = slo_sample(traffic(requests=200, errors=4, p95=0.5, cost=0.4, rating_sum=18, ratings=20, raters=4))
    assert sample.requests == 200 and sample.error_ratio == 0.02 and sample.p95_latency_seconds == 0.5
    assert sample.cost_per_query_usd == 0.002 and sample.satisfaction == 0.9
    assert sample.raters == 4  # the candidate's absolute satisfaction SLO counts its own raters
    empty = slo_sample(TrafficReading())
    assert empty.requests is None and empty.error_ratio is None and empty.satisfaction is None
