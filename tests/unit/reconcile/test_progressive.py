"""The progressive-rollout step machine: every transition, as pure functions of observation and time.

`Driver` plays the controller: it keeps `status.rollout` between passes the way the apiserver does
(JSON out, JSON in), hands the machine the candidate's readiness, manual actions and Prometheus
readings, and remembers what the machine asked for (split, hold, promote).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ragops_operator.api.conditions import Reason, RolloutPhase
from ragops_operator.api.ragdeployment import SloSpec
from ragops_operator.api.rollout import AnalysisVerdict, RolloutStatus, RolloutStrategy
from ragops_operator.reconcile.analysis import AnalysisReading, Proportion, ShadowReading, TrafficReading
from ragops_operator.reconcile.progressive import (
    ACTION_ANNOTATION,
    SET_WEIGHT_ANNOTATION,
    Action,
    ManualAction,
    ProgressiveObservation,
    ProgressivePlan,
    TrafficChange,
    measurement_due,
    measurement_window,
    parse_actions,
    plan_progressive,
    steps_hash,
)
from ragops_operator.reconcile.ragdeployment import DesiredVersion, VersionReadiness
from ragops_operator.rollout import rollout_status

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
SLO = SloSpec(failure_threshold=3)  # the candidate aborts after ceil(3/2) = 2 breached checks

CANARY = {
    "canary": {
        "steps": [
            {"setWeight": 10},
            {"shadow": {"percent": 50}},
            {"analysis": {"duration": "5m"}},
            {"setWeight": 50},
            {"pause": {"duration": "2m"}},
            {"pause": {}},
        ],
        "timeout": "1h",
    }
}


def strategy(document: dict[str, Any] = CANARY) -> RolloutStrategy:
    return RolloutStrategy.model_validate(document)


def ready(name: str = "docs-v2") -> DesiredVersion:
    return DesiredVersion(name, VersionReadiness.READY)


# Readings: enough user traffic, probes and shadow comparisons to conclude.
def healthy_reading(window: float = 300) -> AnalysisReading:
    return AnalysisReading(
        window_seconds=window,
        stable=TrafficReading(requests=2000, errors=2, p95_seconds=0.3, cost_usd=2.0),
        canary=TrafficReading(requests=200, errors=0, p95_seconds=0.31, cost_usd=0.2),
        stable_probes=TrafficReading(requests=100, errors=0, p95_seconds=0.05),
        canary_probes=TrafficReading(requests=100, errors=0, p95_seconds=0.05),
        stable_recall=Proportion(95, 100),
        canary_recall=Proportion(94, 100),
        shadow=ShadowReading(overlap_sum=80, comparisons=100),
    )


def slow_reading() -> AnalysisReading:
    reading = healthy_reading()
    return AnalysisReading(**{**reading.__dict__, "canary": TrafficReading(200, 0, 0.9, 0.2)})


def quiet_reading() -> AnalysisReading:
    return AnalysisReading(window_seconds=300)


def breaching_reading() -> AnalysisReading:
    """Relatively fine (stable is as slow), but above the absolute p95 SLO of 1000 ms."""
    reading = healthy_reading()
    return AnalysisReading(
        **{
            **reading.__dict__,
            "stable": TrafficReading(2000, 2, 1.5, 2.0),
            "canary": TrafficReading(200, 0, 1.5, 0.2),
        }
    )


@dataclass
class Driver:
    strategy: RolloutStrategy = field(default_factory=strategy)
    candidate: DesiredVersion = field(default_factory=ready)
    stable: str | None = "docs-v1"
    stable_baking: bool = False
    rolled_back: bool = False
    status: RolloutStatus | None = None
    now: datetime = T0
    plan: ProgressivePlan | None = None
    events: list[tuple[str, str]] = field(default_factory=list)
    stored: Any = None

    def tick(
        self,
        seconds: float = 0,
        *,
        actions: tuple[ManualAction, ...] = (),
        reading: AnalysisReading | None = None,
        measured: bool | None = None,
        unavailable: str = "",
    ) -> ProgressivePlan:
        self.now += timedelta(seconds=seconds)
        plan = plan_progressive(
            ProgressiveObservation(
                strategy=self.strategy,
                slo=SLO,
                candidate=self.candidate,
                stable=self.stable,
                stable_baking=self.stable_baking,
                rolled_back=self.rolled_back,
                previous=self.status,
                now=self.now,
                actions=actions,
                measured=reading is not None if measured is None else measured,
                reading=reading,
                unavailable=unavailable,
            )
        )
        self.plan = plan
        self.events += [(e.reason, e.message) for e in plan.events]
        # Written as the operator writes it (a JSON merge patch of rollout_status' dict) and read back:
        # only what survives JSON and the merge survives a pass.
        rollout, _ = rollout_status(plan, [], 1, self.now)
        self.stored = merge_patch(self.stored, rollout)
        self.status = None if self.stored is None else RolloutStatus.model_validate(self.stored)
        return plan

    @property
    def state(self) -> RolloutStatus:
        assert self.status is not None
        return self.status

    def phase(self) -> RolloutPhase:
        return self.state.phase

    def reasons(self) -> list[str]:
        return [reason for reason, _ in self.events]

    def conditions(self) -> dict[str, tuple[str, str]]:
        assert self.plan is not None and self.plan.conditions is not None
        return {c.type: (c.status, c.reason) for c in self.plan.conditions}


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386, as the apiserver applies the operator's status patches: null deletes, objects merge."""
    if not isinstance(patch, dict):
        return patch
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


