"""The generated CRDs on a real kube-apiserver: accepted examples, defaults, status, immutability, kubectl UX."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from ragops_operator.api import (
    KnowledgeBaseVersionSpec,
    KnowledgeBaseVersionStatus,
    RagDeploymentSpec,
    RagDeploymentStatus,
)
from tests.support.controlplane import ControlPlane
from tests.support.hostile_crs import apply_changes

pytestmark = pytest.mark.cluster

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
Doc = dict[str, Any]


def load(name: str) -> Doc:
    document: Doc = yaml.safe_load((EXAMPLES / name).read_text())
    return document


def create(plane: ControlPlane, namespace: str, document: Doc) -> tuple[int, str]:
    result = plane.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(document), check=False)
    return result.returncode, result.stderr


def get(plane: ControlPlane, namespace: str, resource: str, name: str) -> Doc:
    out = plane.kubectl("get", "-n", namespace, resource, name, "-o", "json").stdout
    document: Doc = json.loads(out)
    return document


def test_apiserver_is_the_pinned_version(control_plane: ControlPlane) -> None:
    go_mod = (Path(__file__).resolve().parents[2] / "tools" / "k8s" / "go.mod").read_text()
    pinned = re.search(r"^\s*k8s\.io/kubernetes (v\S+)", go_mod, re.MULTILINE)
    assert pinned is not None
    assert control_plane.version()["gitVersion"] == pinned.group(1)


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
def test_examples_are_accepted(control_plane: ControlPlane, namespace: str, example: str) -> None:
    code, stderr = create(control_plane, namespace, load(example))
    assert code == 0, stderr


@pytest.mark.parametrize(
    ("example", "resource", "model"),
    [
        ("ragdeployment-retrieval-only.yaml", "ragd", RagDeploymentSpec),
        ("knowledgebaseversion-openai.yaml", "kbv", KnowledgeBaseVersionSpec),
    ],
)
def test_apiserver_defaults_equal_model_defaults(
    control_plane: ControlPlane, namespace: str, example: str, resource: str, model: type[Any]
) -> None:
    document = load(example)
    assert create(control_plane, namespace, document)[0] == 0
    stored = get(control_plane, namespace, resource, document["metadata"]["name"])["spec"]
    expected = model.model_validate(document["spec"]).model_dump(mode="json", by_alias=True, exclude_none=True)
    assert stored == expected
    # And the operator reads back exactly what it would have computed itself.
    assert model.model_validate(stored) == model.model_validate(document["spec"])


def test_explain_shows_descriptions(control_plane: ControlPlane) -> None:
    out = control_plane.kubectl("explain", "ragdeployment.spec.slo").stdout
    assert "Service-level objectives" in out
    assert "Fewer queries in the window make a check inconclusive" in out
    out = control_plane.kubectl("explain", "kbv.spec.index.efConstruction").stdout
    assert "HNSW: size of the candidate list while building." in out


def _kbv_status() -> Doc:
    now = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
    status = KnowledgeBaseVersionStatus.model_validate(
        {
            "observedGeneration": 1,
            "phase": "Ready",
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "GatePassed",
                    "lastTransitionTime": now,
                    "observedGeneration": 1,
                    "message": "gate passed",
                },
            ],
            "documents": 12,
            "chunks": 340,
            "reusedEmbeddings": 0,
            "gate": {
                "metrics": {
                    "precisionAtK": 0.7,
                    "recallAtK": 0.9,
                    "mrr": 0.8,
                    "ndcgAtK": 0.83,
                    "hitRate": 1.0,
                },
                "passed": True,
                "cases": 20,
            },
        }
    )
    dumped: Doc = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    return dumped


def _ragd_status() -> Doc:
    now = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
    status = RagDeploymentStatus.model_validate(
        {
            "observedGeneration": 1,
            "phase": "Healthy",
            "activeVersion": "docs-v1",
            "lastKnownGoodVersion": "docs-v1",
            "readyReplicas": 2,
            "conditions": [
                {"type": "Available", "status": "True", "reason": "ReplicasReady", "lastTransitionTime": now},
                {"type": "SLOHealthy", "status": "True", "reason": "SLOMet", "lastTransitionTime": now},
            ],
            "history": [
                {
                    "revision": 1,
                    "kbVersion": "docs-v1",
                    "runtimeHash": "abc123",
                    "promotedAt": now,
                    "outcome": "KnownGood",
                },
            ],
            "rollout": {
                "strategy": "canary",
                "phase": "Paused",
                "stableVersion": "docs-v1",
                "canaryVersion": "docs-v2",
                "currentStepIndex": 2,
                "steps": 4,
                "weight": 10,
                "shadowPercent": 50.0,
                "startedAt": now,
                "pausedAt": now,
                "pauseReason": "Step",
                "analysis": {
                    "verdict": "Pass",
                    "checkedAt": now,
                    "windowSeconds": 120.0,
                    "objectives": [
                        {
                            "name": "p95LatencyMs",
                            "source": "user",
                            "stable": 310.0,
                            "canary": 290.5,
                            "limit": "<= 1.25 x stable",
                            "verdict": "Pass",
                        }
                    ],
                },
            },
        }
    )
    dumped: Doc = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    return dumped


def test_status_round_trips_and_printer_columns_show_it(control_plane: ControlPlane, namespace: str) -> None:
    plane = control_plane
    for example, resource, status in (
        ("knowledgebaseversion.yaml", "kbv", _kbv_status()),
        ("ragdeployment.yaml", "ragd", _ragd_status()),
    ):
        document = load(example)
        assert create(plane, namespace, document)[0] == 0
        name = document["metadata"]["name"]
        plane.kubectl(
            "patch",
            "-n",
            namespace,
            resource,
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps({"status": status}),
        )
        assert get(plane, namespace, resource, name)["status"] == status

    table = plane.kubectl("get", "-n", namespace, "kbv,ragd").stdout
    lines = [line.split() for line in table.splitlines() if line.strip()]
    assert lines[0] == ["NAME", "KB", "PHASE", "READY", "GATE", "NDCG", "CHUNKS", "AGE"]
    assert lines[1][:7] == [
        "knowledgebaseversion.ragops.dev/docs-v1",
        "docs",
        "Ready",
        "True",
        "true",
        "0.83",
        "340",
    ]
    assert lines[2] == [
        "NAME",
        "KB",
        "DESIRED",
        "ACTIVE",
        "PHASE",
        "ROLLOUT",
        "STEP",
        "WEIGHT",
        "READY",
        "AVAILABLE",
        "SLO",
        "AGE",
    ]
    assert lines[3][:11] == [
        "ragdeployment.ragops.dev/docs",
        "docs",
        "docs-v1",
        "docs-v1",
        "Healthy",
        "Paused",
        "2",
        "10",
        "2",
        "True",
        "True",
    ]
    wide = plane.kubectl("get", "-n", namespace, "ragd", "-o", "wide").stdout
    assert "KNOWN-GOOD" in wide and "CANARY" in wide and "docs-v2" in wide
    # The category lists both kinds at once.
    category = plane.kubectl("get", "-n", namespace, "ragops", "-o", "name").stdout.split()
    assert sorted(category) == ["knowledgebaseversion.ragops.dev/docs-v1", "ragdeployment.ragops.dev/docs"]


def test_status_is_not_writable_through_the_main_resource(control_plane: ControlPlane, namespace: str) -> None:
    document = load("ragdeployment-retrieval-only.yaml")
    document["status"] = {"phase": "Healthy"}
    assert create(control_plane, namespace, document)[0] == 0
    assert "status" not in get(control_plane, namespace, "ragd", document["metadata"]["name"])


KBV = "knowledgebaseversion.yaml"
RAGD = "ragdeployment.yaml"
# Invalid objects, and valid edge cases, are the hostile suite's: tests/integration/test_hostile_crs.py.


def test_knowledge_base_version_spec_is_immutable(control_plane: ControlPlane, namespace: str) -> None:
    plane = control_plane
    document = load(KBV)
    assert create(plane, namespace, document)[0] == 0
    changed = apply_changes(document, {"spec.chunking.size": 256})
    result = plane.kubectl(
        "apply",
        "--server-side",
        "--field-manager=user",
        "--force-conflicts",
        "-n",
        namespace,
        "-f",
        "-",
        input=json.dumps(changed),
        check=False,
    )
    assert result.returncode != 0
    assert "spec: Invalid value: spec is immutable: create a new KnowledgeBaseVersion instead" in (result.stderr)
    assert get(plane, namespace, "kbv", "docs-v1")["spec"]["chunking"]["size"] == 512
    # Metadata and status stay writable: labels for users, status for the operator.
    plane.kubectl("label", "-n", namespace, "kbv", "docs-v1", "stage=canary")
    plane.kubectl(
        "patch",
        "-n",
        namespace,
        "kbv",
        "docs-v1",
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"phase": "Building"}}),
    )
    assert get(plane, namespace, "kbv", "docs-v1")["status"]["phase"] == "Building"


def test_rag_deployment_spec_is_mutable(control_plane: ControlPlane, namespace: str) -> None:
    document = load(RAGD)
    assert create(control_plane, namespace, document)[0] == 0
    control_plane.kubectl(
        "patch",
        "-n",
        namespace,
        "ragd",
        "docs",
        "--type=merge",
        "-p",
        json.dumps({"spec": {"knowledgeBase": {"version": "docs-v2"}}}),
    )
    stored = get(control_plane, namespace, "ragd", "docs")
    assert stored["spec"]["knowledgeBase"]["version"] == "docs-v2"
    assert stored["metadata"]["generation"] == 2
