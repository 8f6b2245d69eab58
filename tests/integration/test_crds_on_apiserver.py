"""The generated CRDs on a real kube-apiserver: accepted examples, refused mistakes, kubectl UX."""

from __future__ import annotations

import copy
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
from ragops_operator.api.common import ApiModel
from tests.support.controlplane import ControlPlane

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
    assert lines[2] == ["NAME", "KB", "DESIRED", "ACTIVE", "PHASE", "READY", "AVAILABLE", "SLO", "AGE"]
    assert lines[3][:8] == [
        "ragdeployment.ragops.dev/docs",
        "docs",
        "docs-v1",
        "docs-v1",
        "Healthy",
        "2",
        "True",
        "True",
    ]
    wide = plane.kubectl("get", "-n", namespace, "ragd", "-o", "wide").stdout
    assert "KNOWN-GOOD" in wide
    # The category lists both kinds at once.
    category = plane.kubectl("get", "-n", namespace, "ragops", "-o", "name").stdout.split()
    assert sorted(category) == ["knowledgebaseversion.ragops.dev/docs-v1", "ragdeployment.ragops.dev/docs"]


def test_status_is_not_writable_through_the_main_resource(control_plane: ControlPlane, namespace: str) -> None:
    document = load("ragdeployment-retrieval-only.yaml")
    document["status"] = {"phase": "Healthy"}
    assert create(control_plane, namespace, document)[0] == 0
    assert "status" not in get(control_plane, namespace, "ragd", document["metadata"]["name"])


def _set(document: Doc, path: str, value: Any) -> Doc:
    """A copy of `document` with the dotted `path` set to `value` (or removed, for DELETE)."""
    out = copy.deepcopy(document)
    *parents, leaf = path.split(".")
    node = out
    for part in parents:
        node = node.setdefault(part, {})
    if value is DELETE:
        del node[leaf]
    else:
        node[leaf] = value
    return out


DELETE = object()
KBV = "knowledgebaseversion.yaml"
RAGD = "ragdeployment.yaml"

