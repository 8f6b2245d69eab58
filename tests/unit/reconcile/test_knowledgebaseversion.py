"""The KnowledgeBaseVersion planner: phases, conditions, actions and events from what was observed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ragops_operator.api import KnowledgeBaseVersionStatus
from ragops_operator.api.common import Condition
from ragops_operator.reconcile.knowledgebaseversion import (
    Action,
    JobState,
    ObservedJob,
    StoredVersion,
    VersionObservation,
    plan_knowledge_base_version,
)

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
MANIFEST = {
    "documents": 22,
    "chunks": 117,
    "reusedEmbeddings": 0,
    "embeddingProvider": "hashing",
    "embeddingModel": "hashing-v1",
    "dimensions": 384,
    "chunking": "recursive/512/64",
    "index": "hnsw/m=16/ef=64/cosine",
    "sourcesDigest": "ab",
    "buildSeconds": 0.4,
    "createdAt": "2026-11-21T11:59:00+00:00",
    "skipped": [],
}
PASSED = {
    "metrics": {"precisionAtK": 0.4, "recallAtK": 0.8, "mrr": 0.7, "ndcgAtK": 0.7, "hitRate": 0.9},
    "failedMetrics": [],
    "cases": [{"id": "a"}, {"id": "b"}],
}
FAILED = {**PASSED, "failedMetrics": ["recallAtK=0.500<0.800"]}
MISSING, RUNNING = ObservedJob(JobState.MISSING), ObservedJob(JobState.RUNNING)
SUCCEEDED, FAILED_JOB = ObservedJob(JobState.SUCCEEDED), ObservedJob(JobState.FAILED, "BackoffLimitExceeded")
BUILT = StoredVersion("built", MANIFEST, None, None)


def observe(build: ObservedJob, evaluate: ObservedJob, stored: StoredVersion | None) -> VersionObservation:
    return VersionObservation(generation=1, build_job=build, eval_job=evaluate, stored=stored)


def ready_condition(status: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == "Ready")


CASES = [
    ("fresh", observe(MISSING, MISSING, None), [Action.CREATE_BUILD_JOB], "Building", "Building"),
    ("building", observe(RUNNING, MISSING, StoredVersion("building", None, None, None)), [], "Building", "Building"),
    ("built, gate next", observe(SUCCEEDED, MISSING, BUILT), [Action.CREATE_EVAL_JOB], "Evaluating", "Evaluating"),
    ("evaluating", observe(SUCCEEDED, RUNNING, BUILT), [], "Evaluating", "Evaluating"),
    ("job lied about the build", observe(SUCCEEDED, MISSING, None), [], "Failed", "ManifestMissing"),
    (
        "build failed",
        observe(FAILED_JOB, MISSING, StoredVersion("failed", None, None, None, "cannot reach endpoint")),
        [],
        "Failed",
        "BuildFailed",
    ),
    (
        "gate passed",
        observe(SUCCEEDED, SUCCEEDED, StoredVersion("built", MANIFEST, PASSED, True)),
        [],
        "Ready",
        "GatePassed",
    ),
    (
        "gate below threshold",
        observe(SUCCEEDED, FAILED_JOB, StoredVersion("built", MANIFEST, FAILED, False)),
        [],
        "Failed",
        "GateBelowThreshold",
    ),
    ("job lied about the gate", observe(SUCCEEDED, SUCCEEDED, BUILT), [], "Failed", "GateFailed"),
    ("eval crashed", observe(SUCCEEDED, FAILED_JOB, BUILT), [], "Failed", "GateFailed"),
    # After a restart, with Jobs garbage-collected, the store's record wins: nothing runs twice.
    ("restart after build", observe(MISSING, MISSING, BUILT), [Action.CREATE_EVAL_JOB], "Evaluating", "Evaluating"),
    (
        "restart after gate",
        observe(MISSING, MISSING, StoredVersion("built", MANIFEST, PASSED, True)),
        [],
        "Ready",
        "GatePassed",
    ),
]


@pytest.mark.parametrize(("name", "observed", "actions", "phase", "reason"), CASES, ids=[c[0] for c in CASES])
def test_plan(name: str, observed: VersionObservation, actions: list[Action], phase: str, reason: str) -> None:
    plan = plan_knowledge_base_version(observed, [], None, NOW)
    assert list(plan.actions) == actions
    assert plan.status["phase"] == phase
    assert ready_condition(plan.status)["reason"] == reason
    assert plan.status["observedGeneration"] == 1
    # Whatever the planner writes is a valid status of the CRD.
    KnowledgeBaseVersionStatus.model_validate(plan.status)
    assert len(plan.events) == 1 and plan.events[0].type == ("Warning" if phase == "Failed" else "Normal")


def test_failure_messages_name_the_cause() -> None:
    failed_build = plan_knowledge_base_version(
        observe(FAILED_JOB, MISSING, StoredVersion("failed", None, None, None, "cannot reach embedding endpoint")),
        [],
        None,
        NOW,
    )
    assert ready_condition(failed_build.status)["message"] == "build failed: cannot reach embedding endpoint"
    below = plan_knowledge_base_version(
        observe(SUCCEEDED, FAILED_JOB, StoredVersion("built", MANIFEST, FAILED, False)), [], None, NOW
    )
    assert ready_condition(below.status)["message"] == "gate below threshold: recallAtK=0.500<0.800"
    assert below.events[0].message == "gate below threshold: recallAtK=0.500<0.800"


def test_ready_status_carries_counts_manifest_and_gate() -> None:
    plan = plan_knowledge_base_version(
        observe(SUCCEEDED, SUCCEEDED, StoredVersion("built", MANIFEST, PASSED, True)), [], "Evaluating", NOW
    )
    status = plan.status
    assert (status["documents"], status["chunks"], status["reusedEmbeddings"]) == (22, 117, 0)
    assert "skipped" not in status["manifest"] and status["manifest"]["embeddingModel"] == "hashing-v1"
    assert status["gate"] == {"metrics": PASSED["metrics"], "passed": True, "cases": 2, "failedMetrics": []}
    built = next(c for c in status["conditions"] if c["type"] == "Built")
    assert built["message"] == "22 documents, 117 chunks, 0 embeddings reused"


def test_repeated_plans_keep_transition_times_and_emit_no_events() -> None:
    observed = observe(SUCCEEDED, SUCCEEDED, StoredVersion("built", MANIFEST, PASSED, True))
    first = plan_knowledge_base_version(observed, [], None, NOW)
    conditions = [Condition.model_validate(c) for c in first.status["conditions"]]
    again = plan_knowledge_base_version(observed, conditions, "Ready", NOW + timedelta(minutes=5))
    assert again.status["conditions"] == first.status["conditions"]
    assert again.events == ()


def test_a_failed_attempt_is_not_a_failed_version_while_the_job_retries() -> None:
    """The store marks the version failed when one build attempt fails; the Job then retries it."""
    retrying = ObservedJob(JobState.RUNNING, failed_attempts=1, backoff_limit=2)
    stored = StoredVersion("failed", None, None, None, "cannot reach embedding endpoint")
    plan = plan_knowledge_base_version(observe(retrying, MISSING, stored), [], "Building", NOW)
    assert plan.status["phase"] == "Building" and plan.actions == ()
    assert ready_condition(plan.status)["reason"] == "Building"
    built = next(c for c in plan.status["conditions"] if c["type"] == "Built")
    assert (built["status"], built["reason"]) == ("Unknown", "Building")
    assert built["message"] == "building the index: attempt 2 of 3 (attempt 1 failed: cannot reach embedding endpoint)"
    assert plan.events == ()
    # Failed once the Job is: its backoff limit spent (or its pod failure policy said so).
    spent = ObservedJob(JobState.FAILED, "BackoffLimitExceeded", failed_attempts=3, backoff_limit=2)
    failed = plan_knowledge_base_version(observe(spent, MISSING, stored), [], "Building", NOW)
    assert failed.status["phase"] == "Failed"
    assert ready_condition(failed.status)["message"] == "build failed: cannot reach embedding endpoint (3 attempts)"
