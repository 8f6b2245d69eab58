"""The step machine of a progressive rollout (canary and shadow strategies): observation + now -> plan.

A rollout starts when spec.knowledgeBase.version names a Ready version other than the one served
(the stable version). Its steps run in order: setWeight and shadow change the traffic split and
complete at once, a pause waits (for its duration, or for a manual promote), an analysis compares
the candidate with stable and completes on a Pass verdict taken after its duration. After the
last step the candidate is promoted: today's atomic switch of the activation pointer (which clears
the split), then today's bake.

It aborts (weight 0 at once, Degraded with the measurement, an Event) on: failed analysis checks
(`failureLimit` in a row during an analysis step), too many inconclusive ones once an analysis step
is due (`maxInconclusive`), the candidate's own series breaching the absolute SLOs (any step), the
candidate no longer Ready, a manual abort, or the timeout. An aborted candidate is never retried by
itself: a new rollout needs another version in the spec, or an explicit `retry`. Editing the steps
mid-rollout restarts it from the first step (as Argo Rollouts does when its step hash changes).

Manual actions arrive as annotations (`ragops.dev/rollout-action`, `ragops.dev/set-weight`) the
controller consumes and hands over as `ManualAction`s; their outcome is recorded in
`status.rollout.lastAction` and in an Event. A manual pause freezes progress (and the timeout),
never protection: analysis failures and SLO breaches still abort a paused rollout.

Everything persists in `status.rollout`, so the machine is level-based and survives a restart.
This module must stay pure: no I/O, no clock (callers pass `now`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

from ..api.common import parse_duration
from ..api.conditions import RagDeploymentCondition as C
from ..api.conditions import Reason
from ..api.conditions import RolloutPhase as Phase
from ..api.ragdeployment import SloSpec
from ..api.rollout import (
    AbortStatus,
    AnalysisSpec,
    AnalysisStatus,
    AnalysisVerdict,
    CanaryStep,
    CanaryStrategy,
    RolloutActionRecord,
    RolloutStatus,
    RolloutStrategy,
)
from ..builders.common import content_hash
from .analysis import UNQUERIED, AnalysisCheck, AnalysisReading, Applicable, judge_analysis
from .knowledgebaseversion import Event
from .ragdeployment import DesiredVersion, RolloutOverlay, VersionReadiness
from .slo import SloCheck, Verdict, judge, rollback_threshold

ACTION_ANNOTATION = "ragops.dev/rollout-action"
SET_WEIGHT_ANNOTATION = "ragops.dev/set-weight"


class Action(StrEnum):
    PROMOTE = "promote"
    """Complete the current step (a pause, an analysis) and go on with the next one."""
    PROMOTE_FULL = "promote-full"
    """Skip every remaining step and promote now."""
    ABORT = "abort"
    PAUSE = "pause"
    RESUME = "resume"
    RETRY = "retry"
    """Start an aborted rollout again from the first step."""
    SET_WEIGHT = "set-weight"
    """Set the weight by hand; the rollout pauses until resumed or promoted."""


@dataclass(frozen=True)
class ManualAction:
    action: Action | None
    """None: the annotation held something the operator does not understand (see `raw`)."""
    raw: str
    weight: int | None = None


def parse_actions(annotations: Mapping[str, str]) -> tuple[ManualAction, ...]:
    """The manual actions an object's annotations ask for: set-weight first, then the rollout action."""
    actions: list[ManualAction] = []
    weight = annotations.get(SET_WEIGHT_ANNOTATION)
    if weight is not None:
        text = weight.strip()
        valid = text.isdigit() and 0 <= int(text) <= 100
        actions.append(
            ManualAction(Action.SET_WEIGHT if valid else None, f"set-weight={weight}", int(text) if valid else None)
        )
    requested = annotations.get(ACTION_ANNOTATION)
    if requested is not None:
        known = {a.value: a for a in Action if a is not Action.SET_WEIGHT}
        actions.append(ManualAction(known.get(requested.strip()), requested))
    return tuple(actions)


@dataclass(frozen=True)
class TrafficTarget:
    """The split the store must hold: the candidate answers `weight` % of users (sticky per client)."""

    canary: str
    weight: int
    shadow_percent: float
    split_id: str
    probes: bool


class TrafficChange(StrEnum):
    SET = "Set"
    """Write `ProgressivePlan.traffic` (idempotent)."""
    CLEAR = "Clear"
    """No split: clear any the store holds."""
    LEAVE = "Leave"
    """Promotion: the activation switch clears the split in the same transaction."""