# (example, dotted path to change, new value, text the apiserver's error must contain)
INVALID = [
    (KBV, "spec.knowledgeBase", 5, 'spec.knowledgeBase: Invalid value: "integer"'),
    (KBV, "spec.knowledgeBase", "Docs_v1", 'spec.knowledgeBase: Invalid value: "Docs_v1"'),
    (KBV, "spec.store", DELETE, "spec.store: Required value"),
    (KBV, "spec.sources", DELETE, "spec.sources: Required value"),
    (KBV, "spec.sources", [], "spec.sources: Invalid value: 0"),
    (
        KBV,
        "spec.sources",
        [{}],
        "spec.sources[0]: Invalid value: exactly one of configMap, url or pvc must be set",
    ),
    (
        KBV,
        "spec.sources",
        [{"url": "https://a.example/x.md", "pvc": {"claimName": "c"}}],
        "spec.sources[0]: Invalid value: exactly one of configMap, url or pvc must be set",
    ),
    (KBV, "spec.sources", [{"url": "ftp://a.example/x.md"}], "spec.sources[0].url: Invalid value"),
    (KBV, "spec.store.dsnSecretRef.key", "dsn key", "spec.store.dsnSecretRef.key: Invalid value"),
    (KBV, "spec.chunking.strategy", "semantic", 'spec.chunking.strategy: Unsupported value: "semantic"'),
    (KBV, "spec.chunking.size", 10, "spec.chunking.size: Invalid value: 10"),
    (
        KBV,
        "spec.chunking.overlap",
        600,
        "spec.chunking.overlap: Invalid value: overlap must be smaller than size",
    ),
    (KBV, "spec.chunking.sise", 600, 'unknown field "spec.chunking.sise"'),
    (KBV, "spec.embedding.provider", "cohere", 'spec.embedding.provider: Unsupported value: "cohere"'),
    (KBV, "spec.embedding.dimensions", 4096, "spec.embedding.dimensions: Invalid value: 4096"),
    (
        KBV,
        "spec.embedding.provider",
        "openai",
        "spec.embedding.endpoint: Invalid value: "
        "the openai provider needs an endpoint (an OpenAI-compatible /v1 base URL)",
    ),
    (
        KBV,
        "spec.embedding",
        {"provider": "openai", "endpoint": "https://api.openai.com/v1"},
        "spec.embedding.model: Invalid value: the openai provider needs the name of a served embedding model in model",
    ),
    (KBV, "spec.index.m", 200, "spec.index.m: Invalid value: 200"),
    (
        KBV,
        "spec.index.efConstruction",
        20,
        "spec.index.efConstruction: Invalid value: efConstruction must be at least 2 * m (a pgvector requirement)",
    ),
    (KBV, "spec.index.distance", "dot", 'spec.index.distance: Unsupported value: "dot"'),
    (
        KBV,
        "spec.goldenSet.thresholds.recallAtK",
        1.5,
        "spec.goldenSet.thresholds.recallAtK: Invalid value: 1.5",
    ),
    (KBV, "spec.goldenSet.configMapRef", DELETE, "spec.goldenSet.configMapRef: Required value"),
    (RAGD, "spec.knowledgeBase.version", DELETE, "spec.knowledgeBase.version: Required value"),
    (RAGD, "spec.runtime.replicas", -1, "spec.runtime.replicas: Invalid value: -1"),
    (RAGD, "spec.runtime.replicas", "two", 'spec.runtime.replicas: Invalid value: "string"'),
    (
        RAGD,
        "spec.runtime.autoscaling.maxReplicas",
        1,
        "spec.runtime.autoscaling.maxReplicas: Invalid value: maxReplicas must be greater than or equal to minReplicas",
    ),
    (
        RAGD,
        "spec.runtime.autoscaling.maxReplicas",
        DELETE,
        "spec.runtime.autoscaling.maxReplicas: Required value",
    ),
    (
        RAGD,
        "spec.runtime.resources.requests.cpu",
        "lots",
        "spec.runtime.resources.requests.cpu: Invalid value",
    ),
    (
        RAGD,
        "spec.retrieval.rerankTopK",
        30,
        "spec.retrieval.rerankTopK: Invalid value: rerankTopK must be less than or equal to topK",
    ),
    (
        RAGD,
        "spec.retrieval.reranker.provider",
        "http",
        "spec.retrieval.reranker.endpoint: Invalid value: the http reranker needs an endpoint",
    ),
    (
        RAGD,
        "spec.generation.apiKeySecretRef",
        DELETE,
        "spec.generation.apiKeySecretRef: Invalid value: the anthropic provider needs apiKeySecretRef",
    ),
    (RAGD, "spec.generation.provider", "openai", 'spec.generation.provider: Unsupported value: "openai"'),
    (RAGD, "spec.slo.maxErrorRate", 2, "spec.slo.maxErrorRate: Invalid value: 2"),
    (RAGD, "spec.slo.window", "5 minutes", 'spec.slo.window: Invalid value: "5 minutes"'),
    (
        RAGD,
        "spec.slo.checkInterval",
        "10m",
        "spec.slo.checkInterval: Invalid value: checkInterval must not be longer than window",
    ),
    (RAGD, "spec.limits.maxQueryChars", 0, "spec.limits.maxQueryChars: Invalid value: 0"),
    (
        RAGD,
        "spec.cache.backend",
        "redis",
        "spec.cache.redisUrlSecretRef: Invalid value: the redis cache backend needs redisUrlSecretRef",
    ),
    (RAGD, "spec.cache.backend", "memcached", 'spec.cache.backend: Unsupported value: "memcached"'),
    (
        RAGD,
        "spec.jobs.retention",
        "30s",
        "spec.jobs.retention: Invalid value: retention must be between 1m and 8760h (a year)",
    ),
    (RAGD, "spec.jobs.concurrency", -1, "spec.jobs.concurrency: Invalid value: -1"),
    (
        RAGD,
        "spec.monitoring.prometheusUrl",
        "prometheus:9090",
        "spec.monitoring.prometheusUrl: Invalid value",
    ),
    (RAGD, "spec", DELETE, "spec: Required value"),
]


@pytest.mark.parametrize(
    ("example", "path", "value", "expected"),
    INVALID,
    ids=[
        f"{example.split('.')[0]}:{path}={value if value is not DELETE else '<deleted>'}"
        for example, path, value, _ in INVALID
    ],
)
def test_invalid_objects_are_refused_naming_the_field(
    control_plane: ControlPlane, namespace: str, example: str, path: str, value: Any, expected: str
) -> None:
    code, stderr = create(control_plane, namespace, _set(load(example), path, value))
    assert code != 0, f"accepted: {path}={value!r}"
    assert expected in stderr


def test_every_cel_rule_has_a_refused_case_above() -> None:
    # Each Rule's message must appear in the expected error of at least one case, so a new
    # rule cannot ship without the apiserver proving it refuses what it should.
    messages = {rule.message for model in _api_models() for rule in model.rules}
    covered = {message for message in messages if any(message in case[3] for case in INVALID)}
    covered |= {m for m in messages if m.startswith("spec is immutable")}  # the update test below
    assert messages - covered == set()


def _api_models() -> list[type[ApiModel]]:
    seen: list[type[ApiModel]] = []
    pending: list[type[ApiModel]] = [KnowledgeBaseVersionSpec, RagDeploymentSpec]
    while pending:
        model = pending.pop()
        if model in seen:
            continue
        seen.append(model)
        for info in model.model_fields.values():
            for candidate in (info.annotation, *getattr(info.annotation, "__args__", ())):
                for inner in (candidate, *getattr(candidate, "__args__", ())):
                    if isinstance(inner, type) and issubclass(inner, ApiModel):
                        pending.append(inner)
    return seen


def test_knowledge_base_version_spec_is_immutable(control_plane: ControlPlane, namespace: str) -> None:
    plane = control_plane
    document = load(KBV)
    assert create(plane, namespace, document)[0] == 0
    changed = _set(document, "spec.chunking.size", 256)
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