def act(action: Action, weight: int | None = None) -> ManualAction:
    return ManualAction(action, action.value if weight is None else f"set-weight={weight}", weight)


def started() -> Driver:
    driver = Driver()
    driver.tick()
    return driver


# ---- starting ------------------------------------------------------------------------------------------


def test_a_ready_candidate_starts_and_runs_the_instant_steps_at_once() -> None:
    driver = Driver()
    plan = driver.tick()
    state = driver.state
    assert state.phase is RolloutPhase.PROGRESSING
    assert (state.stable_version, state.canary_version) == ("docs-v1", "docs-v2")
    # setWeight 10 and shadow 50 complete in the first pass; the analysis step waits.
    assert (state.current_step_index, state.steps, state.weight, state.shadow_percent) == (2, 6, 10, 50.0)
    assert plan.traffic is TrafficChange.SET and plan.hold and not plan.promote
    assert plan.target is not None
    assert (plan.target.canary, plan.target.weight, plan.target.shadow_percent) == ("docs-v2", 10, 50.0)
    assert plan.target.split_id == state.rollout_id and plan.target.probes
    assert driver.reasons() == ["RolloutStarted", "WeightChanged", "WeightChanged"]
    assert driver.events[0][1] == "canary rollout of docs-v2 against docs-v1: 6 steps"
    assert plan.overlay.progressing is not None and plan.overlay.progressing[0] == Reason.ROLLOUT_PROGRESSING
    assert plan.overlay.progressing[1].startswith("step 3/6 (analysis 5m), 5m00s left: docs-v2 answers 10% of users")
    assert driver.conditions() == {
        "Promoted": ("False", "RolloutProgressing"),
        "Aborted": ("False", "RolloutProgressing"),
        "Paused": ("False", "RolloutProgressing"),
    }


def test_the_split_id_is_constant_for_the_rollout_so_raising_the_weight_never_flips_a_client_back() -> None:
    driver = started()
    first = driver.state.rollout_id
    driver.tick(301, reading=healthy_reading())
    assert driver.state.weight == 50 and driver.state.rollout_id == first


def test_nothing_served_yet_means_no_canary() -> None:
    driver = Driver(stable=None)
    plan = driver.tick()
    assert not plan.hold and not plan.promote and plan.traffic is TrafficChange.CLEAR
    assert driver.phase() is RolloutPhase.PROGRESSING
    assert "promoted directly" in driver.state.message


def test_a_candidate_not_ready_yet_waits_without_a_split() -> None:
    driver = Driver(candidate=DesiredVersion("docs-v2", VersionReadiness.PENDING, "docs-v2 is Building"))
    plan = driver.tick()
    assert not plan.hold and plan.traffic is TrafficChange.CLEAR
    assert driver.phase() is RolloutPhase.PROGRESSING and driver.state.current_step_index is None
    assert driver.conditions()["Promoted"] == ("False", "VersionNotReady")
    driver.candidate = ready()
    driver.tick(5)
    assert driver.state.current_step_index == 2 and "RolloutStarted" in driver.reasons()


