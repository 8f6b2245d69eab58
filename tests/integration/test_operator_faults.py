"""The operator under faults, on the real control plane: nothing lost, nothing stuck, nothing looping.

Each scenario drives the real operator (Kopf, in-process) against the real apiserver and asserts
what a user sees: status conditions naming the cause, Events posted once, no traceback loop.

| scenario                                  | test                                                          |
|-------------------------------------------|---------------------------------------------------------------|
| a spec the operator refuses (older CRD)   | test_a_spec_the_operator_refuses_is_reported_once_until_it_changes |
| runtime pods cannot be created (quota)    | test_runtime_pods_that_cannot_be_created_are_surfaced_with_their_reason |
| a verdict weaker than the spec's gate     | test_a_verdict_weaker_than_the_spec_s_gate_never_activates |
| Prometheus down during a canary analysis  | test_prometheus_down_during_an_analysis_is_inconclusive_then_resumes |
"""

from __future__ import annotations

import asyncio
import copy
import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from ragops_runtime.store import KnowledgeStore
from tests.integration.test_canary_e2e import analysis_limits, canary_stack
from tests.integration.test_canary_e2e import deployment as canary_deployment
from tests.integration.test_kb import RAGOPS, golden, write_corpus
from tests.integration.test_operator import apply, condition, eventually, get, running_operator
from tests.integration.test_operator_e2e import LENIENT, active_version, events, phase, version
from tests.integration.test_rollout import rollout, wait_condition
from tests.integration.test_rollout import traffic as rollout_traffic
from tests.support.controlplane import REPO_ROOT, ControlPlane, install_crds

RAGDEPLOYMENT_CRD = REPO_ROOT / "crds" / "ragops.dev_ragdeployments.yaml"