@dataclass(frozen=True)
class ConditionChange:
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str


@dataclass(frozen=True)
class ProgressiveObservation:
    strategy: RolloutStrategy
    slo: SloSpec
    candidate: DesiredVersion
    """spec.knowledgeBase.version and whether it may serve."""
    stable: str | None
    """The version served now (the current revision's), None before any."""
    stable_baking: bool
    """The current revision is still baking."""
    rolled_back: bool
    """The candidate was promoted before and rolled back for breaching the SLOs (with this runtime)."""
    previous: RolloutStatus | None
    now: datetime
    actions: tuple[ManualAction, ...] = ()
    measured: bool = False
    """A measurement was taken this pass (`reading` None then means Prometheus failed)."""
    reading: AnalysisReading | None = None
    unavailable: str = ""
    """Why Prometheus could not be read, when a measurement was due and `reading` is None."""


@dataclass(frozen=True)
class ProgressivePlan:
    status: RolloutStatus | None
    """status.rollout; None removes it (blueGreen)."""
    traffic: TrafficChange
    target: TrafficTarget | None
    hold: bool
    """Keep serving the stable version: the candidate may not be promoted (a rollout is in flight or aborted)."""
    promote: bool
    """Serve the candidate now: the rollout completed its steps."""
    overlay: RolloutOverlay
    conditions: tuple[ConditionChange, ...] | None
    """Promoted, Aborted and Paused; None removes them (blueGreen)."""
    events: tuple[Event, ...] = field(default_factory=tuple)


IN_FLIGHT = (Phase.PROGRESSING, Phase.PAUSED)
_SLO_VERDICTS: dict[Verdict, Literal["Met", "Breached", "Inconclusive"]] = {
    Verdict.MET: "Met",
    Verdict.BREACHED: "Breached",
    Verdict.INCONCLUSIVE: "Inconclusive",
}


def steps_hash(steps: Sequence[CanaryStep]) -> str:
    """Digest of the steps: an edit mid-rollout restarts it. Limits and probes apply live instead."""
    return content_hash([s.model_dump(mode="json", by_alias=True, exclude_none=True) for s in steps])


def probes_enabled(strategy: CanaryStrategy) -> bool:
    probes = strategy.probes
    return probes.per_minute > 0 and (probes.golden_set or probes.recorded_queries is not None)


def describe_step(step: CanaryStep) -> str:
    if step.set_weight is not None:
        return f"setWeight {step.set_weight}"
    if step.shadow is not None:
        return f"shadow {step.shadow.percent:g}%"
    if step.pause is not None:
        return f"pause {step.pause.duration}" if step.pause.duration else "pause until promoted"
    assert step.analysis is not None
    return f"analysis {step.analysis.duration}"


def in_flight(status: RolloutStatus | None) -> bool:
    """A rollout runs its steps (waiting for a candidate to be Ready is not one yet)."""
    return status is not None and status.phase in IN_FLIGHT and status.rollout_id is not None


def _step_end(status: RolloutStatus, step: CanaryStep) -> datetime | None:
    duration = step.analysis.duration if step.analysis else step.pause.duration if step.pause else None
    if duration is None or status.step_started_at is None:
        return None
    return status.step_started_at + parse_duration(duration)


def _current_step(status: RolloutStatus, strategy: CanaryStrategy) -> CanaryStep | None:
    index = status.current_step_index
    return strategy.steps[index] if index is not None and index < len(strategy.steps) else None


def measurement_due(status: RolloutStatus | None, strategy: RolloutStrategy, now: datetime) -> bool:
    """Whether this pass should read Prometheus for the rollout in flight.

    Every `analysis.interval`, and once more as soon as an analysis step's duration has passed, so
    the verdict that completes the step is taken over the whole step.
    """
    steps = strategy.progressive()
    if steps is None or status is None or not in_flight(status) or status.split_started_at is None:
        return False
    last = status.analysis.checked_at if status.analysis else status.split_started_at
    if now - max(last, status.split_started_at) >= parse_duration(steps.analysis.interval):
        return True
    step = _current_step(status, steps)
    end = _step_end(status, step) if step is not None and step.analysis is not None else None
    return end is not None and now >= end and (status.analysis is None or status.analysis.checked_at < end)


def measurement_window(status: RolloutStatus, limits: AnalysisSpec, now: datetime) -> timedelta:
    """The range a check reads: since the current weight and shadow share were set, at most `window`."""
    since = status.split_started_at or now
    return max(timedelta(seconds=1), min(now - since, parse_duration(limits.window)))