@pytest.mark.parametrize(
    ("readiness", "reason"),
    [(VersionReadiness.FAILED, "VersionFailedGate"), (VersionReadiness.INVALID, "InvalidSpec")],
)
def test_a_candidate_that_can_never_serve_is_aborted_before_it_starts(readiness: VersionReadiness, reason: str) -> None:
    driver = Driver(candidate=DesiredVersion("docs-v2", readiness, "spec.knowledgeBase.version: other KB"))
    plan = driver.tick()
    assert driver.phase() is RolloutPhase.ABORTED and driver.state.abort is not None
    assert driver.state.abort.reason == reason
    # The deployment's own conditions report it (plan_rollout); nothing is held or split.
    assert not plan.hold and plan.traffic is TrafficChange.CLEAR and plan.overlay.degraded is None
    assert driver.conditions()["Aborted"] == ("True", reason)
    first = driver.state.abort.at
    driver.tick(60)
    assert driver.state.abort is not None and driver.state.abort.at == first  # stable, not re-stamped


def test_the_served_version_means_a_settled_healthy_rollout() -> None:
    driver = Driver(candidate=ready("docs-v1"))
    plan = driver.tick()
    assert driver.phase() is RolloutPhase.HEALTHY and not plan.hold
    assert driver.conditions()["Promoted"] == ("True", "Promoted")


# ---- steps ---------------------------------------------------------------------------------------------


def test_an_analysis_step_completes_only_on_a_pass_taken_after_its_duration() -> None:
    driver = started()
    driver.tick(120, reading=healthy_reading())
    assert driver.state.current_step_index == 2  # passing, but the 5 minutes are not over
    assert driver.state.analysis is not None and driver.state.analysis.verdict is AnalysisVerdict.PASS
    driver.tick(180)  # the duration is over, but no check was taken after it
    assert driver.state.current_step_index == 2
    driver.tick(1, reading=healthy_reading())
    # Analysis passed; setWeight 50 is instant; the 2-minute pause waits.
    assert (driver.state.current_step_index, driver.state.weight, driver.state.shadow_percent) == (4, 50, 0)
    assert "AnalysisPassed" in driver.reasons()


def test_set_weight_ends_the_shadow_share_and_restarts_the_analysis_window() -> None:
    driver = started()
    driver.tick(301, reading=healthy_reading())
    assert driver.state.shadow_percent == 0
    assert driver.state.split_started_at == driver.now


def test_a_pause_with_a_duration_waits_then_continues() -> None:
    driver = started()
    driver.tick(301, reading=healthy_reading())
    driver.tick(119)
    assert driver.state.current_step_index == 4 and driver.phase() is RolloutPhase.PROGRESSING
    driver.tick(1)
    assert driver.state.current_step_index == 5
    assert driver.phase() is RolloutPhase.PAUSED and driver.state.pause_reason == "Step"


def test_a_pause_without_a_duration_waits_for_promote_not_resume() -> None:
    driver = started()
    driver.tick(301, reading=healthy_reading())
    driver.tick(120)
    assert driver.phase() is RolloutPhase.PAUSED
    assert driver.conditions()["Paused"] == ("True", "RolloutPaused")
    driver.tick(3600 * 5)  # hours: an indefinite pause is not counted by the timeout
    assert driver.phase() is RolloutPhase.PAUSED
    driver.tick(1, actions=(act(Action.RESUME),))
    assert driver.phase() is RolloutPhase.PAUSED and driver.events[-1][0] == "ActionIgnored"
    plan = driver.tick(1, actions=(act(Action.PROMOTE),))
    assert plan.promote and not plan.hold and plan.traffic is TrafficChange.LEAVE
    assert driver.phase() is RolloutPhase.PROMOTING
    assert driver.state.held_seconds > 3600 * 5
    assert driver.conditions()["Promoted"] == ("True", "Promoted")