@contextmanager
def older_ragdeployment_crd(plane: ControlPlane) -> Iterator[None]:
    """The RagDeployment CRD without its slo rules, as a cluster whose CRD predates them has it.

    `helm upgrade` never upgrades CRDs, so an operator newer than its CRD is an ordinary state:
    the apiserver then admits specs the operator's models refuse. Restored afterwards.
    """
    crd = yaml.safe_load(RAGDEPLOYMENT_CRD.read_text())
    older = copy.deepcopy(crd)
    for served in older["spec"]["versions"]:
        served["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["slo"].pop("x-kubernetes-validations")
    try:
        plane.kubectl(
            "apply", "--server-side", "--force-conflicts", "--field-manager=ragops-tests", "-f", "-",
            input=json.dumps(older),
        )  # fmt: skip
        plane.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", crd["metadata"]["name"])
        yield
    finally:
        install_crds(plane)


def deployment(window: str) -> dict[str, Any]:
    return {
        "apiVersion": "ragops.dev/v1alpha1",
        "kind": "RagDeployment",
        "metadata": {"name": "docs"},
        "spec": {"knowledgeBase": {"name": "docs", "version": "docs-v1"}, "slo": {"window": window}},
    }


@pytest.mark.timeout(600)  # the control plane starts first, slowly on a loaded machine
def test_a_spec_the_operator_refuses_is_reported_once_until_it_changes(
    control_plane: ControlPlane, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    plane = control_plane
    with older_ragdeployment_crd(plane):
        apply(plane, namespace, deployment("0s"))  # admitted: this CRD has no rule against it
        with running_operator(plane, namespace, monkeypatch) as runner:
            refused = eventually(
                "Available=False, InvalidSpec",
                lambda: (
                    (c := condition(get(plane, namespace, "ragd", "docs"), "Available")).get("reason") == "InvalidSpec"
                    and c
                ),
            )
            assert refused["status"] == "False" and "spec.slo.window" in refused["message"], refused
            body = get(plane, namespace, "ragd", "docs") or {}
            assert body["status"]["observedGeneration"] == 1 and body["status"]["phase"] == "Failed"
            time.sleep(8)  # four ticks of the timer: no further status change or Event
            # (Kopf's own annotation writes move the object's resourceVersion: compare the status.)
            assert (get(plane, namespace, "ragd", "docs") or {})["status"] == body["status"]
            assert [m for r, m in events(plane, namespace, "docs") if r == "InvalidSpec"] == [refused["message"]]

            # A changed spec (a new generation) is examined again, and the refusal goes.
            plane.kubectl(
                "patch", "-n", namespace, "ragd", "docs", "--type=merge", "-p", '{"spec":{"slo":{"window":"5m"}}}'
            )
            available = eventually(
                "the new generation examined",
                lambda: (
                    (c := condition(get(plane, namespace, "ragd", "docs"), "Available")).get("observedGeneration") == 2
                    and c
                ),
            )
            assert available["reason"] != "InvalidSpec", available
        # Read once the operator has stopped: KopfRunner.output waits for the run to end.
        assert "Traceback" not in runner.output and "ValidationError" not in runner.output


@pytest.mark.timeout(600)
def test_runtime_pods_that_cannot_be_created_are_surfaced_with_their_reason(
    workloads: ControlPlane, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A quota that admits no pod: the ReplicaSet's FailedCreate, as the real controller reports it."""
    plane = workloads
    plane.kubectl("create", "quota", "no-pods", "-n", namespace, "--hard=pods=0")
    # The version waits for its Secret, so no Job runs; its store is known, so the runtime is applied.
    apply(plane, namespace, version("docs-v1", "docs-src", LENIENT))
    apply(plane, namespace, deployment("5m"))
    with running_operator(plane, namespace, monkeypatch):
        progressing = eventually(
            "Progressing=False, FailedCreate",
            lambda: (
                (c := condition(get(plane, namespace, "ragd", "docs"), "Progressing")).get("reason") == "FailedCreate"
                and c
            ),
            timeout=120,
        )
        assert progressing["status"] == "False" and "forbidden" in progressing["message"], progressing
        degraded = condition(get(plane, namespace, "ragd", "docs"), "Degraded")
        assert (degraded["status"], degraded["reason"]) == ("True", "FailedCreate"), degraded
        waiting = condition(get(plane, namespace, "kbv", "docs-v1"), "Ready")
        assert waiting["reason"] == "Pending" and waiting["message"].startswith("spec.store.dsnSecretRef: "), waiting


WEAKER = ["--k", "3", "--min-precision", "0.05", "--min-recall", "0.5", "--min-mrr", "0.5", "--min-ndcg", "0.5"]
"""Thresholds below LENIENT's (the specs' below): a verdict made with them proves nothing to those specs."""
AS_THE_SPEC = [
    "--k", "3",
    "--min-precision", str(LENIENT["precisionAtK"]),
    "--min-recall", str(LENIENT["recallAtK"]),
    "--min-mrr", str(LENIENT["mrr"]),
    "--min-ndcg", str(LENIENT["ndcgAtK"]),
]  # fmt: skip


def kb_cli(*args: str) -> None:
    done = subprocess.run([RAGOPS, "kb", *args], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr


def verdicts(dsn: str, name: str) -> list[tuple[bool, dict[str, float | None]]]:
    async def read() -> list[tuple[bool, dict[str, float | None]]]:
        async with await KnowledgeStore.connect(dsn) as store:
            record = await store.get_version("docs", name)
            assert record is not None
            return [(v.passed, v.thresholds) for v in await store.verdicts(record)]

    return asyncio.run(read())


@pytest.mark.timeout(600)
def test_a_verdict_weaker_than_the_spec_s_gate_never_activates(
    control_plane: ControlPlane, namespace: str, monkeypatch: pytest.MonkeyPatch, pg_dsn: str, tmp_path: Path
) -> None:
    """Versions built and gated by hand (`ragops kb eval` with weaker thresholds) before their objects exist.

    docs-v1 was made Ready by an operator that trusted any passing verdict (its status is written here
    before the operator starts, as that operator left it): the deployment must not activate it.
    docs-v2 is new: it must not turn Ready on the weaker verdict; its eval Job judges it with the spec's
    gate, and once a verdict made with those thresholds passes, it is Ready and promoted.
    """
    plane = control_plane
    plane.kubectl("create", "secret", "generic", "pg", "-n", namespace, f"--from-literal=dsn={pg_dsn}")
    cases = golden(tmp_path / "golden.yaml")
    corpus = write_corpus(tmp_path / "corpus")
    for name in ("docs-v1", "docs-v2"):
        kb_cli("build", "--dsn", pg_dsn, "--kb", "docs", "--version", name, "--source", str(corpus),
               "--embedding-dimensions", "64")  # fmt: skip
        kb_cli("eval", "--dsn", pg_dsn, "--kb", "docs", "--version", name, "--golden", str(cases), *WEAKER)
    apply(plane, namespace, version("docs-v1", "docs-src", LENIENT))
    ready = {"type": "Ready", "status": "True", "reason": "GatePassed", "message": "built and gated: ready to promote",
             "lastTransitionTime": "2026-01-01T00:00:00Z"}  # fmt: skip
    plane.kubectl(
        "patch", "-n", namespace, "kbv", "docs-v1", "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": {"phase": "Ready", "observedGeneration": 1, "conditions": [ready]}}),
    )  # fmt: skip

    with running_operator(plane, namespace, monkeypatch):
        apply(plane, namespace, deployment("5m"))
        degraded = eventually(
            "docs-v1 refused",
            lambda: (
                (c := condition(get(plane, namespace, "ragd", "docs"), "Degraded")).get("reason") == "VersionFailedGate"
                and c
            ),
        )
        assert (
            "no passing verdict made with the required gate (k=3, precisionAtK>=0.1, recallAtK>=0.8"
            in (degraded["message"])
        ), degraded
        assert active_version(pg_dsn) is None
        assert (get(plane, namespace, "ragd", "docs") or {})["status"].get("activeVersion") is None

        # A new object does not take the weaker verdict for its own: it asks its eval Job for one.
        apply(plane, namespace, version("docs-v2", "docs-src", LENIENT))
        eventually("docs-v2's eval Job", lambda: get(plane, namespace, "job", "docs-v2-eval") is not None)
        assert phase(plane, namespace, "kbv", "docs-v2") == "Evaluating"
        time.sleep(6)  # a KBV pass or two: still not Ready on the weaker verdict
        assert phase(plane, namespace, "kbv", "docs-v2") == "Evaluating"

        # The Job's verdict (run here as its command would: the spec's k and thresholds) opens the way.
        kb_cli("eval", "--dsn", pg_dsn, "--kb", "docs", "--version", "docs-v2", "--golden", str(cases), *AS_THE_SPEC)
        eventually("docs-v2 Ready", lambda: phase(plane, namespace, "kbv", "docs-v2") == "Ready", timeout=60)
        plane.kubectl(
            "patch", "-n", namespace, "ragd", "docs", "--type=merge",
            "-p", json.dumps({"spec": {"knowledgeBase": {"version": "docs-v2"}}}),
        )  # fmt: skip
        eventually("docs-v2 active", lambda: active_version(pg_dsn) == "docs-v2", timeout=60)
        assert [passed for passed, _ in verdicts(pg_dsn, "docs-v2")] == [True, True]  # both kept, side by side
        assert active_version(pg_dsn) == "docs-v2"


@pytest.mark.timeout(900)
def test_prometheus_down_during_an_analysis_is_inconclusive_then_resumes(
    workloads: ControlPlane, namespace: str, monkeypatch: pytest.MonkeyPatch, pg_dsn: str, tmp_path: Path
) -> None:
    """A healthy candidate in its analysis step (golden probes, no users) while Prometheus is stopped:
    every check then is Inconclusive naming the failed query, never Pass or Fail; nothing advances,
    nothing aborts (maxInconclusive is above the outage); once Prometheus is back, the step passes
    and the candidate is promoted. One Event when the outage starts, one when it ends."""
    plane = workloads
    steps = [{"setWeight": 20}, {"analysis": {"duration": "10s"}}]
    canary = {"steps": steps, "analysis": analysis_limits(maxInconclusive=40), "probes": {"perMinute": 600}}
    versions = {"docs-v1": "corpus-a", "docs-v2": "corpus-b"}
    with canary_stack(
        plane, namespace, monkeypatch, pg_dsn, tmp_path, versions, canary_deployment("docs-v1", "", canary)
    ) as stack:
        eventually("docs-v1 served", lambda: rollout_traffic(pg_dsn).stable == "docs-v1", timeout=60)
        apply(plane, namespace, canary_deployment("docs-v2", stack.prometheus.url, canary))
        eventually("the analysis step", lambda: rollout(plane, namespace).get("currentStepIndex") == 1, timeout=90)

        seen: list[dict[str, Any]] = []
        with stack.prometheus.down():
            # A check or two into the outage, then as long again, reading what the status says.
            first = eventually(
                "a check without Prometheus",
                lambda: (
                    (a := rollout(plane, namespace).get("analysis") or {})
                    .get("message", "")
                    .startswith("Prometheus could not be queried (")
                    and a
                ),
                timeout=60,
            )
            outage_checked = first["checkedAt"]
            until = time.monotonic() + 15  # past the step's 10 s: its end comes and goes during the outage
            while time.monotonic() < until:
                state = rollout(plane, namespace)
                seen.append(state)
                assert state["phase"] == "Progressing" and state["currentStepIndex"] == 1, state
                time.sleep(0.5)
        during = [s["analysis"] for s in seen if s["analysis"]["checkedAt"] >= outage_checked]
        assert len({a["checkedAt"] for a in during}) >= 3, during  # several checks, each one Inconclusive
        assert all(a["verdict"] == "Inconclusive" for a in during), during
        assert all("ConnectError" in a["message"] and stack.prometheus.url in a["message"] for a in during), during
        assert max(a["consecutiveInconclusive"] for a in during) >= 1  # counted once the step's end had passed

        # Back: the step passes on the probes, the candidate is promoted and served.
        wait_condition(plane, namespace, "Promoted", timeout=180)
        eventually("docs-v2 served", lambda: rollout_traffic(pg_dsn).stable == "docs-v2", timeout=30)
        body = get(plane, namespace, "ragd", "docs") or {}
        assert condition(body, "Aborted").get("status") != "True", body["status"]
        reasons = [r for r, _ in events(plane, namespace, "docs")]
        assert reasons.count("PrometheusUnavailable") == 1 and reasons.count("PrometheusAvailable") == 1, reasons
        assert "AnalysisPassed" in reasons and "RolloutAborted" not in reasons, reasons
