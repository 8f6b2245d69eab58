"""The SLO watch: verdicts from samples, breach counting, rollback decisions and bake completion."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from ragops_operator.api.conditions import Reason
from ragops_operator.api.ragdeployment import RolloutSpec, SloMeasurement, SloSpec
from ragops_operator.reconcile.slo import (
    SloCheck,
    SloSample,
    Verdict,
    WatchState,
    advance,
    bake_complete,
    decide_rollback,
    judge,
    rollback_threshold,
    state_from_measurement,
    to_measurement,
)

SLO = (
    SloSpec()
)  # p95 1000 ms, errors 1%, satisfaction 0.65, $0.01 a query, 5m window, 3 breaches, 20 requests, 3 raters
HEALTHY = SloSample(
    requests=120, p95_latency_seconds=0.42, error_ratio=0.0, satisfaction=0.8, cost_per_query_usd=0.002, raters=5
)
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)

# ---- judge ---------------------------------------------------------------------------------------------

JUDGE_CASES: list[tuple[str, SloSample | None, Verdict, Reason, tuple[str, ...], list[str]]] = [
    (
        "all met",
        HEALTHY,
        Verdict.MET,
        Reason.SLO_MET,
        (),
        [
            "all objectives met over 5m (120 requests): p95LatencyMs=420<=1000, errorRate=0<=0.01, "
            "satisfaction=0.8>=0.65, costPerQueryUsd=0.002<=0.01"
        ],
    ),
    (
        "p95 latency",
        replace(HEALTHY, p95_latency_seconds=1.83),
        Verdict.BREACHED,
        Reason.SLO_BREACHED,
        ("p95LatencyMs=1830>1000",),
        ["1 of 4 objectives breached over 5m (120 requests): p95LatencyMs=1830>1000"],
    ),
    (
        "error rate",
        replace(HEALTHY, error_ratio=0.1),
        Verdict.BREACHED,
        Reason.SLO_BREACHED,
        ("errorRate=0.1>0.01",),
        ["met: p95LatencyMs=420<=1000, satisfaction=0.8>=0.65, costPerQueryUsd=0.002<=0.01"],
    ),
    (
        "satisfaction is a floor",
        replace(HEALTHY, satisfaction=0.5),
        Verdict.BREACHED,
        Reason.SLO_BREACHED,
        ("satisfaction=0.5<0.65",),
        [],
    ),
    (
        "cost per query",
        replace(HEALTHY, cost_per_query_usd=0.0234),
        Verdict.BREACHED,
        Reason.SLO_BREACHED,
        ("costPerQueryUsd=0.0234>0.01",),
        [],
    ),
    (
        "limits themselves are met",
        SloSample(
            requests=20, p95_latency_seconds=1.0, error_ratio=0.01, satisfaction=0.65, cost_per_query_usd=0.01, raters=3
        ),
        Verdict.MET,
        Reason.SLO_MET,
        (),
        ["p95LatencyMs=1000<=1000", "errorRate=0.01<=0.01", "satisfaction=0.65>=0.65", "costPerQueryUsd=0.01<=0.01"],
    ),
    (
        "every breach is listed",
        SloSample(
            requests=400, p95_latency_seconds=2.5, error_ratio=0.25, satisfaction=0.3, cost_per_query_usd=0.5, raters=9
        ),
        Verdict.BREACHED,
        Reason.SLO_BREACHED,
        ("p95LatencyMs=2500>1000", "errorRate=0.25>0.01", "satisfaction=0.3<0.65", "costPerQueryUsd=0.5>0.01"),
        ["4 of 4 objectives breached over 5m (400 requests)"],
    ),
    (
        "no feedback is not a breach",
        replace(HEALTHY, satisfaction=None),
        Verdict.MET,
        Reason.SLO_MET,
        (),
        ["all measured objectives met over 5m", "satisfaction not judged: no feedback in the window"],
    ),
    (
        "no feedback beside a breach",
        replace(HEALTHY, satisfaction=None, p95_latency_seconds=1.83),
        Verdict.BREACHED,
        Reason.SLO_BREACHED,
        ("p95LatencyMs=1830>1000",),
        ["1 of 3 objectives breached", "satisfaction not judged: no feedback in the window"],
    ),
    (
        "one rater cannot rate a revision into a breach",
        replace(HEALTHY, satisfaction=0.1, raters=1),
        Verdict.MET,
        Reason.SLO_MET,
        (),
        ["all measured objectives met over 5m", "satisfaction not judged: 1 distinct raters < minRaters 3"],
    ),
    (
        "too few raters beside a breach",
        replace(HEALTHY, satisfaction=0.1, raters=2, p95_latency_seconds=1.83),
        Verdict.BREACHED,
        Reason.SLO_BREACHED,
        ("p95LatencyMs=1830>1000",),
        ["1 of 3 objectives breached", "satisfaction not judged: 2 distinct raters < minRaters 3"],
    ),
    (
        "an unknown number of raters is too few",
        replace(HEALTHY, satisfaction=0.1, raters=None),
        Verdict.MET,
        Reason.SLO_MET,
        (),
        ["satisfaction not judged: the number of distinct raters is unknown (no ragops_feedback_raters series)"],
    ),
    (
        "missing latency series",
        replace(HEALTHY, p95_latency_seconds=None),
        Verdict.MET,
        Reason.SLO_MET,
        (),
        ["p95LatencyMs not judged: no data in the window"],
    ),
    (
        "NaN is no data, not a pass",
        replace(HEALTHY, error_ratio=math.nan, cost_per_query_usd=0.5),
        Verdict.BREACHED,
        Reason.SLO_BREACHED,
        ("costPerQueryUsd=0.5>0.01",),
        ["errorRate not judged: no data in the window"],
    ),
    (
        "low traffic hides even a slow revision",
        replace(HEALTHY, requests=12, p95_latency_seconds=30.0, error_ratio=1.0),
        Verdict.INCONCLUSIVE,
        Reason.SLO_INCONCLUSIVE,
        (),
        ["12 requests < minRequests 20 over 5m"],
    ),
    (
        "fractional requests just under the minimum",
        replace(HEALTHY, requests=19.6),
        Verdict.INCONCLUSIVE,
        Reason.SLO_INCONCLUSIVE,
        (),
        ["19.6 requests < minRequests 20"],
    ),
    (
        "no query series",
        replace(HEALTHY, requests=None),
        Verdict.INCONCLUSIVE,
        Reason.SLO_INCONCLUSIVE,
        (),
        ["no query series over 5m"],
    ),
    (
        "nothing measurable despite traffic",
        SloSample(requests=30, p95_latency_seconds=None, error_ratio=None, satisfaction=None, cost_per_query_usd=None),
        Verdict.INCONCLUSIVE,
        Reason.SLO_INCONCLUSIVE,
        (),
        ["no objective could be measured over 5m (30 requests)", "satisfaction not judged"],
    ),
    (
        "Prometheus down",
        None,
        Verdict.INCONCLUSIVE,
        Reason.METRICS_UNAVAILABLE,
        (),
        ["Prometheus could not be queried", "not checked"],
    ),
]


@pytest.mark.parametrize(
    ("sample", "verdict", "reason", "breaches", "fragments"),
    [case[1:] for case in JUDGE_CASES],
    ids=[case[0] for case in JUDGE_CASES],
)
def test_judge(
    sample: SloSample | None, verdict: Verdict, reason: Reason, breaches: tuple[str, ...], fragments: list[str]
) -> None:
    check = judge(sample, SLO)
    assert (check.verdict, check.reason, check.breaches) == (verdict, reason, breaches)
    for fragment in fragments:
        assert fragment in check.message


def test_judge_uses_the_spec_thresholds() -> None:
    strict = SloSpec(p95_latency_ms=300, min_requests=200, window="1m", check_interval="15s")
    assert judge(HEALTHY, strict).message.startswith("120 requests < minRequests 200 over 1m")
    lenient = SloSpec(min_requests=0)
    zero = SloSample(requests=0, p95_latency_seconds=None, error_ratio=None, satisfaction=None, cost_per_query_usd=None)
    # No minimum, no traffic: still no evidence either way.
    assert judge(zero, lenient).verdict is Verdict.INCONCLUSIVE
    busy = replace(HEALTHY, requests=500)
    assert judge(busy, SloSpec(p95_latency_ms=300, min_requests=200)).breaches == ("p95LatencyMs=420>300",)


# ---- advance -------------------------------------------------------------------------------------------

MET = judge(HEALTHY, SLO)
BREACHED = judge(replace(HEALTHY, p95_latency_seconds=1.83), SLO)
QUIET = judge(replace(HEALTHY, requests=3), SLO)
DOWN = judge(None, SLO)
BY_LETTER = {"M": MET, "B": BREACHED, "I": QUIET, "U": DOWN}

ADVANCE_CASES = [
    ("breaches count up", "BBB", [1, 2, 3]),
    ("met resets", "BBMB", [1, 2, 0, 1]),
    ("flapping never reaches three", "BMBMBBMBBM", [1, 0, 1, 0, 1, 2, 0, 1, 2, 0]),
    ("quiet windows keep the count", "BBIIB", [1, 2, 2, 2, 3]),
    ("Prometheus outages keep the count", "BUUBU", [1, 1, 1, 2, 2]),
    ("inconclusive is no evidence of health either", "IMIIM", [0, 0, 0, 0, 0]),
    ("met after quiet still resets", "BBIM", [1, 2, 2, 0]),
]


@pytest.mark.parametrize(("letters", "counts"), [c[1:] for c in ADVANCE_CASES], ids=[c[0] for c in ADVANCE_CASES])
def test_advance(letters: str, counts: list[int]) -> None:
    state = WatchState()
    seen = []
    for letter in letters:
        state = advance(state, BY_LETTER[letter])
        assert state.last_check is BY_LETTER[letter]
        seen.append(state.consecutive_breaches)
    assert seen == counts


def test_flapping_never_rolls_back_at_threshold_three() -> None:
    state = WatchState()
    for letter in "BMBMBMBMBM" * 3:
        state = advance(state, BY_LETTER[letter])
        decision = decide_rollback(
            state, SLO, RolloutSpec(), baking=False, has_known_good=True, current_revision_rolled_back=False
        )
        assert not decision.roll_back, decision.message


# ---- decide_rollback -----------------------------------------------------------------------------------


def _state(count: int, last: SloCheck | None = BREACHED) -> WatchState:
    return WatchState(consecutive_breaches=count, last_check=last)


ON, OFF = RolloutSpec(), RolloutSpec(auto_rollback=False)
FT1 = SloSpec(failure_threshold=1)
FT5 = SloSpec(failure_threshold=5)

ROLLBACK_CASES: list[tuple[str, WatchState, SloSpec, RolloutSpec, bool, bool, bool, bool, Reason, str]] = [
    # id, state, slo, rollout, baking, has_known_good, rolled_back, -> roll_back, reason, message fragment
    ("nothing checked yet", WatchState(), SLO, ON, False, True, False, False, Reason.SLO_INCONCLUSIVE, "0 consecutive"),
    ("healthy", _state(0, MET), SLO, ON, False, True, False, False, Reason.SLO_MET, "< threshold 3 after bake"),
    (
        "below threshold after bake",
        _state(2),
        SLO,
        ON,
        False,
        True,
        False,
        False,
        Reason.SLO_BREACHED,
        "2 consecutive breached checks < threshold 3 after bake; no rollback",
    ),
    (
        "threshold reached after bake",
        _state(3),
        SLO,
        ON,
        False,
        True,
        False,
        True,
        Reason.ROLLED_BACK,
        "3 consecutive breached checks >= threshold 3 after bake (last: p95LatencyMs=1830>1000); rolling back",
    ),
    ("bake is stricter", _state(2), SLO, ON, True, True, False, True, Reason.ROLLED_BACK, ">= threshold 2 during bake"),
    ("bake still needs evidence", _state(1), SLO, ON, True, True, False, False, Reason.SLO_BREACHED, "< threshold 2"),
    ("bake with threshold 1", _state(1), FT1, ON, True, True, False, True, Reason.ROLLED_BACK, "threshold 1"),
    ("bake rounds half up", _state(2), FT5, ON, True, True, False, False, Reason.SLO_BREACHED, "< threshold 3"),
    (
        "a quiet check after the threshold still counts",
        _state(3, QUIET),
        SLO,
        ON,
        False,
        True,
        False,
        True,
        Reason.ROLLED_BACK,
        "3 consecutive breached checks >= threshold 3 after bake; rolling back",
    ),
    (
        "autoRollback off reports only",
        _state(3),
        SLO,
        OFF,
        False,
        True,
        False,
        False,
        Reason.ROLLBACK_DISABLED,
        "autoRollback is off, so the breach is reported only",
    ),
    (
        "autoRollback off wins over every other reason",
        _state(5),
        SLO,
        OFF,
        True,
        False,
        True,
        False,
        Reason.ROLLBACK_DISABLED,
        "reported only",
    ),
    (
        "no known-good revision",
        _state(3),
        SLO,
        ON,
        False,
        False,
        False,
        False,
        Reason.SLO_BREACHED,
        "no known-good revision to return to: Degraded until the spec changes",
    ),
    (
        "no rollback loops",
        _state(3),
        SLO,
        ON,
        False,
        True,
        True,
        False,
        Reason.SLO_BREACHED,
        "already the result of a rollback, so it is not rolled back again (no rollback loops)",
    ),
]


@pytest.mark.parametrize(
    ("state", "slo", "rollout", "baking", "has_known_good", "rolled_back", "roll_back", "reason", "fragment"),
    [case[1:] for case in ROLLBACK_CASES],
    ids=[case[0] for case in ROLLBACK_CASES],
)
def test_decide_rollback(
    state: WatchState,
    slo: SloSpec,
    rollout: RolloutSpec,
    baking: bool,
    has_known_good: bool,
    rolled_back: bool,
    roll_back: bool,
    reason: Reason,
    fragment: str,
) -> None:
    decision = decide_rollback(
        state, slo, rollout, baking=baking, has_known_good=has_known_good, current_revision_rolled_back=rolled_back
    )
    assert (decision.roll_back, decision.reason) == (roll_back, reason)
    assert fragment in decision.message


@pytest.mark.parametrize(
    ("failure_threshold", "during_bake"),
    [(1, 1), (2, 1), (3, 2), (4, 2), (5, 3), (10, 5), (99, 50), (100, 50)],
)
def test_rollback_threshold(failure_threshold: int, during_bake: int) -> None:
    slo = SloSpec(failure_threshold=failure_threshold)
    assert rollback_threshold(slo, baking=True) == during_bake
    assert rollback_threshold(slo, baking=False) == failure_threshold


def test_bake_is_never_laxer_and_never_zero() -> None:
    for failure_threshold in range(1, 101):
        slo = SloSpec(failure_threshold=failure_threshold)
        assert 1 <= rollback_threshold(slo, baking=True) <= rollback_threshold(slo, baking=False)


def test_a_bad_bake_rolls_back_on_the_second_breach() -> None:
    """The pure loop a handler runs: samples in, a rollback out, as soon as the bake threshold is met."""
    slow = replace(HEALTHY, p95_latency_seconds=2.0)
    samples: list[SloSample | None] = [HEALTHY, slow, None, replace(HEALTHY, requests=5), slow]
    state = WatchState()
    decisions = []
    for sample in samples:
        state = advance(state, judge(sample, SLO))
        decision = decide_rollback(
            state, SLO, RolloutSpec(), baking=True, has_known_good=True, current_revision_rolled_back=False
        )
        decisions.append((state.consecutive_breaches, decision.roll_back))
    assert decisions == [(0, False), (1, False), (1, False), (1, False), (2, True)]


# ---- bake_complete -------------------------------------------------------------------------------------

BAKE = timedelta(minutes=10)
BAKE_CASES = [
    ("still baking", timedelta(minutes=9, seconds=59), _state(0, MET), False),
    ("still baking and never checked", timedelta(minutes=5), WatchState(), False),
    ("baked and met", BAKE, _state(0, MET), True),
    ("baked but the last check breached", timedelta(hours=1), _state(1), False),
    ("baked without traffic", timedelta(minutes=11), _state(0, QUIET), True),
    ("baked while Prometheus was down", timedelta(minutes=11), _state(0, DOWN), True),
    ("baked, an old breach then quiet", timedelta(minutes=11), _state(1, QUIET), True),
    ("baked and never checked (no Prometheus configured)", timedelta(minutes=10), WatchState(), True),
]


@pytest.mark.parametrize(("elapsed", "state", "complete"), [c[1:] for c in BAKE_CASES], ids=[c[0] for c in BAKE_CASES])
def test_bake_complete(elapsed: timedelta, state: WatchState, complete: bool) -> None:
    assert bake_complete(NOW - elapsed, BAKE, NOW, state) is complete


def test_a_breach_at_the_deadline_holds_the_bake_until_a_better_check() -> None:
    promoted_at = NOW - timedelta(minutes=12)
    state = advance(WatchState(), BREACHED)
    assert not bake_complete(promoted_at, BAKE, NOW, state)
    assert bake_complete(promoted_at, BAKE, NOW, advance(state, MET))


# ---- status.slo ----------------------------------------------------------------------------------------


def test_the_status_records_the_check_and_the_count() -> None:
    sample = replace(HEALTHY, p95_latency_seconds=1.83, satisfaction=None)
    state = advance(_state(1), judge(sample, SLO))
    measured = to_measurement(state, sample, checked_at=NOW)
    assert measured.model_dump(by_alias=True, mode="json") == {
        "verdict": "Breached",
        "requests": 120.0,
        "p95LatencyMs": 1830.0,
        "errorRate": 0.0,
        "satisfaction": None,
        "raters": 5.0,
        "costPerQueryUsd": 0.002,
        "consecutiveBreaches": 2,
        "checkedAt": "2026-11-21T12:00:00Z",
    }


def test_min_raters_0_judges_satisfaction_on_any_ratings() -> None:
    lenient = SloSpec(min_raters=0)
    assert judge(replace(HEALTHY, satisfaction=0.1, raters=None), lenient).breaches == ("satisfaction=0.1<0.65",)
    assert judge(replace(HEALTHY, satisfaction=0.1, raters=3), SLO).breaches == ("satisfaction=0.1<0.65",)


def test_the_status_of_an_unavailable_check_has_no_values() -> None:
    measured = to_measurement(advance(_state(2), DOWN), None, checked_at=NOW)
    assert (measured.verdict, measured.consecutive_breaches) == ("Inconclusive", 2)
    assert (measured.requests, measured.p95_latency_ms, measured.error_rate) == (None, None, None)


def test_the_status_needs_a_check() -> None:
    with pytest.raises(ValueError, match="advance"):
        to_measurement(WatchState(), HEALTHY, checked_at=NOW)


@pytest.mark.parametrize("check", [MET, BREACHED, QUIET], ids=["met", "breached", "inconclusive"])
def test_the_watch_resumes_from_the_status_after_a_restart(check: SloCheck) -> None:
    state = advance(_state(2), check)
    restored = state_from_measurement(
        SloMeasurement.model_validate(to_measurement(state, HEALTHY, checked_at=NOW).model_dump(by_alias=True))
    )
    assert restored.consecutive_breaches == state.consecutive_breaches
    assert restored.last_check is not None
    assert (restored.last_check.verdict, restored.last_check.reason) == (check.verdict, check.reason)
    # The decisions read only the count and the verdict, so they come out the same after a restart.
    for baking in (True, False):
        kwargs = {"baking": baking, "has_known_good": True, "current_revision_rolled_back": False}
        assert (
            decide_rollback(restored, SLO, ON, **kwargs).roll_back
            == decide_rollback(state, SLO, ON, **kwargs).roll_back
        )
    assert bake_complete(NOW - BAKE, BAKE, NOW, restored) == bake_complete(NOW - BAKE, BAKE, NOW, state)


def test_no_status_is_a_fresh_watch() -> None:
    assert state_from_measurement(None) == WatchState(consecutive_breaches=0, last_check=None)
