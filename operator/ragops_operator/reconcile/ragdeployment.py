"""Plans a RagDeployment's promotions and rollbacks: which revision to serve, and what status says.

A revision is the pair (knowledge-base version, runtime template hash). A new one is promoted
only when its KnowledgeBaseVersion is Ready with its gate passed; it then bakes, and becomes
known-good when the bake completes without breaching the SLOs. A rollback returns to the last
known-good revision and marks the bad one RolledBack, which is never promoted again until the
spec asks for a different version or template: no rollback loops. Pure: the caller observes
(the version, the pointer, the Deployment, the SLO verdict), plans, then applies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

from ..api.common import Condition, ConditionStatus
from ..api.conditions import RagDeploymentCondition as C
from ..api.conditions import RagDeploymentPhase as Phase
from ..api.conditions import Reason
from .knowledgebaseversion import Event
from .status import set_condition

HISTORY_LIMIT = 20


class VersionReadiness(StrEnum):
    MISSING = "Missing"
    PENDING = "Pending"
    READY = "Ready"
    FAILED = "Failed"
    INVALID = "Invalid"
    """Not a version of the deployment's knowledge base: a spec error, named as spec.knowledgeBase.version."""


@dataclass(frozen=True)
class DesiredVersion:
    name: str
    readiness: VersionReadiness
    message: str = ""


@dataclass(frozen=True)
class Revision:
    revision: int
    kb_version: str
    runtime_hash: str
    promoted_at: datetime
    outcome: Literal["Baking", "KnownGood", "Superseded", "RolledBack"]
    message: str | None = None
    """Why a RolledBack revision was rolled back: Events expire (an hour by default), history stays."""

    def to_status(self) -> dict[str, Any]:
        status: dict[str, Any] = {
            "revision": self.revision,
            "kbVersion": self.kb_version,
            "runtimeHash": self.runtime_hash,
            "promotedAt": self.promoted_at.isoformat(),
            "outcome": self.outcome,
        }
        if self.message is not None:
            status["message"] = self.message
        return status


@dataclass(frozen=True)
class RolloutOverlay:
    """What a progressive rollout (reconcile.progressive) says about the deployment's own conditions."""

    progressing: tuple[str, str] | None = None
    """(reason, message) while a rollout is in flight: Progressing=True and phase Progressing."""
    degraded: tuple[str, str] | None = None
    """(reason, message) once it aborted: Degraded=True and phase Degraded."""


@dataclass(frozen=True)
class RolloutObservation:
    generation: int
    desired: DesiredVersion
    runtime_hash: str
    """Hash of the runtime template the current spec renders."""
    history: tuple[Revision, ...]
    ready_replicas: int
    desired_replicas: int
    bake_complete: bool
    """The SLO watch says the baking revision has baked (see reconcile.slo.bake_complete)."""
    rollback: RollbackRequest | None = None
    overlay: RolloutOverlay = field(default_factory=RolloutOverlay)
    runtime_failure: tuple[str, str] | None = None
    """(reason, message) when runtime pods cannot be created or started (see `runtime_failure`)."""


@dataclass(frozen=True)
class RollbackRequest:
    """The SLO watch decided to roll back; `message` carries the measured values."""

    message: str


@dataclass(frozen=True)
class RolloutPlan:
    serve: Revision | None
    """The revision whose version the pointer must name and whose template the Deployment must run."""
    history: tuple[Revision, ...]
    status: dict[str, Any]
    events: tuple[Event, ...] = field(default_factory=tuple)


POD_FAILURES = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "ErrImageNeverPull",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
        "CrashLoopBackOff",
    }
)
"""Container waiting reasons that do not clear by waiting a little: the image or the pod spec is wrong."""


