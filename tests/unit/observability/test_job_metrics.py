"""The job queue's metrics: names promtool accepts, fixed label sets, values read back."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ragops_runtime.observability import DeploymentIdentity, RuntimeMetrics
from tests.unit.observability.test_metrics import PROMTOOL

IDENTITY = DeploymentIdentity(namespace="shop", deployment="support-bot", pod="support-bot-0")
IDENTITY_KEYS = {"namespace", "deployment", "pod"}


def values(metrics: RuntimeMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body, _ = metrics.render()
    return {
        (sample.name, tuple(sorted((k, v) for k, v in sample.labels.items() if k not in IDENTITY_KEYS))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
        if "job" in sample.name
    }


def test_job_metrics_pass_promtool() -> None:
    metrics = RuntimeMetrics(IDENTITY)
    metrics.set_job_queue_depth({"queued": 7, "running": 2})
    metrics.job_finished(12.5)
    metrics.job_item_finished("done")
    metrics.job_item_retried("lease_expired")
    body, _ = metrics.render()
    result = subprocess.run([str(PROMTOOL), "check", "metrics"], input=body, capture_output=True, timeout=60)
    assert result.returncode == 0 and (result.stdout + result.stderr) == b"", result


def test_every_series_exists_at_zero_before_anything_happens() -> None:
    found = values(RuntimeMetrics(IDENTITY))
    assert found[("ragops_jobs_queue_depth", (("state", "queued"),))] == 0
    assert found[("ragops_jobs_queue_depth", (("state", "running"),))] == 0
    assert found[("ragops_job_items_total", (("outcome", "done"),))] == 0
    assert found[("ragops_job_items_total", (("outcome", "failed"),))] == 0
    assert found[("ragops_job_item_retries_total", (("reason", "transient"),))] == 0
    assert found[("ragops_job_item_retries_total", (("reason", "lease_expired"),))] == 0
    assert found[("ragops_job_duration_seconds_count", ())] == 0


def test_values_are_what_happened() -> None:
    metrics = RuntimeMetrics(IDENTITY)
    metrics.set_job_queue_depth({"queued": 7, "running": 2})
    metrics.set_job_queue_depth({"running": 1})  # a state not read is 0, not its stale value
    metrics.job_finished(12.5)
    metrics.job_item_retried("transient")
    metrics.job_item_retried("transient")
    found = values(metrics)
    assert found[("ragops_jobs_queue_depth", (("state", "queued"),))] == 0
    assert found[("ragops_jobs_queue_depth", (("state", "running"),))] == 1
    assert found[("ragops_job_duration_seconds_bucket", (("le", "10.0"),))] == 0
    assert found[("ragops_job_duration_seconds_bucket", (("le", "30.0"),))] == 1
    assert found[("ragops_job_item_retries_total", (("reason", "transient"),))] == 2


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda m: m.set_job_queue_depth({"lost": 1}), "unknown job states"),
        (lambda m: m.job_item_finished("maybe"), "unknown job item outcome"),
        (lambda m: m.job_item_retried("boredom"), "unknown job retry reason"),
    ],
)
def test_label_values_come_from_closed_sets(call: Callable[[RuntimeMetrics], None], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call(RuntimeMetrics(IDENTITY))