def test_after_the_last_step_the_candidate_is_promoted_then_bakes_then_is_healthy() -> None:
    driver = Driver(strategy=strategy({"canary": {"steps": [{"setWeight": 20}, {"pause": {"duration": "1m"}}]}}))
    driver.tick()
    plan = driver.tick(60)
    assert plan.promote and driver.reasons()[-1] == "RolloutPromoting"
    # The controller switched the pointer: the candidate is served and bakes.
    driver.stable, driver.stable_baking = "docs-v2", True
    plan = driver.tick(2)
    assert driver.phase() is RolloutPhase.PROMOTING and not plan.hold and not plan.promote
    driver.stable_baking = False
    driver.tick(600)
    assert driver.phase() is RolloutPhase.HEALTHY and driver.state.canary_version is None


def test_the_shadow_strategy_mirrors_analyses_then_switches() -> None:
    driver = Driver(strategy=strategy({"shadow": {"percent": 30, "duration": "2m"}}))
    plan = driver.tick()
    assert driver.state.strategy == "shadow"
    assert (driver.state.weight, driver.state.shadow_percent, driver.state.current_step_index) == (0, 30.0, 1)
    assert plan.target is not None and plan.target.weight == 0
    reading = AnalysisReading(
        window_seconds=120,
        stable_probes=TrafficReading(60, 0, 0.05),
        canary_probes=TrafficReading(60, 0, 0.05),
        stable_recall=Proportion(57, 60),
        canary_recall=Proportion(57, 60),
        shadow=ShadowReading(overlap_sum=30, comparisons=40),
    )
    plan = driver.tick(120, reading=reading)
    assert plan.promote, driver.state.analysis
    objectives = [o.name for o in driver.state.analysis.objectives] if driver.state.analysis else []
    # No user traffic on the candidate: latency and errors from probes, plus overlap and recall.
    assert objectives == ["p95LatencyMs", "errorRate", "shadowOverlap (rbo@document)", "goldenRecall"]


# ---- analysis and protection ---------------------------------------------------------------------------


def test_failed_checks_in_a_row_abort_at_once_and_clear_the_split() -> None:
    driver = started()
    driver.tick(30, reading=slow_reading())
    assert driver.phase() is RolloutPhase.PROGRESSING
    assert driver.state.analysis is not None and driver.state.analysis.consecutive_failures == 1
    plan = driver.tick(30, reading=slow_reading())
    state = driver.state
    assert state.phase is RolloutPhase.ABORTED and state.abort is not None
    assert state.abort.reason == "AnalysisFailed" and state.abort.step_index == 2
    assert "p95LatencyMs Fail: canary 900 vs stable 300" in state.abort.message
    assert (state.weight, state.shadow_percent) == (0, 0)
    assert plan.traffic is TrafficChange.CLEAR and plan.hold and not plan.promote
    assert plan.overlay.degraded is not None and plan.overlay.degraded[0] == "AnalysisFailed"
    assert "aborted at step 3/6 (analysis 5m)" in plan.overlay.degraded[1]
    assert driver.conditions() == {
        "Promoted": ("False", "AnalysisFailed"),
        "Aborted": ("True", "AnalysisFailed"),
        "Paused": ("False", "AnalysisFailed"),
    }
    assert driver.events[-1][0] == "RolloutAborted"


def test_a_pass_resets_the_failure_count() -> None:
    driver = started()
    driver.tick(30, reading=slow_reading())
    driver.tick(30, reading=healthy_reading())
    driver.tick(30, reading=slow_reading())
    assert driver.phase() is RolloutPhase.PROGRESSING
    assert driver.state.analysis is not None and driver.state.analysis.consecutive_failures == 1


def test_analysis_failures_outside_an_analysis_step_are_shown_but_do_not_abort() -> None:
    driver = Driver(
        strategy=strategy({"canary": {"steps": [{"setWeight": 10}, {"pause": {"duration": "10m"}}], "timeout": "1h"}})
    )
    driver.tick()
    for _ in range(4):
        driver.tick(30, reading=slow_reading())
    assert driver.phase() is RolloutPhase.PROGRESSING
    assert driver.state.analysis is not None and driver.state.analysis.verdict is AnalysisVerdict.FAIL


