"""The operator under faults, on the real control plane: nothing lost, nothing stuck, nothing looping.

Each scenario drives the real operator (Kopf, in-process) against the real apiserver and asserts
what a user sees: status conditions naming the cause, Events posted once, no traceback loop.

| scenario                                  | test                                                          |
|-------------------------------------------|---------------------------------------------------------------|
| a spec the operator refuses (older CRD)   | test_a_spec_the_operator_refuses_is_reported_once_until_it_changes |
| runtime pods cannot be created (quota)    | test_runtime_pods_that_cannot_be_created_are_surfaced_with_their_reason |
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import yaml

from tests.integration.test_operator import apply, condition, eventually, get, running_operator
from tests.integration.test_operator_e2e import LENIENT, events, version
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
