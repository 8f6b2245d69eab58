"""Plans a KnowledgeBaseVersion: from observed Jobs and store state to actions and status.

Trust but verify: the store is the source of truth. A build Job that reports success counts
only when the store holds the version's manifest; an eval Job only when the store holds a
verdict. A verdict already in the store wins over any Job state, so a restarted operator (or a
retried Job) never builds or evaluates twice. Pure: the caller observes, plans, then applies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from ..api.common import Condition
from ..api.conditions import KnowledgeBaseVersionCondition as C
from ..api.conditions import KnowledgeBaseVersionPhase as Phase
from ..api.conditions import Reason
from .status import set_condition


class JobState(StrEnum):
    MISSING = "Missing"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


@dataclass(frozen=True)
class ObservedJob:
    state: JobState
    message: str = ""
    failed_attempts: int = 0
    """Pods that failed so far (the Job's status.failed)."""
    backoff_limit: int | None = None


@dataclass(frozen=True)
class StoredVersion:
    """The version as the store records it (see ragops_runtime.store.VersionRecord)."""

    status: Literal["building", "built", "failed"]
    manifest: Mapping[str, Any] | None
    gate: Mapping[str, Any] | None
    gate_passed: bool | None
    error: str | None = None


@dataclass(frozen=True)
class VersionObservation:
    generation: int
    build_job: ObservedJob
    eval_job: ObservedJob
    stored: StoredVersion | None


class Action(StrEnum):
    CREATE_BUILD_JOB = "CreateBuildJob"
    CREATE_EVAL_JOB = "CreateEvalJob"


@dataclass(frozen=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True)
class VersionPlan:
    actions: tuple[Action, ...]
    status: dict[str, Any]
    """The complete status to write (camelCase, as in the CRD)."""
    events: tuple[Event, ...]


def plan_knowledge_base_version(
    observed: VersionObservation,
    conditions: Sequence[Condition],
    previous_phase: str | None,
    now: datetime,
) -> VersionPlan:
    generation = observed.generation
    stored = observed.stored
    actions: list[Action] = []

    def mark(current: list[Condition], type: str, ok: bool | None, reason: Reason, message: str) -> list[Condition]:
        status: Literal["True", "False", "Unknown"] = "Unknown" if ok is None else "True" if ok else "False"
        return set_condition(
            current, type=type, status=status, reason=reason, message=message, observed_generation=generation, now=now
        )

    built = stored is not None and stored.status == "built" and stored.manifest is not None
    build_job = observed.build_job
    current = list(conditions)
    phase: Phase
    if built:
        current = mark(current, C.BUILT, True, Reason.BUILD_SUCCEEDED, _built_message(stored))
    elif observed.build_job.state is JobState.SUCCEEDED:
        current = mark(
            current,
            C.BUILT,
            False,
            Reason.MANIFEST_MISSING,
            "the build Job reported success but the store holds no manifest for this version",
        )
    elif build_job.state is JobState.FAILED or (
        # The store marks the version failed when one attempt fails; while its Job retries, the
        # version is still building. Without a Job (collected after its TTL), the record stands.
        build_job.state is JobState.MISSING and stored is not None and stored.status == "failed"
    ):
        detail = (stored.error if stored is not None and stored.error else None) or build_job.message
        attempts = f" ({build_job.failed_attempts} attempts)" if build_job.failed_attempts > 1 else ""
        message = f"build failed: {detail or 'see the build Job'}{attempts}"
        current = mark(current, C.BUILT, False, Reason.BUILD_FAILED, message)
    else:
        if build_job.state is JobState.MISSING:
            actions.append(Action.CREATE_BUILD_JOB)
        current = mark(current, C.BUILT, None, Reason.BUILDING, "building the index" + _retries(build_job, stored))

    gate_message = ""
    if not built:
        gate_ok: bool | None = None
        current = mark(current, C.GATE_PASSED, None, Reason.PENDING, "waiting for the build")
    elif stored is not None and stored.gate_passed is not None:
        gate_ok = stored.gate_passed
        gate_message = _gate_message(stored.gate or {}, stored.gate_passed)
        reason = Reason.GATE_PASSED if gate_ok else Reason.GATE_BELOW_THRESHOLD
        current = mark(current, C.GATE_PASSED, gate_ok, reason, gate_message)
    elif observed.eval_job.state is JobState.SUCCEEDED:
        gate_ok = False
        current = mark(
            current,
            C.GATE_PASSED,
            False,
            Reason.GATE_FAILED,
            "the eval Job reported success but the store holds no verdict for this version",
        )
    elif observed.eval_job.state is JobState.FAILED:
        gate_ok = False
        current = mark(
            current,
            C.GATE_PASSED,
            False,
            Reason.GATE_FAILED,
            f"evaluation failed: {observed.eval_job.message or 'see the eval Job'}",
        )
    else:
        gate_ok = None
        if observed.eval_job.state is JobState.MISSING:
            actions.append(Action.CREATE_EVAL_JOB)
        current = mark(current, C.GATE_PASSED, None, Reason.EVALUATING, "running the golden-set gate")

    built_condition = next(c for c in current if c.type == C.BUILT)
    gate_condition = next(c for c in current if c.type == C.GATE_PASSED)
    if built_condition.status == "False":
        phase = Phase.FAILED
        current = mark(current, C.READY, False, Reason(built_condition.reason), built_condition.message)
    elif not built:
        phase = Phase.BUILDING
        current = mark(current, C.READY, False, Reason.BUILDING, "building the index")
    elif gate_ok is None:
        phase = Phase.EVALUATING
        current = mark(current, C.READY, False, Reason.EVALUATING, "running the golden-set gate")
    elif gate_ok:
        phase = Phase.READY
        current = mark(current, C.READY, True, Reason.GATE_PASSED, "built and gated: ready to promote")
    else:
        phase = Phase.FAILED
        current = mark(current, C.READY, False, Reason(gate_condition.reason), gate_condition.message)

    status: dict[str, Any] = {
        "observedGeneration": generation,
        "phase": phase.value,
        "conditions": [c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in current],
    }
    if built and stored is not None and stored.manifest is not None:
        status.update(_counts(stored.manifest))
        status["manifest"] = _manifest(stored.manifest)
    if stored is not None and stored.gate is not None and stored.gate_passed is not None:
        status["gate"] = _gate(stored.gate, stored.gate_passed)

    events: tuple[Event, ...] = ()
    if phase.value != previous_phase:
        ready = next(c for c in current if c.type == C.READY)
        events = (Event("Warning" if phase is Phase.FAILED else "Normal", ready.reason, ready.message),)
    return VersionPlan(actions=tuple(actions), status=status, events=events)


def _retries(job: ObservedJob, stored: StoredVersion | None) -> str:
    """The retries so far, for the Built condition: ": attempt 2 of 3 (attempt 1 failed: why)"."""
    if not job.failed_attempts:
        return ""
    of = f" of {job.backoff_limit + 1}" if job.backoff_limit is not None else ""
    why = (stored.error if stored is not None and stored.status == "failed" else None) or "see the build Job's pods"
    return f": attempt {job.failed_attempts + 1}{of} (attempt {job.failed_attempts} failed: {why})"


def _built_message(stored: StoredVersion | None) -> str:
    manifest = (stored.manifest if stored else None) or {}
    return (
        f"{manifest.get('documents', '?')} documents, {manifest.get('chunks', '?')} chunks, "
        f"{manifest.get('reusedEmbeddings', '?')} embeddings reused"
    )


def _gate_message(gate: Mapping[str, Any], passed: bool) -> str:
    metrics = gate.get("metrics") or {}
    values = ", ".join(f"{name}={value:.3f}" for name, value in metrics.items() if isinstance(value, int | float))
    if passed:
        return f"gate passed: {values}"
    failed = ", ".join(gate.get("failedMetrics") or []) or values
    return f"gate below threshold: {failed}"


def _counts(manifest: Mapping[str, Any]) -> dict[str, Any]:
    return {key: manifest[key] for key in ("documents", "chunks", "reusedEmbeddings") if key in manifest}


_MANIFEST_FIELDS = (
    "embeddingProvider",
    "embeddingModel",
    "dimensions",
    "chunking",
    "index",
    "sourcesDigest",
    "documents",
    "chunks",
    "reusedEmbeddings",
    "boilerplate",
    "buildSeconds",
    "createdAt",
)


def _manifest(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest fields the CRD's status declares; the store keeps the full manifest."""
    return {key: manifest[key] for key in _MANIFEST_FIELDS if key in manifest}


def _gate(gate: Mapping[str, Any], passed: bool) -> dict[str, Any]:
    metrics = gate.get("metrics") or {}
    return {
        "metrics": {
            key: metrics[key]
            for key in ("precisionAtK", "recallAtK", "mrr", "ndcgAtK", "hitRate", "answerPassRate")
            if key in metrics
        },
        "passed": passed,
        "cases": len(gate.get("cases") or []),
        "failedMetrics": list(gate.get("failedMetrics") or [])[:16],
    }