def test_inconclusive_checks_wait_during_the_step_and_abort_after_max_inconclusive() -> None:
    driver = started()
    for _ in range(9):  # 4.5 minutes of no data: normal while the step runs
        driver.tick(30, reading=quiet_reading())
    assert driver.state.analysis is not None and driver.state.analysis.consecutive_inconclusive == 0
    driver.tick(30, reading=quiet_reading())  # at 5m: the step is due, the verdict is not there
    assert driver.state.analysis is not None and driver.state.analysis.consecutive_inconclusive == 1
    for _ in range(5):
        driver.tick(30, reading=quiet_reading())
    assert driver.phase() is RolloutPhase.PROGRESSING  # 6 = maxInconclusive: not more than it yet
    driver.tick(30, reading=quiet_reading())
    assert driver.phase() is RolloutPhase.ABORTED
    assert driver.state.abort is not None and driver.state.abort.reason == "AnalysisInconclusive"
    assert "7 inconclusive checks in a row" in driver.state.abort.message


def test_an_unreachable_prometheus_is_inconclusive_never_a_pass() -> None:
    driver = started()
    driver.tick(300, measured=True)
    assert driver.state.analysis is not None and driver.state.analysis.verdict is AnalysisVerdict.INCONCLUSIVE
    assert driver.state.analysis.slo_verdict == "Inconclusive"
    assert driver.state.current_step_index == 2
    assert driver.state.analysis.consecutive_inconclusive == 1


def test_a_prometheus_outage_names_its_cause_once_and_its_end_once() -> None:
    driver = started()
    why = "Prometheus at http://prom:9090/api/v1/query failed the requests query: ConnectError: refused"
    for _ in range(3):
        driver.tick(3, measured=True, unavailable=why)
        analysis = driver.state.analysis
        assert analysis is not None and analysis.verdict is AnalysisVerdict.INCONCLUSIVE
        assert analysis.message == f"Prometheus could not be queried ({why}): nothing compared, nothing decided"
    outage = [m for r, m in driver.events if r == "PrometheusUnavailable"]
    assert outage == [f"Prometheus could not be queried ({why}): nothing compared, nothing decided"]
    assert driver.phase() is RolloutPhase.PROGRESSING and driver.state.current_step_index == 2
    assert "AnalysisPassed" not in driver.reasons() and "RolloutAborted" not in driver.reasons()

    driver.tick(300, reading=healthy_reading())  # back, past the step's duration: the step passes
    assert [r for r in driver.reasons() if r.startswith("Prometheus")] == [
        "PrometheusUnavailable",
        "PrometheusAvailable",
    ]
    assert "AnalysisPassed" in driver.reasons() and driver.state.current_step_index > 2


def test_the_candidates_absolute_slo_breach_aborts_in_any_step() -> None:
    driver = started()
    driver.tick(301, reading=healthy_reading())
    assert driver.state.current_step_index == 4  # in the 2-minute pause
    driver.tick(30, reading=breaching_reading())
    assert driver.state.analysis is not None and driver.state.analysis.consecutive_slo_breaches == 1
    driver.tick(30, reading=breaching_reading())
    assert driver.phase() is RolloutPhase.ABORTED
    assert driver.state.abort is not None and driver.state.abort.reason == "SLOBreached"
    assert "p95LatencyMs=1500>1000" in driver.state.abort.message


def test_a_candidate_no_longer_ready_aborts() -> None:
    driver = started()
    driver.candidate = DesiredVersion("docs-v2", VersionReadiness.MISSING, "KnowledgeBaseVersion docs-v2 not found")
    plan = driver.tick(5)
    assert driver.state.abort is not None and driver.state.abort.reason == "CandidateNotReady"
    assert "KnowledgeBaseVersion docs-v2 not found" in driver.state.abort.message
    assert plan.traffic is TrafficChange.CLEAR and plan.hold


def test_the_timeout_aborts_a_rollout_that_takes_too_long() -> None:
    steps = [{"setWeight": 10}, {"analysis": {"duration": "30m"}}]
    driver = Driver(strategy=strategy({"canary": {"steps": steps, "timeout": "40m"}}))
    driver.tick()
    driver.tick(40 * 60)  # no check ever concluded: the step waits, up to the timeout
    assert driver.phase() is RolloutPhase.PROGRESSING
    driver.tick(1)
    assert driver.state.abort is not None and driver.state.abort.reason == "RolloutTimeout"
    assert "ran longer than its timeout 40m" in driver.state.abort.message


# ---- aborted: no retry loop ------------------------------------------------------------------------------


