"""Progressive rollouts through the operator on the real control plane, steered by `kubectl ragops`.

Versions are built and gated by Jobs that really run (the process-backed kubelet, real PostgreSQL),
so the store accepts them as canaries; kwok only makes runtime pods Ready, so nothing here sends
user traffic and no step here needs Prometheus (the analysis is covered by the unit tests and, with
real runtime pods scraped by Prometheus, by the end-to-end suite). What this proves: the split the
operator writes into the store, the probe plan from the golden set, the manual actions as
annotations consumed once through the real kubectl plugin mechanism, status, conditions that
`kubectl wait` understands, Events, aborts that stay aborted, and the InvalidSpec report.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ragops_runtime.observability import DeploymentIdentity, RuntimeMetrics
from ragops_runtime.store import KnowledgeStore, TrafficSplit
from tests.integration.test_kb import TOPICS
from tests.integration.test_operator import apply, condition, eventually, get, running_operator
from tests.integration.test_operator_e2e import LENIENT, events, phase, prepare_sources, version
from tests.support.controlplane import TOOLS_BIN, ControlPlane
from tests.support.kubelet import ProcessKubelet
from tests.support.prometheus import running_prometheus, serving_metrics

VENV_BIN = Path(sys.executable).parent


def kubectl_ragops(plane: ControlPlane, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """`kubectl ragops ...` as a user runs it: kubectl finds the plugin on the PATH and execs it."""
    env = {**plane.env(), "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run(
        [str(TOOLS_BIN / "kubectl"), "ragops", *args], capture_output=True, text=True, env=env, timeout=90
    )
    if check and result.returncode != 0:
        raise AssertionError(f"kubectl ragops {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result


def traffic(dsn: str) -> TrafficSplit:
    async def read() -> TrafficSplit:
        async with await KnowledgeStore.connect(dsn) as store:
            return await store.traffic("docs")

    return asyncio.run(read())


def rollout(plane: ControlPlane, namespace: str) -> dict[str, Any]:
    found: dict[str, Any] = ((get(plane, namespace, "ragd", "docs") or {}).get("status") or {}).get("rollout") or {}
    return found


def wait_condition(plane: ControlPlane, namespace: str, condition_type: str, timeout: int = 60) -> None:
    plane.kubectl(
        "wait",
        "-n",
        namespace,
        "ragd/docs",
        f"--for=condition={condition_type}",
        f"--timeout={timeout}s",
        timeout=timeout + 10,
    )


def canary_deployment(version_name: str, steps: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "ragops.dev/v1alpha1",
        "kind": "RagDeployment",
        "metadata": {"name": "docs"},
        "spec": {
            "knowledgeBase": {"name": "docs", "version": version_name},
            "rollout": {"bakeTime": "2s", "strategy": {"canary": {"steps": steps, "probes": {"perMinute": 30}}}},
        },
    }


@pytest.mark.timeout(900)  # three versions built and gated by real Jobs first
def test_a_canary_is_split_paused_promoted_aborted_and_retried_by_hand(
    workloads: ControlPlane, namespace: str, monkeypatch: pytest.MonkeyPatch, pg_dsn: str, tmp_path: Path
) -> None:
    plane = workloads
    prepare_sources(plane, namespace, pg_dsn, tmp_path)
    steps: list[dict[str, Any]] = [{"setWeight": 20}, {"pause": {"duration": "1h"}}, {"pause": {}}]
    with ProcessKubelet(plane, [namespace]), running_operator(plane, namespace, monkeypatch):
        # One build at a time: versions of one knowledge base share chunk rows, and builds racing on
        # the same rows would retry with the Job's backoff (slow, and not what this test is about).
        for name, corpus in (("docs-v1", "corpus-a"), ("docs-v2", "corpus-b"), ("docs-v3", "corpus-a")):
            apply(plane, namespace, version(name, corpus, LENIENT))
            eventually(f"{name} Ready", lambda: phase(plane, namespace, "kbv", name) == "Ready", timeout=240)  # noqa: B023

        # The first version has nothing to be compared with: it is promoted directly, then bakes.
        apply(plane, namespace, canary_deployment("docs-v1", steps))
        eventually("docs-v1 healthy", lambda: rollout(plane, namespace).get("phase") == "Healthy", timeout=60)
        assert traffic(pg_dsn).stable == "docs-v1" and not traffic(pg_dsn).active

        # A new version starts a rollout: 20 % of users, probes from its golden set, then a 1h pause.
        apply(plane, namespace, canary_deployment("docs-v2", steps))
        state = eventually(
            "the canary at 20%",
            lambda: (r := rollout(plane, namespace)).get("currentStepIndex") == 1 and r.get("weight") == 20 and r,
        )
        assert (state["phase"], state["stableVersion"], state["canaryVersion"]) == ("Progressing", "docs-v1", "docs-v2")
        split = traffic(pg_dsn)
        assert (split.stable, split.canary, split.canary_weight, split.shadow_percent) == ("docs-v1", "docs-v2", 20, 0)
        assert split.split_id == state["rolloutId"]
        assert split.probe is not None and split.probe.per_minute == 30 and split.probe.top_k == 3
        assert sorted(q.query for q in split.probe.queries) == sorted(f"{t} trail permit" for t in TOPICS)
        assert all(q.relevant_documents == (f"{q.query.split()[0]}.md",) for q in split.probe.queries)
        body = get(plane, namespace, "ragd", "docs") or {}
        assert body["status"]["activeVersion"] == "docs-v1" and body["status"]["phase"] == "Progressing"
        assert condition(body, "Progressing")["reason"] == "RolloutProgressing"
        table = plane.kubectl("get", "-n", namespace, "ragd", "docs").stdout.split()
        assert table[table.index("docs") :][5:8] == ["Progressing", "1", "20"]  # ROLLOUT, STEP, WEIGHT

        # The live view, through kubectl's plugin mechanism.
        view = kubectl_ragops(plane, "status", "docs", "-n", namespace).stdout
        assert "Canary:      docs-v2" in view and "Weight:      20% of users" in view
        assert [line.split() for line in view.splitlines() if line.startswith("  2 ")] == [
            ["2", "pause", "1h", "running"]
        ]

        # promote completes the 1h pause; the next step waits for a manual promote.
        out = kubectl_ragops(plane, "promote", "docs", "-n", namespace).stdout
        assert "promote: step 2/3 (pause 1h) completed by hand" in out
        wait_condition(plane, namespace, "Paused")
        assert ACTION not in ((get(plane, namespace, "ragd", "docs") or {})["metadata"].get("annotations") or {})
        kubectl_ragops(plane, "promote", "docs", "-n", namespace)
        wait_condition(plane, namespace, "Promoted")
        eventually("docs-v2 served", lambda: traffic(pg_dsn).stable == "docs-v2")
        assert not traffic(pg_dsn).active  # the switch cleared the split
        eventually("docs-v2 baked", lambda: rollout(plane, namespace).get("phase") == "Healthy", timeout=60)
        reasons = [reason for reason, _ in events(plane, namespace, "docs")]
        for expected in ("RolloutStarted", "WeightChanged", "ActionApplied", "RolloutPaused", "RolloutPromoting"):
            assert expected in reasons, reasons

        # set-weight, resume, pause, then abort: weight 0 at once, Degraded, and it stays aborted.
        apply(plane, namespace, canary_deployment("docs-v3", steps))
        eventually(
            "docs-v3 at 20%", lambda: traffic(pg_dsn).canary_weight == 20 and traffic(pg_dsn).canary == "docs-v3"
        )
        kubectl_ragops(plane, "set-weight", "docs", "35", "-n", namespace)
        assert traffic(pg_dsn).canary_weight == 35
        assert rollout(plane, namespace)["phase"] == "Paused"
        kubectl_ragops(plane, "resume", "docs", "-n", namespace)
        assert rollout(plane, namespace)["phase"] == "Progressing"
        kubectl_ragops(plane, "pause", "docs", "-n", namespace)
        wait_condition(plane, namespace, "Paused")
        out = kubectl_ragops(plane, "abort", "docs", "-n", namespace).stdout
        assert "abort: aborting the rollout" in out
        wait_condition(plane, namespace, "Aborted")
        split = traffic(pg_dsn)
        assert (split.stable, split.canary, split.canary_weight) == ("docs-v2", None, 0)
        body = get(plane, namespace, "ragd", "docs") or {}
        degraded = condition(body, "Degraded")
        assert (degraded["status"], degraded["reason"]) == ("True", "ManualAbort")
        assert "rollout of docs-v3 aborted at step 2/3 (pause 1h)" in degraded["message"]
        assert body["status"]["phase"] == "Degraded" and body["status"]["activeVersion"] == "docs-v2"
        aborted_at = body["status"]["rollout"]["abort"]["at"]
        time.sleep(6)  # three passes: an aborted candidate is never started again by itself
        assert rollout(plane, namespace)["abort"]["at"] == aborted_at and not traffic(pg_dsn).active
        refused = kubectl_ragops(plane, "promote", "docs", "-n", namespace, check=False)
        assert refused.returncode == 1 and "ignored: the rollout of docs-v3 was aborted" in refused.stdout

        # retry starts it again; a candidate that stops being Ready aborts it.
        first_id = rollout(plane, namespace)["rolloutId"]
        kubectl_ragops(plane, "retry", "docs", "-n", namespace)
        state = eventually("retried", lambda: (r := rollout(plane, namespace)).get("phase") == "Progressing" and r)
        assert state["rolloutId"] != first_id and traffic(pg_dsn).canary == "docs-v3"
        plane.kubectl(
            "patch",
            "-n",
            namespace,
            "kbv",
            "docs-v3",
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps({"status": {"phase": "Failed"}}),
        )
        state = eventually("aborted: not Ready", lambda: (r := rollout(plane, namespace)).get("abort") and r)
        assert state["abort"]["reason"] == "CandidateNotReady" and not traffic(pg_dsn).active
        warnings = [m for r, m in events(plane, namespace, "docs") if r == "RolloutAborted"]
        assert any(m.startswith("ManualAbort:") for m in warnings) and any("CandidateNotReady" in m for m in warnings)


ACTION = "ragops.dev/rollout-action"


def test_a_version_of_another_knowledge_base_is_an_invalid_spec_reported_once(
    workloads: ControlPlane, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    plane = workloads
    plane.kubectl("create", "configmap", "docs-src", "-n", namespace, "--from-literal=a.md=# A")
    other = version("other-v1", "docs-src", LENIENT)
    other["spec"]["knowledgeBase"] = "other"
    with running_operator(plane, namespace, monkeypatch):
        apply(plane, namespace, other)
        apply(plane, namespace, canary_deployment("other-v1", [{"setWeight": 10}]))
        degraded = eventually(
            "InvalidSpec",
            lambda: (
                (c := condition(get(plane, namespace, "ragd", "docs"), "Degraded")).get("reason") == "InvalidSpec" and c
            ),
        )
        assert degraded["message"] == (
            "spec.knowledgeBase.version: other-v1 is a version of knowledge base 'other', not of 'docs'"
        )
        time.sleep(6)  # several passes: one Event, not one per pass
        invalid = [m for r, m in events(plane, namespace, "docs") if r == "InvalidSpec"]
        assert invalid == [degraded["message"]]
        status = (get(plane, namespace, "ragd", "docs") or {})["status"]
        assert status["phase"] == "Failed" and status["rollout"]["abort"]["reason"] == "InvalidSpec"

    # The plugin's refusals say what is wrong and exit 1, with the kubeconfig given explicitly.
    plain = {**canary_deployment("other-v1", []), "metadata": {"name": "plain"}}
    plain["spec"] = {"knowledgeBase": {"name": "docs", "version": "docs-v1"}}
    apply(plane, namespace, plain)
    target = ("-n", namespace, "--kubeconfig", str(plane.kubeconfig))
    blue_green = kubectl_ragops(plane, "promote", "plain", *target, check=False)
    assert blue_green.returncode == 1 and "uses the blueGreen strategy" in blue_green.stderr
    missing = kubectl_ragops(plane, "status", "absent", *target, check=False)
    assert missing.returncode == 1 and f'RagDeployment "absent" not found in namespace "{namespace}"' in missing.stderr
    no_context = kubectl_ragops(plane, "status", "plain", *target, "--context", "elsewhere", check=False)
    assert no_context.returncode == 1 and "no context 'elsewhere' in the kubeconfig" in no_context.stderr
    assert "Strategy:    blueGreen" in kubectl_ragops(plane, "status", "plain", *target).stdout


class Traffic:
    """User traffic of both versions as the runtime pods of test/docs would record it, in a thread.

    The operator reads it the way it reads real pods: Prometheus scrapes the pod's /metrics, the
    analysis queries group by version and role. `canary_seconds` is how long the candidate takes.
    """

    def __init__(self, metrics: RuntimeMetrics, stable: str, canary: str) -> None:
        self.metrics, self.stable, self.canary = metrics, stable, canary
        self.canary_seconds = 0.08
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-traffic", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            for served, role, seconds in ((self.stable, "stable", 0.08), (self.canary, "canary", self.canary_seconds)):
                self.metrics.observe_query(
                    mode="retrieval_only", status="ok", seconds=seconds, stages={}, kb_version=served, role=role
                )

    def __enter__(self) -> Traffic:
        self.metrics.prepare_split(self.stable, self.canary, probes=False)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@pytest.mark.timeout(900)
def test_relative_analysis_aborts_a_slower_candidate_and_promotes_a_healthy_one(
    workloads: ControlPlane,
    namespace: str,
    monkeypatch: pytest.MonkeyPatch,
    pg_dsn: str,
    tmp_path: Path,
) -> None:
    plane = workloads
    prepare_sources(plane, namespace, pg_dsn, tmp_path)
    (tmp_path / "prometheus").mkdir()
    pod = RuntimeMetrics(DeploymentIdentity(namespace=namespace, deployment="docs", pod="docs-runtime-0"))
    steps: list[dict[str, Any]] = [{"setWeight": 50}, {"analysis": {"duration": "10s"}}]
    deployment = canary_deployment("docs-v1", steps)
    deployment["spec"]["rollout"]["strategy"]["canary"].update(
        analysis={"interval": "2s", "window": "30s", "minRequests": 10, "failureLimit": 2},
        probes={"perMinute": 0},  # no runtime pods here to send them: the comparison is on user traffic
    )
    with (
        ProcessKubelet(plane, [namespace]),
        serving_metrics(pod) as target,
        running_prometheus([target], tmp_path / "prometheus") as prometheus,
        running_operator(plane, namespace, monkeypatch),
    ):
        deployment["spec"]["monitoring"] = {"prometheusUrl": prometheus.url}
        for name, corpus in (("docs-v1", "corpus-a"), ("docs-v2", "corpus-b")):
            apply(plane, namespace, version(name, corpus, LENIENT))
            eventually(f"{name} Ready", lambda: phase(plane, namespace, "kbv", name) == "Ready", timeout=240)  # noqa: B023
        apply(plane, namespace, deployment)
        eventually("docs-v1 served", lambda: traffic(pg_dsn).stable == "docs-v1", timeout=60)

        with Traffic(pod, "docs-v1", "docs-v2") as users:
            users.canary_seconds = 0.9  # the candidate answers ten times slower
            deployment["spec"]["knowledgeBase"]["version"] = "docs-v2"
            apply(plane, namespace, deployment)
            wait_condition(plane, namespace, "Aborted", timeout=120)
            state = rollout(plane, namespace)
            assert state["abort"]["reason"] == "AnalysisFailed", state
            assert "p95LatencyMs Fail" in state["abort"]["message"]
            latency = next(o for o in state["analysis"]["objectives"] if o["name"] == "p95LatencyMs")
            assert latency["source"] == "user" and latency["canary"] > 500 and latency["stable"] < 100
            degraded = condition(get(plane, namespace, "ragd", "docs"), "Degraded")
            assert degraded["reason"] == "AnalysisFailed" and "canary" in degraded["message"]
            assert not traffic(pg_dsn).active and traffic(pg_dsn).stable == "docs-v1"

            # Fixed (as a new build would be): retried, it passes its analysis and is promoted.
            users.canary_seconds = 0.08
            kubectl_ragops(plane, "retry", "docs", "-n", namespace)
            wait_condition(plane, namespace, "Promoted", timeout=120)
            eventually("docs-v2 served", lambda: traffic(pg_dsn).stable == "docs-v2", timeout=30)
        passed = [m for r, m in events(plane, namespace, "docs") if r == "AnalysisPassed"]
        assert passed and "step 2/2 (analysis 10s) passed: passed over" in passed[0]