def plan_progressive(observed: ProgressiveObservation) -> ProgressivePlan:
    strategy = observed.strategy.progressive()
    previous = observed.previous
    if strategy is None:
        events = [_ignored(a, "the blueGreen strategy has no rollout to act on") for a in observed.actions]
        if in_flight(previous):
            assert previous is not None
            events.append(
                Event(
                    "Normal",
                    Reason.ROLLOUT_CANCELLED,
                    f"the strategy is blueGreen now: the rollout of {previous.canary_version} is cancelled",
                )
            )
        return ProgressivePlan(None, TrafficChange.CLEAR, None, False, False, RolloutOverlay(), None, tuple(events))
    return _Machine(observed, strategy).plan()


class _Machine:
    """One pass of the machine; `state` is the status being built, `events` what happened."""

    def __init__(self, observed: ProgressiveObservation, strategy: CanaryStrategy) -> None:
        self.observed = observed
        self.strategy = strategy
        self.now = observed.now
        self.name = observed.strategy.name
        self.events: list[Event] = []
        self.last_action = observed.previous.last_action if observed.previous else None

    # ---- entry ---------------------------------------------------------------------------------

    def plan(self) -> ProgressivePlan:
        observed, previous = self.observed, self.observed.previous
        candidate, stable = observed.candidate, observed.stable
        if stable is None and candidate.readiness is not VersionReadiness.READY:
            return self._not_started()
        if stable is None:
            return self._settled(
                f"nothing is served yet: {candidate.name} is promoted directly once Ready "
                "(there is no stable version to compare it with)"
            )
        if candidate.name == stable:
            if in_flight(previous) and previous is not None and previous.canary_version != candidate.name:
                self.events.append(
                    Event(
                        "Normal",
                        Reason.ROLLOUT_CANCELLED,
                        f"spec.knowledgeBase.version names the served {stable} again: "
                        f"the rollout of {previous.canary_version} is cancelled",
                    )
                )
            return self._settled("")
        if observed.rolled_back:
            return self._rolled_back()

        same = previous is not None and previous.canary_version == candidate.name
        if same and previous is not None and previous.phase is Phase.ABORTED:
            if any(a.action is Action.RETRY for a in observed.actions):
                return self._run(restart="retried by hand after it was aborted")
            return self._aborted(previous)
        if candidate.readiness is not VersionReadiness.READY:
            if same and in_flight(previous) and previous is not None:
                state = self._abort(
                    previous,
                    Reason.CANDIDATE_NOT_READY,
                    f"the candidate {candidate.name} is no longer Ready: {candidate.message or candidate.readiness}",
                )
                return self._finish(state)
            return self._not_started()
        return self._run()

    # ---- states without a rollout in flight -----------------------------------------------------

    def _base(self) -> RolloutStatus:
        return RolloutStatus(
            strategy=self.name,
            phase=Phase.HEALTHY,
            stable_version=self.observed.stable,
            last_action=self.last_action,
        )

    def _ignore_all(self, why: str) -> None:
        for action in self.observed.actions:
            self.events.append(_ignored(action, why))
            self.last_action = RolloutActionRecord(action=action.raw, at=self.now, outcome=f"ignored: {why}")

    def _settled(self, message: str) -> ProgressivePlan:
        observed, previous = self.observed, self.observed.previous
        self._ignore_all("no rollout is in progress")
        served = observed.stable
        promoting = (
            served is not None
            and observed.stable_baking
            and previous is not None
            and previous.phase is Phase.PROMOTING
            and previous.canary_version == served
        )
        phase = Phase.PROMOTING if promoting else Phase.HEALTHY
        if served is None:
            phase = Phase.PROGRESSING
        text = message or (
            f"{served} was promoted and is baking" if promoting else f"serving {served}; no rollout in progress"
        )
        state = _with(
            self._base(),
            phase=phase,
            message=text,
            canary_version=served if promoting else None,
        )
        if served is None:
            conditions = _conditions(
                promoted=("False", Reason.WAITING_FOR_VERSION, text),
                aborted=("False", Reason.WAITING_FOR_VERSION, "no rollout to abort"),
            )
        else:
            conditions = _conditions(
                promoted=("True", Reason.PROMOTED, f"serving {served}"),
                aborted=("False", Reason.PROMOTED, f"serving {served}"),
            )
        return ProgressivePlan(
            state, TrafficChange.CLEAR, None, False, False, RolloutOverlay(), conditions, tuple(self.events)
        )

    def _not_started(self) -> ProgressivePlan:
        """The candidate is missing, building, failed or invalid: no rollout yet (and no split)."""
        candidate = self.observed.candidate
        self._ignore_all(f"{candidate.name} is not Ready, so no rollout is in progress")
        message = candidate.message or f"{candidate.name} is {candidate.readiness}"
        if candidate.readiness in (VersionReadiness.FAILED, VersionReadiness.INVALID):
            reason = (
                Reason.INVALID_SPEC if candidate.readiness is VersionReadiness.INVALID else Reason.VERSION_FAILED_GATE
            )
            state = _with(
                self._base(),
                phase=Phase.ABORTED,
                canary_version=candidate.name,
                message=f"{candidate.name} cannot be rolled out: {message}",
                abort=AbortStatus(reason=reason, message=message, at=self._kept_abort_time(reason)),
            )
            conditions = _conditions(promoted=("False", reason, message), aborted=("True", reason, state.message))
        else:
            reason = (
                Reason.WAITING_FOR_VERSION
                if candidate.readiness is VersionReadiness.MISSING
                else Reason.VERSION_NOT_READY
            )
            state = _with(
                self._base(),
                phase=Phase.PROGRESSING,
                canary_version=candidate.name,
                message=f"waiting for {candidate.name} to be Ready before the rollout starts: {message}",
            )
            conditions = _conditions(promoted=("False", reason, state.message), aborted=("False", reason, message))
        # The deployment's own conditions (VersionNotReady, VersionFailedGate, InvalidSpec) speak for it.
        return ProgressivePlan(
            state, TrafficChange.CLEAR, None, False, False, RolloutOverlay(), conditions, tuple(self.events)
        )

    def _kept_abort_time(self, reason: str) -> datetime:
        previous = self.observed.previous
        if previous is not None and previous.abort is not None and previous.abort.reason == reason:
            return previous.abort.at
        return self.now

    def _rolled_back(self) -> ProgressivePlan:
        """Promoted, then rolled back during its bake: Aborted, and never tried again by itself."""
        previous = self.observed.previous
        candidate = self.observed.candidate.name
        self._ignore_all(f"{candidate} was rolled back; name another version to roll out")
        message = (
            f"{candidate} was promoted, then rolled back for breaching its SLOs during the bake; "
            "change spec.knowledgeBase.version (or the runtime) to try again"
        )
        abort = (
            previous.abort
            if previous is not None and previous.abort is not None and previous.abort.reason == Reason.ROLLED_BACK
            else AbortStatus(reason=Reason.ROLLED_BACK, message=message, at=self.now)
        )
        state = _with(self._base(), phase=Phase.ABORTED, canary_version=candidate, message=message, abort=abort)
        conditions = _conditions(
            promoted=("False", Reason.ROLLED_BACK, message), aborted=("True", Reason.ROLLED_BACK, message)
        )
        # plan_rollout reports the rollback itself (RolledBack, Degraded): no overlay needed.
        return ProgressivePlan(
            state, TrafficChange.CLEAR, None, False, False, RolloutOverlay(), conditions, tuple(self.events)
        )

    def _aborted(self, previous: RolloutStatus) -> ProgressivePlan:
        why = (
            f"the rollout of {previous.canary_version} was aborted; `kubectl ragops retry` starts it again, "
            "or name another version"
        )
        for action in self.observed.actions:
            if action.action is not Action.RETRY:
                self.events.append(_ignored(action, why))
                self.last_action = RolloutActionRecord(action=action.raw, at=self.now, outcome=f"ignored: {why}")
        state = _with(
            previous,
            strategy=self.name,
            stable_version=self.observed.stable,
            last_action=self.last_action,
            weight=0,
            shadow_percent=0,
        )
        return self._finish(state)

    # ---- a rollout in flight ----------------------------------------------------------------------

    def _start(self, restart: str | None) -> RolloutStatus:
        observed, now = self.observed, self.now
        digest = steps_hash(self.strategy.steps)
        rollout_id = content_hash([observed.candidate.name, observed.stable, digest, now.isoformat()], 12)
        steps = len(self.strategy.steps)
        if restart:
            self.events.append(
                Event(
                    "Normal",
                    Reason.ROLLOUT_RESTARTED,
                    f"{restart}: rolling {observed.candidate.name} out again from the first of {steps} steps",
                )
            )
        else:
            self.events.append(
                Event(
                    "Normal",
                    Reason.ROLLOUT_STARTED,
                    f"{self.name} rollout of {observed.candidate.name} against {observed.stable}: {steps} steps",
                )
            )
        return RolloutStatus(
            strategy=self.name,
            phase=Phase.PROGRESSING,
            stable_version=observed.stable,
            canary_version=observed.candidate.name,
            rollout_id=rollout_id,
            strategy_hash=digest,
            current_step_index=0,
            steps=steps,
            weight=0,
            shadow_percent=0,
            started_at=now,
            step_started_at=now,
            split_started_at=now,
            last_action=self.last_action,
        )

    def _run(self, restart: str | None = None) -> ProgressivePlan:
        observed, previous = self.observed, self.observed.previous
        digest = steps_hash(self.strategy.steps)
        if restart is None and in_flight(previous) and previous is not None:
            if previous.canary_version != observed.candidate.name:
                restart = f"spec.knowledgeBase.version changed from {previous.canary_version} mid-rollout"
            elif previous.strategy_hash != digest:
                restart = "the steps changed mid-rollout"
            elif previous.stable_version != observed.stable:
                restart = f"the stable version changed from {previous.stable_version} to {observed.stable}"
        continuing = restart is None and in_flight(previous) and previous is not None
        if continuing:
            assert previous is not None
            state = _with(previous, strategy=self.name, steps=len(self.strategy.steps))
            actions = observed.actions
        else:
            state = self._start(restart)
            # A retry is the action that started this rollout; any other action applies to it.
            actions = tuple(a for a in observed.actions if a.action is not Action.RETRY)
            for action in observed.actions:
                if action.action is Action.RETRY:
                    self._record(action, "restarted the rollout from the first step")

        state = self._apply_actions(state, actions)
        # A reading describes the split that ran until now: a rollout that starts over is not judged by it.
        if continuing and state.phase is not Phase.ABORTED and observed.measured:
            state = self._measure(state)
        if state.phase is not Phase.ABORTED:
            timeout = parse_duration(self.strategy.timeout)
            if _elapsed(state, self.now) > timeout:
                state = self._abort(
                    state,
                    Reason.ROLLOUT_TIMEOUT,
                    f"the rollout ran longer than its timeout {self.strategy.timeout} "
                    "(not counting waits for a manual promote or resume)",
                )
        if state.phase is Phase.PROGRESSING:
            state = self._progress(state)
        return self._finish(state)

    # ---- manual actions ---------------------------------------------------------------------------

    def _record(self, action: ManualAction, outcome: str) -> None:
        self.last_action = RolloutActionRecord(action=action.raw, at=self.now, outcome=outcome)
        self.events.append(Event("Normal", Reason.ACTION_APPLIED, f"{action.raw}: {outcome}"))

    def _apply_actions(self, state: RolloutStatus, actions: Sequence[ManualAction]) -> RolloutStatus:
        for action in actions:
            if state.phase is Phase.ABORTED:
                self.events.append(_ignored(action, "the rollout was aborted in this pass"))
                continue
            kind = action.action
            step = _current_step(state, self.strategy)
            if kind is None:
                why = (
                    f"not understood: {ACTION_ANNOTATION} takes promote, promote-full, abort, pause, resume or "
                    f"retry; {SET_WEIGHT_ANNOTATION} takes a whole number 0-100"
                )
                self.events.append(_ignored(action, why))
                self.last_action = RolloutActionRecord(action=action.raw, at=self.now, outcome=f"ignored: {why}")
            elif kind is Action.ABORT:
                self._record(action, "aborting the rollout")
                state = self._abort(state, Reason.MANUAL_ABORT, f"aborted by hand ({ACTION_ANNOTATION}: abort)")
            elif kind is Action.PAUSE:
                if state.phase is Phase.PAUSED:
                    self._record(action, "already paused")
                else:
                    state = _with(state, phase=Phase.PAUSED, paused_at=self.now, pause_reason="Manual")
                    self._record(action, "paused: the steps wait for resume or promote (protection still runs)")
            elif kind is Action.RESUME:
                if state.pause_reason == "Manual":
                    state = _unhold(state, self.now)
                    self._record(action, "resumed")
                elif state.pause_reason == "Step":
                    self.events.append(
                        _ignored(action, "the rollout waits at a pause step without a duration: promote continues it")
                    )
                    self.last_action = RolloutActionRecord(
                        action=action.raw, at=self.now, outcome="ignored: waiting at an indefinite pause step"
                    )
                else:
                    self._record(action, "not paused: nothing to resume")
            elif kind is Action.PROMOTE:
                index = state.current_step_index or 0
                described = describe_step(step) if step is not None else "no step"
                state = _advance(_unhold(state, self.now), self.now)
                self._record(action, f"step {index + 1}/{len(self.strategy.steps)} ({described}) completed by hand")
            elif kind is Action.PROMOTE_FULL:
                state = _with(
                    _unhold(state, self.now), current_step_index=len(self.strategy.steps), step_started_at=self.now
                )
                self._record(action, "skipping the remaining steps: promoting now")
            elif kind is Action.SET_WEIGHT:
                assert action.weight is not None
                state = _with(state, weight=action.weight, split_started_at=self.now)
                if state.phase is not Phase.PAUSED:
                    state = _with(state, phase=Phase.PAUSED, paused_at=self.now, pause_reason="Manual")
                self._record(action, f"the candidate answers {action.weight}% of users; paused until resume or promote")
            elif kind is Action.RETRY:
                self.events.append(_ignored(action, "the rollout is not aborted: nothing to retry"))
        return state

    # ---- measurement: analysis and the absolute SLOs ----------------------------------------------

    def _applicable(self, state: RolloutStatus) -> Applicable:
        probes = probes_enabled(self.strategy)
        return Applicable(
            user_traffic=state.weight > 0,
            shadow=state.shadow_percent > 0,
            probes=probes,
            golden_probes=probes and self.strategy.probes.golden_set,
        )

    def _measure(self, state: RolloutStatus) -> RolloutStatus:
        reading = self.observed.reading
        limits = self.strategy.analysis
        check = judge_analysis(reading, limits, self._applicable(state), unavailable=self.observed.unavailable)
        slo = judge(None if reading is None else reading.canary_slo_sample(), self.observed.slo)
        previous = state.analysis
        # Once per outage, and once when it ends: a check that cannot be made is not news every interval.
        was_unqueried = previous is not None and previous.message.startswith(UNQUERIED)
        if reading is None and not was_unqueried:
            self.events.append(Event("Warning", Reason.PROMETHEUS_UNAVAILABLE, check.message))
        elif reading is not None and was_unqueried:
            self.events.append(
                Event("Normal", Reason.PROMETHEUS_AVAILABLE, f"Prometheus answers again: {check.message}")
            )
        breaches = previous.consecutive_slo_breaches if previous else 0
        if slo.verdict is Verdict.BREACHED:
            breaches += 1
        elif slo.verdict is Verdict.MET:
            breaches = 0

        step = _current_step(state, self.strategy)
        failures = inconclusive = 0
        if step is not None and step.analysis is not None:
            started = state.step_started_at or self.now
            carried = previous is not None and previous.checked_at >= started
            failures = previous.consecutive_failures if carried and previous else 0
            inconclusive = previous.consecutive_inconclusive if carried and previous else 0
            end = _step_end(state, step)
            if check.verdict is AnalysisVerdict.FAIL:
                failures += 1
            elif check.verdict is AnalysisVerdict.PASS:
                failures = inconclusive = 0
            elif end is not None and self.now >= end:
                inconclusive += 1
        analysis = _analysis_status(check, slo, self.now, reading, failures, inconclusive, breaches)
        state = _with(state, analysis=analysis)

        threshold = rollback_threshold(self.observed.slo, baking=True)
        if breaches >= threshold:
            return self._abort(
                state,
                Reason.SLO_BREACHED,
                f"the candidate breached its SLOs in {breaches} checks in a row (threshold {threshold}): {slo.message}",
            )
        if failures >= limits.failure_limit:
            return self._abort(
                state,
                Reason.ANALYSIS_FAILED,
                f"{failures} failed analysis checks in a row (failureLimit {limits.failure_limit}): {check.message}",
            )
        if inconclusive > limits.max_inconclusive:
            return self._abort(
                state,
                Reason.ANALYSIS_INCONCLUSIVE,
                f"{inconclusive} inconclusive checks in a row after the analysis step's duration "
                f"(maxInconclusive {limits.max_inconclusive}): {check.message}",
            )
        return state

    # ---- time: the steps ------------------------------------------------------------------------

    def _progress(self, state: RolloutStatus) -> RolloutStatus:
        steps = self.strategy.steps
        while state.current_step_index is not None and state.current_step_index < len(steps):
            index = state.current_step_index
            step = steps[index]
            label = f"step {index + 1}/{len(steps)} ({describe_step(step)})"
            if step.set_weight is not None:
                state = _with(state, weight=step.set_weight, shadow_percent=0, split_started_at=self.now)
                self.events.append(
                    Event(
                        "Normal",
                        Reason.WEIGHT_CHANGED,
                        f"{label}: {state.canary_version} answers {step.set_weight}% of user queries",
                    )
                )
            elif step.shadow is not None:
                state = _with(state, shadow_percent=step.shadow.percent, split_started_at=self.now)
                self.events.append(
                    Event(
                        "Normal",
                        Reason.WEIGHT_CHANGED,
                        f"{label}: {step.shadow.percent:g}% of stable's queries are mirrored to {state.canary_version}",
                    )
                )
            elif step.pause is not None:
                end = _step_end(state, step)
                if end is None:
                    self.events.append(
                        Event("Normal", Reason.ROLLOUT_PAUSED, f"{label}: waiting for `kubectl ragops promote`")
                    )
                    return _with(state, phase=Phase.PAUSED, paused_at=self.now, pause_reason="Step")
                if self.now < end:
                    return state
                self.events.append(Event("Normal", Reason.STEP_COMPLETED, f"{label} completed"))
            else:
                end = _step_end(state, step)
                last = state.analysis
                if end is None or self.now < end or last is None or last.checked_at < end:
                    return state
                if last.verdict is not AnalysisVerdict.PASS:
                    return state
                self.events.append(Event("Normal", Reason.ANALYSIS_PASSED, f"{label} passed: {last.message}"))
            state = _advance(state, self.now)
        return state

    # ---- endings ------------------------------------------------------------------------------------

    def _abort(self, state: RolloutStatus, reason: str, message: str) -> RolloutStatus:
        step = _current_step(state, self.strategy)
        where = (
            f"step {state.current_step_index + 1}/{len(self.strategy.steps)} ({describe_step(step)})"
            if (step is not None and state.current_step_index is not None)
            else "promotion"
        )
        text = f"rollout of {state.canary_version} aborted at {where}: {message}"
        self.events.append(Event("Warning", Reason.ROLLOUT_ABORTED, f"{reason}: {text}"))
        held = state.held_seconds
        if state.paused_at is not None:
            held += (self.now - state.paused_at).total_seconds()
        return _with(
            state,
            phase=Phase.ABORTED,
            weight=0,
            shadow_percent=0,
            paused_at=None,
            pause_reason=None,
            held_seconds=held,
            message=text,
            abort=AbortStatus(reason=reason, message=message, at=self.now, step_index=state.current_step_index),
        )

    def _finish(self, state: RolloutStatus) -> ProgressivePlan:
        state = _with(state, last_action=self.last_action)
        steps = self.strategy.steps
        if state.phase is Phase.ABORTED:
            assert state.abort is not None
            reason, message = state.abort.reason, state.message or state.abort.message
            conditions = _conditions(
                promoted=("False", reason, message), aborted=("True", reason, message), paused=("False", reason, "")
            )
            return ProgressivePlan(
                state,
                TrafficChange.CLEAR,
                None,
                True,
                False,
                RolloutOverlay(degraded=(reason, message)),
                conditions,
                tuple(self.events),
            )
        index = state.current_step_index or 0
        # The split must have reached the store before the switch: promoting a candidate that never
        # held a split would be a blue-green switch (refused by the store across embedding dimensions).
        if index >= len(steps) and state.split_started_at != self.now:
            message = f"all {len(steps)} steps done: promoting {state.canary_version} (then the bake)"
            self.events.append(Event("Normal", Reason.ROLLOUT_PROMOTING, message))
            state = _with(
                state,
                phase=Phase.PROMOTING,
                weight=100,
                shadow_percent=0,
                paused_at=None,
                pause_reason=None,
                message=message,
            )
            conditions = _conditions(
                promoted=("True", Reason.PROMOTED, message),
                aborted=("False", Reason.PROMOTED, message),
                paused=("False", Reason.PROMOTED, ""),
            )
            return ProgressivePlan(
                state, TrafficChange.LEAVE, None, False, True, RolloutOverlay(), conditions, tuple(self.events)
            )
        if index >= len(steps):
            where = f"all {len(steps)} steps done"
            reason = Reason.ROLLOUT_PROGRESSING
            message = f"{where}: {state.canary_version} answers {state.weight}% of users; promoting next"
            return self._in_flight(state, reason, message)
        step = steps[index]
        where = f"step {index + 1}/{len(steps)} ({describe_step(step)})"
        traffic = f"{state.canary_version} answers {state.weight}% of users" + (
            f", {state.shadow_percent:g}% of stable's queries mirrored" if state.shadow_percent else ""
        )
        if state.phase is Phase.PAUSED:
            reason = Reason.ROLLOUT_PAUSED
            waiting = "a manual promote" if state.pause_reason == "Step" else "resume or promote"
            message = f"paused at {where}: {traffic}; waiting for {waiting}"
        else:
            reason = Reason.ROLLOUT_PROGRESSING
            end = _step_end(state, step)
            left = f", {_duration_text(end - self.now)} left" if end is not None and end > self.now else ""
            message = f"{where}{left}: {traffic}"
            if step.analysis is not None and state.analysis is not None:
                message += f"; last check {state.analysis.verdict}"
        return self._in_flight(state, reason, message)

    def _in_flight(self, state: RolloutStatus, reason: str, message: str) -> ProgressivePlan:
        state = _with(state, message=message)
        conditions = _conditions(
            promoted=("False", reason, message),
            aborted=("False", reason, message),
            paused=("True" if state.phase is Phase.PAUSED else "False", reason, message),
        )
        target = TrafficTarget(
            canary=state.canary_version or "",
            weight=state.weight,
            shadow_percent=state.shadow_percent,
            split_id=state.rollout_id or "",
            probes=probes_enabled(self.strategy),
        )
        return ProgressivePlan(
            state,
            TrafficChange.SET,
            target,
            True,
            False,
            RolloutOverlay(progressing=(reason, message)),
            conditions,
            tuple(self.events),
        )