def aborted() -> Driver:
    driver = started()
    driver.tick(1, actions=(act(Action.ABORT),))
    assert driver.state.abort is not None and driver.state.abort.reason == "ManualAbort"
    return driver


def test_an_aborted_candidate_stays_aborted_and_is_never_retried_by_itself() -> None:
    driver = aborted()
    for _ in range(10):
        plan = driver.tick(600, reading=healthy_reading())
        assert plan.hold and plan.traffic is TrafficChange.CLEAR and plan.overlay.degraded is not None
    assert driver.phase() is RolloutPhase.ABORTED
    assert driver.reasons().count("RolloutStarted") == 1 and "RolloutRestarted" not in driver.reasons()


def test_actions_on_an_aborted_rollout_are_ignored_with_a_reason() -> None:
    driver = aborted()
    driver.tick(1, actions=(act(Action.PROMOTE),))
    assert driver.phase() is RolloutPhase.ABORTED
    assert driver.events[-1][0] == "ActionIgnored" and "kubectl ragops retry" in driver.events[-1][1]
    assert driver.state.last_action is not None and driver.state.last_action.outcome.startswith("ignored")


def test_retry_starts_an_aborted_rollout_again_from_the_first_step() -> None:
    driver = aborted()
    first = driver.state.rollout_id
    driver.tick(60, actions=(act(Action.RETRY),))
    assert driver.phase() is RolloutPhase.PROGRESSING and driver.state.current_step_index == 2
    assert driver.state.abort is None and driver.state.rollout_id != first
    assert "RolloutRestarted" in driver.reasons()


def test_a_new_version_in_the_spec_starts_a_new_rollout_after_an_abort() -> None:
    driver = aborted()
    driver.candidate = ready("docs-v3")
    driver.tick(60)
    assert driver.phase() is RolloutPhase.PROGRESSING and driver.state.canary_version == "docs-v3"
    assert driver.state.abort is None


def test_a_rolled_back_candidate_is_aborted_and_not_rolled_out_again() -> None:
    driver = Driver(rolled_back=True)
    plan = driver.tick()
    assert driver.phase() is RolloutPhase.ABORTED
    assert driver.state.abort is not None and driver.state.abort.reason == "RolledBack"
    assert not plan.hold and not plan.promote and plan.traffic is TrafficChange.CLEAR


# ---- spec edits mid-rollout ----------------------------------------------------------------------------


def test_a_new_version_mid_rollout_restarts_from_the_first_step() -> None:
    driver = started()
    driver.tick(301, reading=healthy_reading())
    first = driver.state.rollout_id
    driver.candidate = ready("docs-v3")
    plan = driver.tick(5)
    assert driver.state.canary_version == "docs-v3" and driver.state.current_step_index == 2
    assert driver.state.rollout_id != first and plan.target is not None and plan.target.canary == "docs-v3"
    assert "RolloutRestarted" in driver.reasons()
    assert "spec.knowledgeBase.version changed from docs-v2 mid-rollout" in driver.events[-3][1]


def test_edited_steps_mid_rollout_restart_from_the_first_step() -> None:
    driver = started()
    driver.tick(301, reading=healthy_reading())
    edited = {"canary": {**CANARY["canary"], "steps": [{"setWeight": 5}, {"pause": {}}]}}
    driver.strategy = strategy(edited)
    driver.tick(5)
    assert (driver.state.current_step_index, driver.state.weight, driver.state.steps) == (1, 5, 2)
    assert driver.state.strategy_hash == steps_hash(driver.strategy.progressive().steps)  # type: ignore[union-attr]
    assert "the steps changed mid-rollout" in next(m for r, m in driver.events if r == "RolloutRestarted")


def test_edited_limits_apply_without_a_restart() -> None:
    driver = started()
    before = driver.state.rollout_id
    driver.strategy = strategy({"canary": {**CANARY["canary"], "analysis": {"maxP95LatencyRatio": 5}}})
    driver.tick(30, reading=slow_reading())
    assert driver.state.rollout_id == before
    assert driver.state.analysis is not None and driver.state.analysis.verdict is AnalysisVerdict.PASS


def test_a_changed_stable_version_restarts_the_rollout() -> None:
    driver = started()
    driver.stable = "docs-v0"  # the SLO watch rolled the stable revision back meanwhile
    driver.tick(5)
    assert driver.state.stable_version == "docs-v0" and "RolloutRestarted" in driver.reasons()