def runtime_failure(deployment: Mapping[str, Any] | None, pods: Sequence[Mapping[str, Any]]) -> tuple[str, str] | None:
    """(reason, message) when the runtime cannot run: the ReplicaSet cannot create pods (FailedCreate),
    a pod cannot pull its image, start or stay up, or the rollout passed its progress deadline.

    The reason is Kubernetes' own (ImagePullBackOff, FailedCreate ...), so users find it in their
    runbooks. Pods come sorted by name so the same cluster state always names the same pod.
    """
    conditions = ((deployment or {}).get("status") or {}).get("conditions") or []
    for condition in conditions:
        if condition.get("type") == "ReplicaFailure" and condition.get("status") == "True":
            return condition.get("reason") or "FailedCreate", condition.get("message") or "cannot create runtime pods"
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        status = pod.get("status") or {}
        for container in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
            waiting = (container.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in POD_FAILURES:
                detail = waiting.get("message") or waiting["reason"]
                return waiting["reason"], f"pod {pod['metadata']['name']}, container {container.get('name')}: {detail}"
    for condition in conditions:
        if condition.get("type") == "Progressing" and condition.get("reason") == "ProgressDeadlineExceeded":
            return "ProgressDeadlineExceeded", condition.get("message") or "the runtime rollout made no progress"
    return None


def current_revision(history: Sequence[Revision]) -> Revision | None:
    """The revision being served: the newest one baking or known-good.

    Known-good revisions keep that outcome when newer ones are promoted: they are the rollback
    targets. Only a revision replaced while still baking becomes Superseded.
    """
    live = [r for r in history if r.outcome in ("Baking", "KnownGood")]
    return live[-1] if live else None


def _rollback_target(history: Sequence[Revision], current: Revision) -> Revision | None:
    """The newest known-good revision other than the one being rolled back."""
    good = [r for r in history if r.outcome == "KnownGood" and r.revision != current.revision]
    return good[-1] if good else None


def kept_versions(history: Sequence[Revision], canary: str | None = None) -> dict[str, str]:
    """The versions this deployment needs kept, each with why: the one it serves, the one it would
    roll back to (the newest known-good revision before the served one, which an SLO breach after
    the bake still returns to), and a candidate it is rolling out. Their deletion waits."""
    kept: dict[str, str] = {}
    current = current_revision(history)
    if current is not None:
        kept[current.kb_version] = "serves it"
        target = _rollback_target(history, current)
        if target is not None:
            kept.setdefault(target.kb_version, "would roll back to it")
    if canary is not None:
        kept.setdefault(canary, "is rolling it out")
    return kept


def version_deletion(
    conditions: Sequence[Condition], deleting: Mapping[str, str], generation: int, now: datetime
) -> tuple[list[Condition], tuple[Event, ...]]:
    """Condition VersionDeleting, True while a KnowledgeBaseVersion this deployment keeps is being
    deleted (`deleting`: version -> why it is kept), removed once none is; an Event when that changes.

    The deployment goes on serving as before: the version's object, index and rows stay until it is
    no longer kept (the KnowledgeBaseVersion's finalizer waits, its Ready condition says InUse).
    """
    previous = next((c for c in conditions if c.type == C.VERSION_DELETING), None)
    if not deleting:
        if previous is None:
            return list(conditions), ()
        released = Event(
            "Normal", Reason.VERSION_RELEASED, f"no longer keeps a version being deleted: {previous.message}"
        )
        return [c for c in conditions if c.type != C.VERSION_DELETING], (released,)
    message = "; ".join(
        f"KnowledgeBaseVersion {name} is being deleted but this deployment {why}: it is kept, index and rows, "
        "until no deployment serves it or would roll back to it"
        for name, why in sorted(deleting.items())
    )
    updated = set_condition(
        conditions,
        type=C.VERSION_DELETING,
        status="True",
        reason=Reason.VERSION_DELETING,
        message=message,
        observed_generation=generation,
        now=now,
    )
    changed = previous is None or previous.message != message
    return updated, (Event("Warning", Reason.VERSION_DELETING, message),) if changed else ()


def was_rolled_back(history: Sequence[Revision], version: str, runtime_hash: str) -> bool:
    """Whether this version with this runtime was promoted before and rolled back: never promoted again."""
    return any(
        r.outcome == "RolledBack" and r.kb_version == version and r.runtime_hash == runtime_hash for r in history
    )


def last_known_good(history: Sequence[Revision]) -> Revision | None:
    good = [r for r in history if r.outcome == "KnownGood"]
    return good[-1] if good else None


def reconcile_due(
    *,
    generation: int,
    observed_generation: int | None,
    refused: bool,
    phase: str | None,
    slo_check_due: bool,
    last_pass: datetime | None,
    now: datetime,
    resync: timedelta,
) -> bool:
    """Whether this tick must run a full pass (observe, plan, apply) or may skip it.

    Anything in flight (a spec not yet observed, a rollout, a bake, a wait, a degradation) and any
    SLO check due is examined at every tick; a steady Healthy deployment only every `resync`, which
    bounds how long drift made by hand survives. With hundreds of deployments, steady ones are
    most of them, and a pass is a dozen API calls. A spec already refused (InvalidSpec for this
    generation) gets no pass until it changes: the same refusal again would be a loop of noise.
    """
    if refused:
        return False
    if last_pass is None or observed_generation != generation or slo_check_due:
        return True
    if phase != Phase.HEALTHY:
        return True
    return now - last_pass >= resync


def stale_templates(existing: Mapping[str, str | None], keep: Set[str]) -> list[str]:
    """Names of per-template objects (name -> template hash) whose template nothing can return to.

    Objects without a hash are not per-template ones and are never pruned.
    """
    return sorted(name for name, template_hash in existing.items() if template_hash and template_hash not in keep)


def plan_rollout(
    observed: RolloutObservation, conditions: Sequence[Condition], previous_phase: str | None, now: datetime
) -> RolloutPlan:
    history = list(observed.history)
    events: list[Event] = []
    current = current_revision(history)
    desired = observed.desired

    def replace_outcome(
        target: Revision, outcome: Literal["KnownGood", "Superseded", "RolledBack"], message: str | None = None
    ) -> None:
        history[history.index(target)] = Revision(
            target.revision, target.kb_version, target.runtime_hash, target.promoted_at, outcome, message
        )

    rolled_back = False
    if observed.rollback is not None and current is not None:
        target = _rollback_target(history, current)
        if target is not None:
            replace_outcome(current, "RolledBack", observed.rollback.message[:1024])
            events.append(
                Event(
                    "Warning",
                    Reason.ROLLED_BACK,
                    f"rolled back {current.kb_version} to {target.kb_version}: {observed.rollback.message}",
                )
            )
            current, rolled_back = target, True

    blocked = was_rolled_back(history, desired.name, observed.runtime_hash)
    wants_new = current is None or (current.kb_version, current.runtime_hash) != (desired.name, observed.runtime_hash)
    promoted = False
    if wants_new and not blocked and desired.readiness is VersionReadiness.READY and not rolled_back:
        if current is not None and current.outcome == "Baking":
            replace_outcome(current, "Superseded")  # replaced before it proved itself: never a rollback target
        number = max((r.revision for r in history), default=0) + 1
        current = Revision(number, desired.name, observed.runtime_hash, now, "Baking")
        history.append(current)
        promoted = True
        events.append(
            Event(
                "Normal",
                Reason.PROMOTED,
                f"revision {number}: serving {desired.name} (runtime {observed.runtime_hash})",
            )
        )
    elif (
        current is not None
        and current.outcome == "Baking"
        and observed.bake_complete
        and not rolled_back
        # Runtime pods that cannot run prove nothing: the bake completes only once they do.
        and observed.runtime_failure is None
    ):
        replace_outcome(current, "KnownGood")
        current = next(r for r in history if r.revision == current.revision)
        events.append(Event("Normal", "BakeCompleted", f"{current.kb_version} is now the last known-good version"))

    trimmed = tuple(history[-HISTORY_LIMIT:])
    status = _status(observed, conditions, trimmed, current, blocked and wants_new, rolled_back, promoted, now)
    if desired.readiness is VersionReadiness.INVALID and not _invalid_reported(conditions):
        events.append(Event("Warning", Reason.INVALID_SPEC, desired.message))
    phase = status["phase"]
    if phase != previous_phase and not events:
        events.append(
            Event("Warning" if phase in (Phase.DEGRADED, Phase.FAILED) else "Normal", phase, f"phase {phase}")
        )
    return RolloutPlan(serve=current, history=trimmed, status=status, events=tuple(events))


def _invalid_reported(conditions: Sequence[Condition]) -> bool:
    """Whether the last pass already reported the invalid version (its Event is posted once)."""
    return any(c.type == C.DEGRADED and c.status == "True" and c.reason == Reason.INVALID_SPEC for c in conditions)


def _status(
    observed: RolloutObservation,
    conditions: Sequence[Condition],
    history: Sequence[Revision],
    current: Revision | None,
    blocked: bool,
    rolled_back: bool,
    promoted: bool,
    now: datetime,
) -> dict[str, Any]:
    generation = observed.generation
    desired = observed.desired
    result = list(conditions)

    def mark(type: str, status: ConditionStatus, reason: str, message: str) -> None:
        nonlocal result
        result = set_condition(
            result, type=type, status=status, reason=reason, message=message, observed_generation=generation, now=now
        )

    available = observed.ready_replicas > 0 and current is not None
    mark(
        C.AVAILABLE,
        "True" if available else "False",
        Reason.REPLICAS_READY if available else Reason.REPLICAS_UNAVAILABLE,
        f"{observed.ready_replicas}/{observed.desired_replicas} runtime replicas ready"
        + ("" if current is not None else "; no version promoted yet"),
    )

    degraded_reason: str | None = None
    degraded_message = ""
    if blocked:
        degraded_reason = Reason.ROLLED_BACK
        degraded_message = (
            f"{desired.name} was rolled back after breaching its SLOs; change "
            "spec.knowledgeBase.version or the runtime to try again"
        )
    elif desired.readiness is VersionReadiness.FAILED:
        degraded_reason = Reason.VERSION_FAILED_GATE
        degraded_message = f"{desired.name} is not promoted: {desired.message}"
    elif desired.readiness is VersionReadiness.INVALID:
        degraded_reason, degraded_message = Reason.INVALID_SPEC, desired.message
    elif observed.runtime_failure is not None:
        degraded_reason, degraded_message = observed.runtime_failure
    elif observed.overlay.degraded is not None:
        degraded_reason, degraded_message = observed.overlay.degraded
    elif available and observed.ready_replicas < observed.desired_replicas:
        degraded_reason = Reason.REPLICAS_UNAVAILABLE
        degraded_message = f"{observed.ready_replicas}/{observed.desired_replicas} runtime replicas ready"

    if degraded_reason:
        mark(C.DEGRADED, "True", degraded_reason, degraded_message)
    else:
        mark(C.DEGRADED, "False", Reason.REPLICAS_READY, "serving as desired")

    if rolled_back:
        mark(
            C.ROLLED_BACK,
            "True",
            Reason.ROLLED_BACK,
            next((e for e in [observed.rollback.message] if e), "rolled back") if observed.rollback else "rolled back",
        )
    elif promoted:
        mark(C.ROLLED_BACK, "False", Reason.PROMOTED, f"serving {desired.name}")
    elif not any(c.type == C.ROLLED_BACK for c in result):
        mark(C.ROLLED_BACK, "False", Reason.PENDING, "no rollback")

    waiting = desired.readiness in (VersionReadiness.MISSING, VersionReadiness.PENDING)
    baking = current is not None and current.outcome == "Baking"
    if observed.runtime_failure is not None:
        mark(C.PROGRESSING, "False", *observed.runtime_failure)
    elif observed.overlay.progressing is not None:
        mark(C.PROGRESSING, "True", *observed.overlay.progressing)
    elif waiting and not blocked and (current is None or current.kb_version != desired.name):
        reason = (
            Reason.WAITING_FOR_VERSION if desired.readiness is VersionReadiness.MISSING else Reason.VERSION_NOT_READY
        )
        mark(C.PROGRESSING, "True", reason, desired.message or f"waiting for {desired.name}")
    elif current is not None and baking:
        mark(C.PROGRESSING, "True", Reason.BAKING, f"revision {current.revision} ({current.kb_version}) is baking")
    elif observed.ready_replicas < observed.desired_replicas:
        mark(C.PROGRESSING, "True", Reason.ROLLING_OUT, "runtime pods are rolling out")
    else:
        mark(C.PROGRESSING, "False", Reason.REPLICAS_READY, "rollout complete")

    if current is None:
        failed = desired.readiness in (VersionReadiness.FAILED, VersionReadiness.INVALID)
        phase = Phase.FAILED if failed else Phase.PENDING
    elif degraded_reason:
        phase = Phase.DEGRADED
    elif observed.overlay.progressing is not None:
        phase = Phase.PROGRESSING
    elif baking:
        phase = Phase.BAKING
    elif observed.ready_replicas < observed.desired_replicas:
        phase = Phase.PROGRESSING
    else:
        phase = Phase.HEALTHY

    good = last_known_good(history)
    return {
        "observedGeneration": generation,
        "phase": phase.value,
        "activeVersion": current.kb_version if current else None,
        "lastKnownGoodVersion": good.kb_version if good else None,
        "runtimeRevision": current.runtime_hash if current else None,
        "conditions": [c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in result],
        "history": [r.to_status() for r in history],
    }
