"""What the operator reads from a build Job: its verdict, and the attempt count only where one limit bounds it."""

from __future__ import annotations

from typing import Any

from ragops_operator.controllers import _job_state
from ragops_operator.reconcile.knowledgebaseversion import JobState


def job(spec: dict[str, Any], failed: int, condition: str | None = None) -> dict[str, Any]:
    conditions = [{"type": condition, "status": "True", "message": "m"}] if condition else []
    return {"spec": spec, "status": {"failed": failed, "conditions": conditions}}


def test_a_one_pod_job_reports_its_backoff_limit() -> None:
    observed = _job_state(job({"backoffLimit": 2}, failed=1))
    assert (observed.state, observed.failed_attempts, observed.backoff_limit) == (JobState.RUNNING, 1, 2)


def test_an_indexed_job_reports_no_job_wide_limit() -> None:
    # The apiserver defaults backoffLimit to the largest int32 beside backoffLimitPerIndex: "attempt
    # 3 of 2147483648" would be nonsense, and `failed` sums every shard's failures anyway.
    spec = {"backoffLimit": 2147483647, "backoffLimitPerIndex": 2, "completionMode": "Indexed"}
    observed = _job_state(job(spec, failed=2))
    assert (observed.state, observed.failed_attempts, observed.backoff_limit) == (JobState.RUNNING, 2, None)
    assert _job_state(job(spec, failed=3, condition="Failed")).state is JobState.FAILED
    assert _job_state(job(spec, failed=1, condition="Complete")).state is JobState.SUCCEEDED