def test_switching_to_blue_green_cancels_the_rollout() -> None:
    driver = started()
    driver.strategy = strategy({"blueGreen": {}})
    plan = driver.tick(5)
    assert plan.status is None and plan.conditions is None and not plan.hold
    assert plan.traffic is TrafficChange.CLEAR and driver.reasons()[-1] == "RolloutCancelled"


def test_naming_the_stable_version_again_cancels_the_rollout() -> None:
    driver = started()
    driver.candidate = ready("docs-v1")
    plan = driver.tick(5)
    assert driver.phase() is RolloutPhase.HEALTHY and plan.traffic is TrafficChange.CLEAR
    assert driver.reasons()[-1] == "RolloutCancelled"


# ---- manual actions ------------------------------------------------------------------------------------


def test_a_manual_pause_freezes_the_steps_and_the_timeout_until_resumed() -> None:
    driver = started()
    driver.tick(60, actions=(act(Action.PAUSE),))
    assert driver.phase() is RolloutPhase.PAUSED and driver.state.pause_reason == "Manual"
    driver.tick(3 * 3600, reading=healthy_reading())  # a long pause: neither the step nor the timeout moves
    assert driver.phase() is RolloutPhase.PAUSED and driver.state.current_step_index == 2
    driver.tick(1, actions=(act(Action.RESUME),))
    assert driver.phase() is RolloutPhase.PROGRESSING
    # One minute of the five had passed before the pause: four remain.
    assert driver.state.step_started_at == T0 + timedelta(seconds=1 + 3 * 3600)
    driver.tick(239, reading=healthy_reading())
    assert driver.state.current_step_index == 2
    driver.tick(1, reading=healthy_reading())
    assert driver.state.current_step_index == 4


def test_a_paused_rollout_still_aborts_on_failed_checks() -> None:
    driver = started()
    driver.tick(10, actions=(act(Action.PAUSE),))
    driver.tick(30, reading=slow_reading())
    driver.tick(30, reading=slow_reading())
    assert driver.phase() is RolloutPhase.ABORTED and driver.state.abort is not None
    assert driver.state.abort.reason == "AnalysisFailed"


def test_promote_completes_the_current_step() -> None:
    driver = started()
    driver.tick(10, actions=(act(Action.PROMOTE),))
    # The analysis step is skipped, setWeight 50 applied, the 2-minute pause begins.
    assert (driver.state.current_step_index, driver.state.weight) == (4, 50)
    assert driver.state.last_action is not None
    assert driver.state.last_action.outcome == "step 3/6 (analysis 5m) completed by hand"


def test_promote_full_skips_every_remaining_step() -> None:
    driver = started()
    plan = driver.tick(10, actions=(act(Action.PROMOTE_FULL),))
    assert plan.promote and driver.phase() is RolloutPhase.PROMOTING


def test_set_weight_overrides_the_weight_and_pauses_until_resumed() -> None:
    driver = started()
    plan = driver.tick(10, actions=(act(Action.SET_WEIGHT, 25),))
    assert driver.state.weight == 25 and driver.phase() is RolloutPhase.PAUSED
    assert plan.target is not None and plan.target.weight == 25
    assert driver.state.split_started_at == driver.now  # analysis reads the new weight only
    driver.tick(10, actions=(act(Action.RESUME),))
    driver.tick(300, reading=healthy_reading())
    assert driver.state.weight == 50  # the next setWeight step takes over again


def test_set_weight_and_resume_together_apply_in_that_order() -> None:
    driver = started()
    driver.tick(10, actions=parse_actions({SET_WEIGHT_ANNOTATION: "30", ACTION_ANNOTATION: "resume"}))
    assert driver.state.weight == 30 and driver.phase() is RolloutPhase.PROGRESSING


@pytest.mark.parametrize(
    "annotations",
    [{ACTION_ANNOTATION: "rollback"}, {SET_WEIGHT_ANNOTATION: "120"}, {SET_WEIGHT_ANNOTATION: "ten"}],
)
def test_a_malformed_action_is_ignored_with_a_warning(annotations: dict[str, str]) -> None:
    driver = started()
    before = driver.state.model_copy()
    driver.tick(1, actions=parse_actions(annotations))
    assert driver.events[-1][0] == "ActionIgnored" and "not understood" in driver.events[-1][1]
    assert driver.state.weight == before.weight and driver.phase() is before.phase


