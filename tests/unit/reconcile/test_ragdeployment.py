"""The rollout planner walked through a deployment's life: promote, bake, refuse, roll back, never loop."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ragops_operator.api import RagDeploymentStatus
from ragops_operator.api.common import Condition
from ragops_operator.reconcile.ragdeployment import (
    HISTORY_LIMIT,
    DesiredVersion,
    Revision,
    RollbackRequest,
    RolloutObservation,
    RolloutOverlay,
    RolloutPlan,
    VersionReadiness,
    kept_versions,
    plan_rollout,
    reconcile_due,
    runtime_failure,
    stale_templates,
    version_deletion,
)

T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
READY, PENDING, FAILED = VersionReadiness.READY, VersionReadiness.PENDING, VersionReadiness.FAILED


def observe(
    version: str, readiness: VersionReadiness, history: tuple[Revision, ...] = (), **changes: Any
) -> RolloutObservation:
    base = RolloutObservation(
        generation=1,
        desired=DesiredVersion(version, readiness, f"{version} is {readiness.value}"),
        runtime_hash="aaa",
        history=history,
        ready_replicas=2,
        desired_replicas=2,
        bake_complete=False,
    )
    return replace(base, **changes)


def step(observed: RolloutObservation, previous: RolloutPlan | None = None, minutes: int = 0) -> RolloutPlan:
    conditions = [Condition.model_validate(c) for c in previous.status["conditions"]] if previous else []
    plan = plan_rollout(
        observed, conditions, previous.status["phase"] if previous else None, T0 + timedelta(minutes=minutes)
    )
    RagDeploymentStatus.model_validate(plan.status)  # every status written is valid for the CRD
    return plan


def condition(plan: RolloutPlan, type: str) -> dict[str, Any]:
    return next(c for c in plan.status["conditions"] if c["type"] == type)


def test_a_deployment_s_life_without_loops() -> None:
    waiting = step(observe("v1", PENDING))
    assert waiting.serve is None and waiting.status["phase"] == "Pending"
    assert condition(waiting, "Progressing")["reason"] == "VersionNotReady"

    promoted = step(observe("v1", READY), waiting, 1)
    assert promoted.serve is not None and promoted.serve.kb_version == "v1" and promoted.serve.outcome == "Baking"
    assert promoted.status["phase"] == "Baking" and promoted.events[0].reason == "Promoted"

    baked = step(observe("v1", READY, promoted.history, bake_complete=True), promoted, 11)
    assert baked.status["lastKnownGoodVersion"] == "v1" and baked.status["phase"] == "Healthy"
    assert baked.events[0].reason == "BakeCompleted"

    refused = step(observe("v2", FAILED, baked.history), baked, 12)
    assert refused.serve is not None and refused.serve.kb_version == "v1"
    assert refused.status["phase"] == "Degraded"
    assert condition(refused, "Degraded")["reason"] == "VersionFailedGate"
    assert condition(refused, "Degraded")["message"] == "v2 is not promoted: v2 is Failed"

    v3 = step(observe("v3", READY, refused.history), refused, 13)
    assert v3.serve is not None and (v3.serve.revision, v3.serve.kb_version) == (2, "v3")

    rolled = step(observe("v3", READY, v3.history, rollback=RollbackRequest("p95LatencyMs=1830>1000")), v3, 15)
    assert rolled.serve is not None and rolled.serve.kb_version == "v1"
    assert [r.outcome for r in rolled.history] == ["KnownGood", "RolledBack"]
    # The reason stays in status.history after the Event has expired.
    assert [r.to_status().get("message") for r in rolled.history] == [None, "p95LatencyMs=1830>1000"]
    assert condition(rolled, "RolledBack")["status"] == "True"
    assert condition(rolled, "RolledBack")["message"] == "p95LatencyMs=1830>1000"
    assert rolled.events[0].type == "Warning" and "rolled back v3 to v1" in rolled.events[0].message

    # The spec still asks for v3: it is not promoted again, and says why.
    held = step(observe("v3", READY, rolled.history), rolled, 16)
    assert held.serve is not None and held.serve.kb_version == "v1" and len(held.history) == 2
    assert held.history[-1].message == "p95LatencyMs=1830>1000"
    assert condition(held, "Degraded")["reason"] == "RolledBack"
    assert "change spec.knowledgeBase.version or the runtime" in condition(held, "Degraded")["message"]
    assert condition(held, "RolledBack")["status"] == "True"

    # A new runtime template with v3 is a new revision: it may be tried.
    retried = step(observe("v3", READY, held.history, runtime_hash="bbb"), held, 20)
    assert retried.serve is not None and (retried.serve.kb_version, retried.serve.runtime_hash) == ("v3", "bbb")
    assert condition(retried, "RolledBack")["status"] == "False"


def test_a_breach_after_bake_returns_to_the_previous_known_good_revision() -> None:
    history = (
        Revision(1, "v1", "aaa", T0, "KnownGood"),
        Revision(2, "v2", "aaa", T0 + timedelta(hours=1), "KnownGood"),
    )
    plan = step(observe("v2", READY, history, rollback=RollbackRequest("errorRate=0.2>0.01")))
    assert plan.serve is not None and plan.serve.kb_version == "v1"
    assert plan.status["lastKnownGoodVersion"] == "v1"


def test_no_rollback_without_a_known_good_revision() -> None:
    history = (Revision(1, "v1", "aaa", T0, "Baking"),)
    plan = step(observe("v1", READY, history, rollback=RollbackRequest("p95LatencyMs=2000>1000")))
    assert plan.serve is not None and plan.serve.outcome == "Baking"
    assert all(event.reason != "RolledBack" for event in plan.events)


def test_a_new_promotion_supersedes_a_revision_still_baking() -> None:
    history = (Revision(1, "v1", "aaa", T0, "KnownGood"), Revision(2, "v2", "aaa", T0, "Baking"))
    plan = step(observe("v3", READY, history))
    assert [r.outcome for r in plan.history] == ["KnownGood", "Superseded", "Baking"]


def test_unavailable_replicas_degrade_and_progress() -> None:
    history = (Revision(1, "v1", "aaa", T0, "KnownGood"),)
    plan = step(observe("v1", READY, history, ready_replicas=1))
    assert plan.status["phase"] == "Degraded" and condition(plan, "Available")["status"] == "True"
    assert condition(plan, "Degraded")["message"] == "1/2 runtime replicas ready"
    none = step(observe("v1", READY, history, ready_replicas=0))
    assert condition(none, "Available")["status"] == "False"


def test_history_is_bounded() -> None:
    history = tuple(Revision(n, f"v{n}", "aaa", T0, "KnownGood") for n in range(1, HISTORY_LIMIT + 1))
    plan = step(observe("v99", READY, history))
    assert len(plan.history) == HISTORY_LIMIT and plan.history[-1].kb_version == "v99"


@pytest.mark.parametrize(
    ("case", "changes", "due"),
    [
        ("steady and recently examined: skip", {}, False),
        ("never examined by this replica", {"last_pass": None}, True),
        ("a spec change not yet observed", {"observed_generation": 3}, True),
        ("no status at all", {"observed_generation": None, "phase": None}, True),
        ("an SLO check due", {"slo_check_due": True}, True),
        ("baking", {"phase": "Baking"}, True),
        ("degraded", {"phase": "Degraded"}, True),
        ("steady, resync period over", {"last_pass": datetime(2026, 11, 21, 11, 59, 30, tzinfo=UTC)}, True),
        ("this generation's spec refused: no pass until it changes", {"refused": True, "phase": "Failed"}, False),
        ("refused, never examined by this replica", {"refused": True, "last_pass": None}, False),
    ],
)
def test_a_full_pass_is_due_for_anything_in_flight_and_for_steady_ones_every_resync(
    case: str, changes: dict[str, object], due: bool
) -> None:
    now = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
    arguments: dict[str, object] = {
        "generation": 4,
        "observed_generation": 4,
        "refused": False,
        "phase": "Healthy",
        "slo_check_due": False,
        "last_pass": now - timedelta(seconds=5),
        "now": now,
        "resync": timedelta(seconds=30),
        **changes,
    }
    assert reconcile_due(**arguments) is due, case  # type: ignore[arg-type]


def test_only_per_template_objects_no_revision_can_return_to_are_pruned() -> None:
    existing = {"docs-runtime-aaa": "aaa", "docs-runtime-bbb": "bbb", "docs-runtime-ccc": "ccc", "other": None}
    assert stale_templates(existing, {"aaa", "ccc"}) == ["docs-runtime-bbb"]
    assert stale_templates(existing, {"aaa", "bbb", "ccc"}) == []


def test_a_version_of_another_knowledge_base_is_an_invalid_spec_reported_once() -> None:
    served = step(observe("v1", READY))
    invalid = DesiredVersion("x1", VersionReadiness.INVALID, "spec.knowledgeBase.version: x1 is a version of 'x'")
    first = step(replace(observe("v1", READY, served.history), desired=invalid), served, 1)
    assert first.serve is not None and first.serve.kb_version == "v1"  # the served version keeps serving
    degraded = condition(first, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "InvalidSpec")
    assert degraded["message"] == "spec.knowledgeBase.version: x1 is a version of 'x'"
    assert [(e.type, e.reason) for e in first.events] == [("Warning", "InvalidSpec")]
    again = step(replace(observe("v1", READY, first.history), desired=invalid), first, 2)
    assert again.events == ()
    nothing_served = step(replace(observe("x1", READY), desired=invalid))
    assert nothing_served.status["phase"] == "Failed"


def test_a_progressive_rollout_overlays_progressing_and_degraded() -> None:
    served = step(observe("v1", READY, bake_complete=True))
    served = step(observe("v1", READY, served.history, bake_complete=True), served, 11)
    assert served.status["phase"] == "Healthy"
    canary = RolloutOverlay(progressing=("RolloutProgressing", "step 1/3 (setWeight 10): v2 answers 10% of users"))
    in_flight = step(observe("v1", READY, served.history, overlay=canary), served, 12)
    assert in_flight.status["phase"] == "Progressing" and in_flight.serve is not None
    assert condition(in_flight, "Progressing")["reason"] == "RolloutProgressing"
    assert [e.reason for e in in_flight.events] == ["Progressing"]
    aborted = RolloutOverlay(degraded=("AnalysisFailed", "rollout of v2 aborted at step 2/3: p95LatencyMs Fail"))
    failed = step(observe("v1", READY, served.history, overlay=aborted), in_flight, 13)
    assert failed.status["phase"] == "Degraded" and failed.status["activeVersion"] == "v1"
    assert condition(failed, "Degraded")["reason"] == "AnalysisFailed"
    assert condition(failed, "Progressing")["status"] == "False"


def _pod(name: str, reason: str, message: str = "") -> dict[str, Any]:
    waiting = {"reason": reason, **({"message": message} if message else {})}
    return {
        "metadata": {"name": name},
        "status": {"containerStatuses": [{"name": "runtime", "state": {"waiting": waiting}}]},
    }


REPLICA_FAILURE = {
    "status": {
        "conditions": [
            {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate", "message": "pods is forbidden"}
        ]
    }
}
DEADLINE = {
    "status": {"conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]}
}


@pytest.mark.parametrize(
    ("case", "deployment", "pods", "reason"),
    [
        (
            "running",
            None,
            [{"metadata": {"name": "a"}, "status": {"containerStatuses": [{"state": {"running": {}}}]}}],
            None,
        ),
        ("starting", None, [_pod("a", "ContainerCreating")], None),
        (
            "image cannot be pulled",
            None,
            [_pod("a", "ContainerCreating"), _pod("b", "ImagePullBackOff")],
            "ImagePullBackOff",
        ),
        ("first pull failed", None, [_pod("a", "ErrImagePull")], "ErrImagePull"),
        ("missing Secret key", None, [_pod("a", "CreateContainerConfigError")], "CreateContainerConfigError"),
        ("crashing", None, [_pod("a", "CrashLoopBackOff")], "CrashLoopBackOff"),
        ("ReplicaSet cannot create pods", REPLICA_FAILURE, [], "FailedCreate"),
        ("progress deadline passed", DEADLINE, [], "ProgressDeadlineExceeded"),
    ],
)
def test_runtime_pods_that_cannot_run_are_named_with_kubernetes_reason(
    case: str, deployment: dict[str, Any] | None, pods: list[dict[str, Any]], reason: str | None
) -> None:
    found = runtime_failure(deployment, pods)
    assert (found[0] if found else None) == reason, case


def test_a_runtime_that_cannot_run_is_degraded_and_never_bakes() -> None:
    failure = ("ImagePullBackOff", 'pod docs-runtime-1, container runtime: Back-off pulling image "bad:tag"')
    promoted = step(observe("v1", READY))
    broken = step(observe("v1", READY, promoted.history, bake_complete=True, ready_replicas=0, runtime_failure=failure))
    assert [r.outcome for r in broken.history] == ["Baking"]  # not KnownGood: nothing was proven
    assert broken.status["phase"] == "Degraded"
    assert (condition(broken, "Degraded")["status"], condition(broken, "Degraded")["reason"]) == (
        "True",
        "ImagePullBackOff",
    )
    assert condition(broken, "Degraded")["message"] == failure[1]
    assert (condition(broken, "Progressing")["status"], condition(broken, "Progressing")["reason"]) == (
        "False",
        "ImagePullBackOff",
    )
    healed = step(observe("v1", READY, broken.history, bake_complete=True), broken)
    assert [r.outcome for r in healed.history] == ["KnownGood"]


def test_kept_versions_are_the_served_one_the_rollback_target_and_the_candidate() -> None:
    assert kept_versions(()) == {}
    baking = (Revision(1, "v1", "aaa", T0, "KnownGood"), Revision(2, "v2", "aaa", T0, "Baking"))
    assert kept_versions(baking) == {"v2": "serves it", "v1": "would roll back to it"}
    # Once v2 has baked it is the last known-good, but a breach after the bake still returns to v1.
    baked = (Revision(1, "v1", "aaa", T0, "KnownGood"), Revision(2, "v2", "aaa", T0, "KnownGood"))
    assert kept_versions(baked) == {"v2": "serves it", "v1": "would roll back to it"}
    later = (*baked, Revision(3, "v3", "aaa", T0, "KnownGood"))
    assert kept_versions(later, canary="v4") == {
        "v3": "serves it",
        "v2": "would roll back to it",
        "v4": "is rolling it out",
    }
    rolled = (Revision(1, "v1", "aaa", T0, "KnownGood"), Revision(2, "v2", "aaa", T0, "RolledBack"))
    assert kept_versions(rolled) == {"v1": "serves it"}


def test_a_kept_version_being_deleted_is_a_condition_and_one_event_each_way() -> None:
    conditions, events = version_deletion([], {"v1": "serves it"}, 3, T0)
    (deleting,) = conditions
    assert (deleting.type, deleting.status, deleting.reason) == ("VersionDeleting", "True", "VersionDeleting")
    assert deleting.message.startswith("KnowledgeBaseVersion v1 is being deleted but this deployment serves it")
    assert [(e.type, e.reason) for e in events] == [("Warning", "VersionDeleting")]
    again, events = version_deletion(conditions, {"v1": "serves it"}, 3, T0 + timedelta(seconds=2))
    assert again == conditions and events == ()
    released, events = version_deletion(again, {}, 3, T0 + timedelta(seconds=4))
    assert released == [] and [(e.type, e.reason) for e in events] == [("Normal", "VersionReleased")]
    assert version_deletion([], {}, 3, T0) == ([], ())