def _with(state: RolloutStatus, **changes: Any) -> RolloutStatus:
    """A copy of `state` with fields (python names) changed, validated (so over-long text is clipped)."""
    return RolloutStatus.model_validate({**dict(state), **changes})


def _conditions(
    *,
    promoted: tuple[Literal["True", "False"], str, str],
    aborted: tuple[Literal["True", "False"], str, str],
    paused: tuple[Literal["True", "False"], str, str] | None = None,
) -> tuple[ConditionChange, ...]:
    paused = paused or ("False", promoted[1], "")
    return tuple(
        ConditionChange(type, status, reason, message)
        for type, (status, reason, message) in ((C.PROMOTED, promoted), (C.ABORTED, aborted), (C.PAUSED, paused))
    )


def _ignored(action: ManualAction, why: str) -> Event:
    return Event("Warning", Reason.ACTION_IGNORED, f"{action.raw} ignored: {why}")


def _unhold(state: RolloutStatus, now: datetime) -> RolloutStatus:
    """Out of a pause: the time held moves the step's start on and is not counted by the timeout."""
    if state.paused_at is None:
        return _with(state, phase=Phase.PROGRESSING, pause_reason=None)
    held = now - state.paused_at
    return _with(
        state,
        phase=Phase.PROGRESSING,
        paused_at=None,
        pause_reason=None,
        held_seconds=state.held_seconds + held.total_seconds(),
        step_started_at=(state.step_started_at or now) + held,
    )


