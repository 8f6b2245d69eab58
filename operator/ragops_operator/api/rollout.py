"""Progressive delivery of knowledge-base versions: the rollout strategies and `status.rollout`.

`spec.rollout.strategy` is one of blueGreen (switch at once, then bake: the default, so objects
written before strategies existed keep their behaviour), canary (Argo Rollouts-style steps:
setWeight, shadow, pause, analysis) or shadow (mirror a share of live queries to the candidate's
retrieval, analyse, then switch). Only the knowledge-base version is progressively delivered;
runtime pod templates still roll out as a Deployment rolling update.

Pure models only: the CRD schema is generated from them (see crdgen), and the same `Rule`s
refuse a bad rollout in the apiserver (CEL) and in the operator (pydantic).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field

from .common import ApiModel, ConfigMapKeyRef, Duration, Rule, StatusModel, duration_between, parse_duration
from .conditions import RolloutPhase

MAX_STEPS = 50


def _not_longer(duration: str | None, limit: str) -> bool:
    return duration is None or parse_duration(duration) <= parse_duration(limit)


class PauseStep(ApiModel):
    """Hold the current weight: for a duration, or until `kubectl ragops promote` without one."""

    rules = (
        Rule(
            cel="!has(self.duration) || duration(self.duration) >= duration('1s') "
            "&& duration(self.duration) <= duration('8760h')",
            message="duration must be between 1s and 8760h",
            field_path=".duration",
            holds=lambda p: (
                p.duration is None or parse_duration("1s") <= parse_duration(p.duration) <= parse_duration("8760h")
            ),
        ),
    )

    duration: Duration | None = Field(
        default=None,
        description=(
            "How long to hold; omitted: wait for a manual promote (kubectl ragops promote, or the "
            "ragops.dev/rollout-action: promote annotation)."
        ),
    )


class AnalysisStep(ApiModel):
    """Compare the candidate with the stable version for a while; the step passes on a Pass verdict."""

    rules = (duration_between("duration", "duration", "1s", "8760h"),)

    duration: Duration = Field(
        description=(
            "How long to observe before the verdict counts. Checks run every analysis.interval meanwhile: "
            "failed ones abort at once (analysis.failureLimit), inconclusive ones only after the duration."
        )
    )


class ShadowStep(ApiModel):
    """Mirror a share of the stable version's queries to the candidate's retrieval, never shown to users."""

    percent: float = Field(
        ge=0,
        le=100,
        description=(
            "Percent of stable-served queries whose retrieval also runs on the candidate (no generation, "
            "so no LLM cost), compared with stable's result; it lasts until the next setWeight step."
        ),
    )


class CanaryStep(ApiModel):
    """One step of a canary: exactly one of setWeight, shadow, pause or analysis."""

    rules = (
        Rule(
            cel="[has(self.setWeight), has(self.shadow), has(self.pause), has(self.analysis)].filter(x, x).size() == 1",
            message="a step sets exactly one of setWeight, shadow, pause or analysis",
            holds=lambda s: sum(x is not None for x in (s.set_weight, s.shadow, s.pause, s.analysis)) == 1,
        ),
    )

    set_weight: int | None = Field(
        default=None,
        ge=0,
        le=100,
        description="Percent of user queries the candidate answers from this step on (sticky per client).",
    )
    shadow: ShadowStep | None = Field(default=None, description="Mirror a share of stable traffic to the candidate.")
    pause: PauseStep | None = Field(default=None, description="Hold the current weight.")
    analysis: AnalysisStep | None = Field(default=None, description="Compare candidate and stable.")


Objective = Literal["p95LatencyMs", "errorRate", "satisfaction", "costPerQueryUsd", "shadowOverlap", "goldenRecall"]
"""The relative checks an analysis runs (reconcile.analysis), by the names status.rollout shows."""


class AnalysisSpec(ApiModel):
    """The relative checks: candidate against stable, in the same window, user traffic with user traffic.

    A check with too little data is Inconclusive, never Pass and never Fail; `skip` leaves checks out.
    Probes are compared with probes, so an analysis concludes at zero user traffic.
    """

    rules = (
        # A check every 0s would be a busy loop; a window under a second an empty PromQL range.
        duration_between("interval", "interval", "1s", "1h"),
        duration_between("window", "window", "1s", "24h"),
    )

    skip: list[Objective] = Field(
        default=[],
        max_length=6,
        json_schema_extra={"x-kubernetes-list-type": "set"},
        description=(
            "Checks left out: p95LatencyMs, errorRate, satisfaction, costPerQueryUsd, shadowOverlap, goldenRecall."
        ),
    )
    interval: Duration = Field(default="30s", description="How often the candidate is measured during a rollout.")
    window: Duration = Field(
        default="10m",
        description=("Longest range measured; each check reads the time since the current weight was set, up to this."),
    )
    max_p95_latency_ratio: float = Field(
        default=1.25,
        alias="maxP95LatencyRatio",
        ge=1,
        le=100,
        description="Fail when the candidate's p95 latency exceeds stable's times this.",
    )
    latency_tolerance_ms: float = Field(
        default=25,
        ge=0,
        le=60_000,
        description="Latency differences below this never fail the ratio check (noise at small latencies).",
    )
    max_error_rate_increase: float = Field(
        default=0.01,
        ge=0,
        le=1,
        description=(
            "Fail when the candidate's error rate exceeds stable's by more than this, significantly "
            "(one-sided test at 95%); a larger but not yet significant difference is Inconclusive."
        ),
    )
    max_satisfaction_drop: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="Fail when the candidate's mean user rating is lower than stable's by more than this.",
    )
    min_ratings: int = Field(
        default=20, ge=1, le=1_000_000, description="Ratings each version needs before satisfaction is judged."
    )
    min_raters: int = Field(
        default=3,
        ge=0,
        le=1_000_000,
        description=(
            "Distinct raters (trusted client identities) each version needs in the runtime's feedback window "
            "(spec.slo.window) before satisfaction is judged; 0 turns it off. One client rating many answers "
            "cannot abort or pass a candidate."
        ),
    )
    max_cost_ratio: float = Field(
        default=1.5, ge=1, le=100, description="Fail when the candidate's cost per query exceeds stable's times this."
    )
    min_shadow_overlap: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description=(
            "Fail when the mean overlap of the candidate's shadow results with stable's falls below this "
            "(a shadow error counts as no overlap)."
        ),
    )
    overlap_measure: Literal["rbo", "jaccard"] = Field(
        default="rbo", description="rbo (rank-biased overlap, weighs the top ranks) or jaccard (set overlap)."
    )
    overlap_level: Literal["document", "chunk"] = Field(
        default="document", description="Compare the retrieved documents or the retrieved chunks."
    )
    max_recall_drop: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description=(
            "Fail when the candidate's golden-probe recall (share of probes with a relevant document in the "
            "top k) is lower than stable's by more than this, significantly (one-sided test at 95%)."
        ),
    )
    min_requests: int = Field(
        default=30,
        ge=1,
        le=1_000_000,
        description="User queries each version needs in the window before user-traffic checks are judged.",
    )
    min_probes: int = Field(
        default=20, ge=1, le=1_000_000, description="Probe queries each version needs before probe checks are judged."
    )
    min_shadow_queries: int = Field(
        default=20, ge=1, le=1_000_000, description="Shadow comparisons needed before the overlap is judged."
    )
    failure_limit: int = Field(
        default=2, ge=1, le=100, description="Failed checks in a row, during an analysis step, that abort the rollout."
    )
    max_inconclusive: int = Field(
        default=6,
        ge=0,
        le=1000,
        description=(
            "Inconclusive checks in a row, once an analysis step's duration has passed, before the rollout "
            "aborts instead of waiting on (so it never hangs on a quiet service)."
        ),
    )


class ProbesSpec(ApiModel):
    """Golden probes: known queries sent to both versions so an analysis concludes at low traffic.

    The runtime sends them (one replica at a time), retrieval only: no generation, no LLM cost, never
    billed to a user, labelled role="probe" and kept out of the user SLOs and satisfaction.
    """

    golden_set: bool = Field(
        default=True, description="Probe with the candidate's golden-set queries (recall is then compared too)."
    )
    recorded_queries: ConfigMapKeyRef | None = Field(
        default=None,
        description="A ConfigMap key with recorded production queries to probe with, one per line (# comments).",
    )
    per_minute: float = Field(
        default=60,
        ge=0,
        le=6000,
        description="Probe queries per minute sent to each version, over all replicas; 0 disables probes.",
    )


class CanaryStrategy(ApiModel):
    """Steps in the style of Argo Rollouts, for a knowledge-base version."""

    rules = (
        duration_between("timeout", "timeout", "1m", "8760h"),
        Rule(
            cel="self.steps.all(s, !has(s.pause) || !has(s.pause.duration) "
            "|| duration(s.pause.duration) <= duration(self.timeout))",
            message="a pause step must not be longer than timeout",
            field_path=".steps",
            holds=lambda c: all(s.pause is None or _not_longer(s.pause.duration, c.timeout) for s in c.steps),
        ),
        Rule(
            cel="self.steps.all(s, !has(s.analysis) || duration(s.analysis.duration) <= duration(self.timeout))",
            message="an analysis step must not be longer than timeout",
            field_path=".steps",
            holds=lambda c: all(s.analysis is None or _not_longer(s.analysis.duration, c.timeout) for s in c.steps),
        ),
    )

    steps: list[CanaryStep] = Field(
        min_length=1,
        max_length=MAX_STEPS,
        description="Run in order; after the last one the candidate is promoted (the activation pointer moves).",
    )
    analysis: AnalysisSpec = Field(default=AnalysisSpec(), description="Limits of the relative checks.")
    probes: ProbesSpec = Field(default=ProbesSpec(), description="Golden probes during the rollout.")
    timeout: Duration = Field(
        default="1h",
        description=(
            "Longest the rollout may take, not counting time waiting for a manual promote or resume; "
            "past it the rollout aborts."
        ),
    )


class ShadowStrategy(ApiModel):
    """Mirror, analyse, then switch: the candidate never answers a user before it is promoted."""

    rules = (
        duration_between("duration", "duration", "1s", "8760h"),
        duration_between("timeout", "timeout", "1m", "8760h"),
        Rule(
            cel="duration(self.duration) <= duration(self.timeout)",
            message="duration must not be longer than timeout",
            field_path=".duration",
            holds=lambda s: _not_longer(s.duration, s.timeout),
        ),
    )

    percent: float = Field(
        default=100, ge=0, le=100, description="Percent of stable-served queries also retrieved on the candidate."
    )
    duration: Duration = Field(default="10m", description="How long to mirror and analyse before the verdict counts.")
    analysis: AnalysisSpec = Field(default=AnalysisSpec(), description="Limits of the relative checks.")
    probes: ProbesSpec = Field(default=ProbesSpec(), description="Golden probes during the rollout.")
    timeout: Duration = Field(default="1h", description="Longest the rollout may take before it aborts.")

    def as_canary(self) -> CanaryStrategy:
        """The same rollout as canary steps: shadow, then analysis; one step machine runs both."""
        return CanaryStrategy(
            steps=[
                CanaryStep(shadow=ShadowStep(percent=self.percent)),
                CanaryStep(analysis=AnalysisStep(duration=self.duration)),
            ],
            analysis=self.analysis,
            probes=self.probes,
            timeout=self.timeout,
        )


class BlueGreenStrategy(ApiModel):
    """Switch every query to the new version at once once its gate passed, then bake (the default)."""


class RolloutStrategy(ApiModel):
    """How a new knowledge-base version reaches users: at most one of blueGreen, canary or shadow."""

    rules = (
        Rule(
            cel="[has(self.blueGreen), has(self.canary), has(self.shadow)].filter(x, x).size() <= 1",
            message="set at most one of blueGreen, canary or shadow",
            holds=lambda s: sum(x is not None for x in (s.blue_green, s.canary, s.shadow)) <= 1,
        ),
    )

    blue_green: BlueGreenStrategy | None = Field(
        default=None, description="Switch at once, then bake; also what an empty strategy means."
    )
    canary: CanaryStrategy | None = Field(default=None, description="Weighted steps with analysis and pauses.")
    shadow: ShadowStrategy | None = Field(default=None, description="Mirror and analyse, then switch.")

    @property
    def name(self) -> Literal["blueGreen", "canary", "shadow"]:
        if self.canary is not None:
            return "canary"
        if self.shadow is not None:
            return "shadow"
        return "blueGreen"

    def progressive(self) -> CanaryStrategy | None:
        """The steps a progressive strategy runs, or None for blueGreen."""
        if self.canary is not None:
            return self.canary
        if self.shadow is not None:
            return self.shadow.as_canary()
        return None


# ---- status.rollout --------------------------------------------------------------------------------


def _clip(limit: int) -> Callable[[Any], Any]:
    """Shortens text to `limit` characters: a status built from an annotation a user wrote, or from
    another object's message, must still fit the CRD's maxLength rather than fail the status write."""

    def clip(value: Any) -> Any:
        return value[: limit - 1] + "…" if isinstance(value, str) and len(value) > limit else value

    return clip


ShortText = Annotated[str, BeforeValidator(_clip(256))]
Text = Annotated[str, BeforeValidator(_clip(1024))]
LongText = Annotated[str, BeforeValidator(_clip(8192))]


class AnalysisVerdict(StrEnum):
    """The verdict of one relative check, or of a whole analysis."""

    PASS = "Pass"
    FAIL = "Fail"
    INCONCLUSIVE = "Inconclusive"


class ObjectiveResult(StatusModel):
    """One relative check of the latest analysis: candidate against stable in the same window."""

    name: str = Field(
        max_length=128,
        description=("p95LatencyMs, errorRate, satisfaction, costPerQueryUsd, shadowOverlap or goldenRecall."),
    )
    source: Literal["user", "probe", "shadow"] | None = Field(
        default=None, description="The traffic compared: user queries, golden probes or shadow retrievals."
    )
    stable: float | None = Field(default=None, description="Stable's value (None: not measured).")
    canary: float | None = Field(default=None, description="The candidate's value (None: not measured).")
    limit: ShortText = Field(max_length=256, description="The limit, as the check reads it, e.g. <= 1.25 x stable.")
    verdict: AnalysisVerdict = Field(description="Pass, Fail or Inconclusive.")
    samples: ShortText = Field(
        max_length=256, default="", description="How much data each side had, e.g. 412/3800 requests."
    )
    message: LongText = Field(max_length=8192, default="", description="Why, in words, when not plain Pass.")


class AnalysisStatus(StatusModel):
    """The latest measurement of the candidate against stable."""

    verdict: AnalysisVerdict = Field(description="Pass, Fail or Inconclusive overall.")
    checked_at: datetime = Field(description="When the measurement was taken.")
    window_seconds: float = Field(ge=0, description="Range measured, ending at checkedAt.")
    objectives: list[ObjectiveResult] = Field(default=[], max_length=16, description="One row per relative check.")
    consecutive_failures: int = Field(default=0, ge=0, description="Failed checks in a row in this analysis step.")
    consecutive_inconclusive: int = Field(
        default=0, ge=0, description="Inconclusive checks in a row since this analysis step's duration passed."
    )
    slo_verdict: Literal["Met", "Breached", "Inconclusive"] | None = Field(
        default=None, description="The candidate's own series against the absolute SLOs (spec.slo)."
    )
    slo_message: LongText = Field(max_length=8192, default="", description="The absolute SLO check, in words.")
    consecutive_slo_breaches: int = Field(default=0, ge=0, description="Breached absolute SLO checks in a row.")
    message: LongText = Field(max_length=8192, default="", description="The verdict, in words.")


class AbortStatus(StatusModel):
    """Why and when a rollout was aborted."""

    reason: str = Field(
        max_length=128,
        description=(
            "AnalysisFailed, AnalysisInconclusive, SLOBreached, CandidateNotReady, ManualAbort, RolloutTimeout, "
            "RolledBack, VersionFailedGate or InvalidSpec."
        ),
    )
    message: LongText = Field(max_length=8192, description="The measurement or event that aborted it.")
    at: datetime = Field(description="When it was aborted.")
    step_index: int | None = Field(default=None, ge=0, description="The step the rollout was at.")


class RolloutActionRecord(StatusModel):
    """The last manual action the operator consumed (from the ragops.dev/rollout-action annotations)."""

    action: ShortText = Field(
        max_length=256, description="promote, promote-full, abort, pause, resume, retry or set-weight=N."
    )
    at: datetime = Field(description="When the operator applied it.")
    outcome: Text = Field(max_length=1024, description="What it did, or why it was ignored.")


class RolloutStatus(StatusModel):
    """Progressive delivery of the knowledge-base version: where the rollout is and what it measured."""

    strategy: Literal["blueGreen", "canary", "shadow"] = Field(description="The strategy in force.")
    phase: RolloutPhase = Field(description="Progressing, Paused, Promoting, Aborted or Healthy.")
    message: LongText = Field(max_length=8192, default="", description="Where the rollout is, in words.")
    stable_version: str | None = Field(max_length=253, default=None, description="The version serving most queries.")
    canary_version: str | None = Field(
        max_length=253, default=None, description="The candidate, while a rollout is in flight."
    )
    rollout_id: str | None = Field(
        max_length=64,
        default=None,
        description="Identity of this rollout (changes when it restarts); salts the sticky client assignment.",
    )
    strategy_hash: str | None = Field(
        max_length=64, default=None, description="Digest of the steps; an edit restarts the rollout."
    )
    current_step_index: int | None = Field(
        default=None, ge=0, description="0-based index of the step in progress (= steps when all are done)."
    )
    steps: int | None = Field(default=None, ge=0, description="Number of steps of the rollout.")
    weight: int = Field(default=0, ge=0, le=100, description="Percent of user queries the candidate answers.")
    shadow_percent: float = Field(default=0, ge=0, le=100, description="Percent of stable queries mirrored.")
    started_at: datetime | None = Field(default=None, description="When this rollout started.")
    step_started_at: datetime | None = Field(
        default=None, description="When the current step started (moved on by time spent held)."
    )
    split_started_at: datetime | None = Field(
        default=None, description="When the current weight and shadow share were set: analysis reads from here."
    )
    paused_at: datetime | None = Field(default=None, description="When the rollout started waiting, if it is.")
    pause_reason: Literal["Step", "Manual"] | None = Field(
        default=None, description="Step (an indefinite pause step) or Manual (kubectl ragops pause / set-weight)."
    )
    held_seconds: float = Field(
        default=0, ge=0, description="Time spent waiting for a manual promote or resume (not counted by timeout)."
    )
    analysis: AnalysisStatus | None = Field(default=None, description="The latest measurement.")
    abort: AbortStatus | None = Field(default=None, description="Why the rollout was aborted, when it was.")
    last_action: RolloutActionRecord | None = Field(default=None, description="The last manual action consumed.")