def test_actions_without_a_rollout_are_ignored() -> None:
    driver = Driver(candidate=ready("docs-v1"))
    driver.tick(actions=(act(Action.PROMOTE),))
    assert driver.events == [("ActionIgnored", "promote ignored: no rollout is in progress")]


def test_parse_actions() -> None:
    assert parse_actions({}) == ()
    assert parse_actions({ACTION_ANNOTATION: " promote-full "}) == (
        ManualAction(Action.PROMOTE_FULL, " promote-full "),
    )
    assert parse_actions({SET_WEIGHT_ANNOTATION: "0", ACTION_ANNOTATION: "pause", "other": "x"}) == (
        ManualAction(Action.SET_WEIGHT, "set-weight=0", 0),
        ManualAction(Action.PAUSE, "pause"),
    )


# ---- when to measure, over what ----------------------------------------------------------------------


def test_measurement_is_due_every_interval_and_at_the_end_of_an_analysis_step() -> None:
    driver = started()
    rollout = driver.strategy
    assert not measurement_due(driver.state, rollout, driver.now + timedelta(seconds=29))
    assert measurement_due(driver.state, rollout, driver.now + timedelta(seconds=30))
    driver.tick(290, reading=healthy_reading())
    assert not measurement_due(driver.state, rollout, driver.now + timedelta(seconds=9))
    assert measurement_due(driver.state, rollout, driver.now + timedelta(seconds=10))  # the step's end
    assert not measurement_due(None, rollout, driver.now)
    assert not measurement_due(driver.state, strategy({"blueGreen": {}}), driver.now)


def test_the_window_starts_when_the_weight_was_set_and_is_capped() -> None:
    driver = started()
    limits = driver.strategy.progressive().analysis  # type: ignore[union-attr]
    assert measurement_window(driver.state, limits, driver.now + timedelta(seconds=90)) == timedelta(seconds=90)
    assert measurement_window(driver.state, limits, driver.now + timedelta(hours=2)) == timedelta(minutes=10)
    assert measurement_window(driver.state, limits, driver.now) == timedelta(seconds=1)


def test_the_split_reaches_the_store_before_the_switch() -> None:
    # An embedding-model migration is promoted from a split the store has held: never a blind switch.
    driver = Driver(strategy=strategy({"canary": {"steps": [{"setWeight": 100}]}}))
    plan = driver.tick()
    assert not plan.promote and plan.traffic is TrafficChange.SET
    assert plan.target is not None and plan.target.weight == 100
    assert driver.state.message == "all 1 steps done: docs-v2 answers 100% of users; promoting next"
    assert driver.tick(2).promote


def test_promote_full_in_the_first_pass_still_writes_the_split_first() -> None:
    driver = Driver()
    plan = driver.tick(actions=(act(Action.PROMOTE_FULL),))
    assert not plan.promote and plan.traffic is TrafficChange.SET
    assert driver.tick(2).promote


def test_text_from_users_and_other_objects_is_clipped_to_fit_the_status() -> None:
    # An annotation can hold 256 KiB, another object's condition message 32 KiB: the status still fits.
    driver = started()
    driver.tick(1, actions=parse_actions({ACTION_ANNOTATION: "x" * 100_000}))
    assert driver.state.last_action is not None and len(driver.state.last_action.action) == 256
    driver.candidate = DesiredVersion("docs-v2", VersionReadiness.FAILED, "gate: " + "m" * 40_000)
    driver.tick(1)
    assert driver.state.abort is not None and len(driver.state.abort.message) <= 8192
    assert len(driver.state.message) <= 8192 and driver.state.message.endswith("…")


def test_a_reading_of_the_previous_candidate_does_not_judge_a_restarted_rollout() -> None:
    driver = started()
    driver.tick(30, reading=slow_reading())
    driver.candidate = ready("docs-v3")
    driver.tick(30, reading=slow_reading())  # measured against docs-v2's split
    assert driver.state.canary_version == "docs-v3" and driver.state.analysis is None
    assert driver.phase() is RolloutPhase.PROGRESSING