def _advance(state: RolloutStatus, now: datetime) -> RolloutStatus:
    return _with(state, current_step_index=(state.current_step_index or 0) + 1, step_started_at=now)


def _elapsed(state: RolloutStatus, now: datetime) -> timedelta:
    """Time the rollout has run, not counting waits for a manual promote or resume."""
    if state.started_at is None:
        return timedelta(0)
    held = timedelta(seconds=state.held_seconds)
    if state.paused_at is not None:
        held += now - state.paused_at
    return now - state.started_at - held


def _duration_text(delta: timedelta) -> str:
    seconds = max(0, int(delta.total_seconds()))
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def _analysis_status(
    check: AnalysisCheck,
    slo: SloCheck,
    now: datetime,
    reading: AnalysisReading | None,
    failures: int,
    inconclusive: int,
    breaches: int,
) -> AnalysisStatus:
    return AnalysisStatus(
        verdict=check.verdict,
        checked_at=now,
        window_seconds=reading.window_seconds if reading is not None else 0.0,
        objectives=[o.to_status() for o in check.objectives],
        consecutive_failures=failures,
        consecutive_inconclusive=inconclusive,
        slo_verdict=_SLO_VERDICTS[slo.verdict],
        slo_message=slo.message,
        consecutive_slo_breaches=breaches,
        message=check.message,
    )
