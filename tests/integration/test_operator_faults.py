"""The operator under faults, on the real control plane: nothing lost, nothing stuck, nothing looping.

Each scenario drives the real operator (Kopf, in-process) against the real apiserver and asserts
what a user sees: status conditions naming the cause, Events posted once, no traceback loop.

| scenario                                  | test                                                          |
|-------------------------------------------|---------------------------------------------------------------|
| a spec the operator refuses (older CRD)   | test_a_spec_the_operator_refuses_is_reported_once_until_it_changes |
| runtime pods cannot be created (quota)    | test_runtime_pods_that_cannot_be_created_are_surfaced_with_their_reason |
| a verdict weaker than the spec's gate     | test_a_verdict_weaker_than_the_spec_s_gate_never_activates |
| Prometheus down during a canary analysis  | test_prometheus_down_during_an_analysis_is_inconclusive_then_resumes |
| a served version deleted                  | test_a_served_version_deleted_keeps_serving_until_nothing_needs_it |
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

import httpx
import pytest
import yaml

from ragops_runtime.store import KnowledgeStore
from tests.integration.test_canary_e2e import analysis_limits, canary_stack
from tests.integration.test_canary_e2e import deployment as canary_deployment
from tests.integration.test_kb import RAGOPS, TOPICS, golden, write_corpus
from tests.integration.test_operator import apply, condition, eventually, get, running_operator
from tests.integration.test_operator_e2e import LENIENT, active_version, events, phase, settings_config_map, version
from tests.integration.test_rollout import rollout, wait_condition
from tests.integration.test_rollout import traffic as rollout_traffic
from tests.support.cluster_story import running_runtime
from tests.support.controlplane import REPO_ROOT, ControlPlane, install_crds
from tests.support.http_double import free_port

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


def stored_version(dsn: str, name: str) -> tuple[str, int] | None:
    """(status, chunks) of a version in the store, None once it is dropped."""

    async def read() -> tuple[str, int] | None:
        async with await KnowledgeStore.connect(dsn) as store:
            record = await store.get_version("docs", name)
            return None if record is None else (record.status, int((record.manifest or {}).get("chunks", -1)))

    return asyncio.run(read())


def answered_by(url: str, question: str) -> str:
    response = httpx.post(f"{url}/v1/query", json={"query": question}, timeout=60)
    assert response.status_code == 200, response.text
    return str(response.json()["kbVersion"])


@pytest.mark.timeout(900)
def test_a_served_version_deleted_keeps_serving_until_nothing_needs_it(
    control_plane: ControlPlane, namespace: str, monkeypatch: pytest.MonkeyPatch, pg_dsn: str, tmp_path: Path
) -> None:
    """`kubectl delete kbv` on the version a real runtime serves: nothing is lost (the object, its index
    and rows stay; queries are answered from it), the deployment says so (VersionDeleting, one Event),
    and nothing is stuck: the deletion completes once the version is neither served nor the rollback
    target, two promotions later, and the deployment says that too."""
    plane = control_plane
    plane.kubectl("create", "secret", "generic", "pg", "-n", namespace, f"--from-literal=dsn={pg_dsn}")
    cases = golden(tmp_path / "golden.yaml")
    for number, name in enumerate(("docs-v1", "docs-v2", "docs-v3")):
        corpus = write_corpus(tmp_path / name, edited=(number,) if number else ())
        kb_cli("build", "--dsn", pg_dsn, "--kb", "docs", "--version", name, "--source", str(corpus),
               "--embedding-dimensions", "64")  # fmt: skip
        kb_cli("eval", "--dsn", pg_dsn, "--kb", "docs", "--version", name, "--golden", str(cases), *AS_THE_SPEC)
    served: dict[str, Any] = {
        "apiVersion": "ragops.dev/v1alpha1",
        "kind": "RagDeployment",
        "metadata": {"name": "docs"},
        "spec": {
            "knowledgeBase": {"name": "docs", "version": "docs-v1"},
            "cache": {"ttlSeconds": 0},
            "rollout": {"bakeTime": "2s"},
        },
    }

    def status() -> dict[str, Any]:
        found: dict[str, Any] = (get(plane, namespace, "ragd", "docs") or {}).get("status") or {}
        return found

    def serve(name: str) -> None:
        apply(
            plane, namespace, {**served, "spec": {**served["spec"], "knowledgeBase": {"name": "docs", "version": name}}}
        )
        eventually(f"{name} known-good", lambda: status().get("lastKnownGoodVersion") == name, timeout=90)

    with running_operator(plane, namespace, monkeypatch):
        for name in ("docs-v1", "docs-v2", "docs-v3"):
            apply(plane, namespace, version(name, "docs-src", LENIENT))
        for name in ("docs-v1", "docs-v2", "docs-v3"):

            def ready(name: str = name) -> bool:
                return phase(plane, namespace, "kbv", name) == "Ready"

            eventually(f"{name} Ready", ready)
        serve("docs-v1")
        settings = eventually(
            "the rendered runtime settings",
            lambda: (get(plane, namespace, "configmap", settings_config_map(plane, namespace)) or {}).get("data"),
        )
        overrides = {"RAGOPS_DSN": pg_dsn, "RAGOPS_POD": "docs-runtime-0", "RAGOPS_PORT": str(free_port())}
        with running_runtime(settings, overrides, tmp_path / "runtime.log", 180) as url:
            eventually("the runtime answers", lambda: answered_by(url, "trail permit") == "docs-v1", timeout=60)
            before = stored_version(pg_dsn, "docs-v1")
            assert before is not None and before[0] == "built" and before[1] > 0, before

            plane.kubectl("delete", "kbv", "docs-v1", "-n", namespace, "--wait=false")
            deleting = eventually(
                "VersionDeleting on the deployment",
                lambda: (
                    (c := condition(get(plane, namespace, "ragd", "docs"), "VersionDeleting")).get("status") == "True"
                    and c
                ),
            )
            assert deleting["message"].startswith(
                "KnowledgeBaseVersion docs-v1 is being deleted but this deployment serves it"
            ), deleting
            in_use = eventually(
                "InUse on the version",
                lambda: (
                    (c := condition(get(plane, namespace, "kbv", "docs-v1"), "Ready")).get("reason") == "InUse" and c
                ),
            )
            assert "in use by RagDeployment docs" in in_use["message"]
            time.sleep(12)  # past a retry of the deletion (every 10 s) and several deployment passes
            for number in range(5):  # nothing lost: the same version answers, from the same rows
                assert answered_by(url, f"{TOPICS[number]} trail permit") == "docs-v1"
            assert active_version(pg_dsn) == "docs-v1" and stored_version(pg_dsn, "docs-v1") == before
            assert [r for r, _ in events(plane, namespace, "docs-v1")].count("InUse") == 1
            assert [r for r, _ in events(plane, namespace, "docs")].count("VersionDeleting") == 1

            # docs-v2 served: docs-v1 is what an SLO breach would return to, so it stays.
            serve("docs-v2")
            eventually("docs-v2 answers", lambda: answered_by(url, "trail permit") == "docs-v2", timeout=30)
            kept = condition(get(plane, namespace, "ragd", "docs"), "VersionDeleting")
            assert "docs-v1 is being deleted but this deployment would roll back to it" in kept["message"], kept
            assert get(plane, namespace, "kbv", "docs-v1") is not None
            assert stored_version(pg_dsn, "docs-v1") == before

            # docs-v3 served: docs-v2 is the rollback target now, nothing needs docs-v1, and it goes.
            serve("docs-v3")
            eventually("docs-v1 deleted", lambda: get(plane, namespace, "kbv", "docs-v1") is None, timeout=60)
            assert stored_version(pg_dsn, "docs-v1") is None
            eventually(
                "VersionDeleting removed",
                lambda: not condition(get(plane, namespace, "ragd", "docs"), "VersionDeleting"),
            )
            assert [r for r, _ in events(plane, namespace, "docs")].count("VersionReleased") == 1
            assert answered_by(url, "trail permit") == "docs-v3" and active_version(pg_dsn) == "docs-v3"
            assert stored_version(pg_dsn, "docs-v2") is not None  # the rollback target is kept
