"""The models' own validation: bounds, enums and the Python mirror of every CEL rule."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from ragops_operator.api import KnowledgeBaseVersionSpec, RagDeploymentSpec, parse_duration
from ragops_operator.api.common import ApiModel, is_link_local_url, parse_quantity

KBV_MINIMAL: dict[str, Any] = {
    "knowledgeBase": "docs",
    "store": {"dsnSecretRef": {"name": "pg", "key": "dsn"}},
    "sources": [{"configMap": {"name": "docs-src"}}],
    "goldenSet": {"configMapRef": {"name": "docs-golden", "key": "cases.yaml"}},
}
RAGD_MINIMAL: dict[str, Any] = {"knowledgeBase": {"name": "docs", "version": "docs-v1"}}


def merged(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in patch.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def test_defaults_fill_a_minimal_knowledge_base_version() -> None:
    spec = KnowledgeBaseVersionSpec.model_validate(KBV_MINIMAL)
    assert (spec.chunking.strategy, spec.chunking.size, spec.chunking.overlap) == ("recursive", 512, 64)
    embedding = spec.embedding
    assert (embedding.provider, embedding.model, embedding.dimensions) == ("static", None, None)
    assert (embedding.resolved_model, embedding.resolved_dimensions) == ("wordllama-l2-supercat", 256)
    assert (spec.index.m, spec.index.ef_construction, spec.index.distance) == (16, 64, "cosine")
    assert spec.golden_set.thresholds.recall_at_k == 0.8


def test_defaults_fill_a_minimal_rag_deployment() -> None:
    spec = RagDeploymentSpec.model_validate(RAGD_MINIMAL)
    assert spec.generation.provider == "none"
    assert spec.slo.window == "5m" and spec.slo.failure_threshold == 3
    assert spec.runtime.resources.requests == {"cpu": "250m", "memory": "512Mi"}


def test_round_trip_uses_camel_case() -> None:
    spec = RagDeploymentSpec.model_validate(RAGD_MINIMAL)
    dumped = spec.model_dump(by_alias=True, exclude_none=True)
    assert dumped["slo"]["p95LatencyMs"] == 1000
    assert RagDeploymentSpec.model_validate(dumped) == spec


def test_models_are_frozen() -> None:
    spec = RagDeploymentSpec.model_validate(RAGD_MINIMAL)
    with pytest.raises(ValidationError):
        spec.runtime.replicas = 3  # type: ignore[misc]


RULE_CASES = [
    (KnowledgeBaseVersionSpec, KBV_MINIMAL, {"sources": [{}]}, "exactly one of configMap, url or pvc"),
    (
        KnowledgeBaseVersionSpec,
        KBV_MINIMAL,
        {"sources": [{"url": "https://example.org/a.md", "configMap": {"name": "x"}}]},
        "exactly one of configMap, url or pvc",
    ),
    (KnowledgeBaseVersionSpec, KBV_MINIMAL, {"chunking": {"size": 64, "overlap": 64}}, "overlap:"),
    (KnowledgeBaseVersionSpec, KBV_MINIMAL, {"index": {"m": 40, "efConstruction": 64}}, "efConstruction:"),
    (KnowledgeBaseVersionSpec, KBV_MINIMAL, {"embedding": {"provider": "openai", "model": "m"}}, "endpoint:"),
    (
        KnowledgeBaseVersionSpec,
        KBV_MINIMAL,
        {"embedding": {"provider": "openai", "endpoint": "https://api.openai.com/v1"}},
        "model:",
    ),
    (RagDeploymentSpec, RAGD_MINIMAL, {"retrieval": {"topK": 3, "rerankTopK": 5}}, "rerankTopK:"),
    (RagDeploymentSpec, RAGD_MINIMAL, {"retrieval": {"reranker": {"provider": "http"}}}, "endpoint:"),
    (RagDeploymentSpec, RAGD_MINIMAL, {"generation": {"provider": "anthropic"}}, "apiKeySecretRef:"),
    (
        RagDeploymentSpec,
        RAGD_MINIMAL,
        {"runtime": {"autoscaling": {"minReplicas": 4, "maxReplicas": 2}}},
        "maxReplicas:",
    ),
    (RagDeploymentSpec, RAGD_MINIMAL, {"slo": {"window": "1m", "checkInterval": "2m"}}, "checkInterval:"),
    (RagDeploymentSpec, RAGD_MINIMAL, {"cache": {"backend": "redis"}}, "redisUrlSecretRef:"),
]


@pytest.mark.parametrize(("model", "base", "patch", "needle"), RULE_CASES)
def test_cross_field_rules_refuse_in_python(
    model: type[ApiModel], base: dict[str, Any], patch: dict[str, Any], needle: str
) -> None:
    with pytest.raises(ValidationError) as error:
        model.model_validate(merged(base, patch))
    assert needle in str(error.value)


@pytest.mark.parametrize(
    ("patch", "needle"),
    [
        ({"knowledgeBase": "Docs"}, "knowledgeBase"),
        ({"chunking": {"strategy": "semantic"}}, "strategy"),
        ({"embedding": {"dimensions": 4096}}, "dimensions"),
        ({"chunking": {"sise": 10}}, "sise"),
    ],
)
def test_field_constraints_refuse_in_python(patch: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValidationError) as error:
        KnowledgeBaseVersionSpec.model_validate(merged(KBV_MINIMAL, patch))
    assert needle in str(error.value)


def test_every_rule_with_a_python_mirror_accepts_the_defaults() -> None:
    # The defaults are also the CRD defaults: a default that broke a rule would make every
    # minimal object invalid on the apiserver.
    KnowledgeBaseVersionSpec.model_validate(KBV_MINIMAL)
    RagDeploymentSpec.model_validate(RAGD_MINIMAL)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("15s", timedelta(seconds=15)),
        ("5m", timedelta(minutes=5)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("250ms", timedelta(milliseconds=250)),
        ("1.5h", timedelta(minutes=90)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "5", "m5", "5 m", "5d", "-5s", "1h1x"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (2, Decimal(2)),
        ("500m", Decimal("0.5")),
        ("0.5", Decimal("0.5")),
        ("1Gi", Decimal(1 << 30)),
        ("1e9", Decimal(10**9)),
        ("1E", Decimal(10**18)),
        (".5Ki", Decimal(512)),
        ("1.", Decimal(1)),
        ("250n", Decimal("0.00000025")),
    ],
)
def test_parse_quantity_gives_the_value_cel_compares(text: int | str, expected: Decimal) -> None:
    assert parse_quantity(text) == expected


@pytest.mark.parametrize("text", ["-1", "+1", "1e", "lots", "1.5.5Gi", "512mi", "1e1.5"])
def test_parse_quantity_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="not a quantity"):
        parse_quantity(text)


@pytest.mark.parametrize(
    ("url", "link_local"),
    [
        ("http://169.254.169.254/latest", True),
        ("HTTP://METADATA.GOOGLE.INTERNAL./x", True),
        ("http://metadata", True),
        ("http://[FD00:EC2::254]:80/", True),
        ("http://[::ffff:a9fe:a9fe]/", True),
        ("http://[febf::1]/", True),
        ("http://metadata.example.com/", False),
        ("http://169.254.example.com/", False),
        ("http://[fec0::1]/", False),
        ("http://10.169.254.1/", False),
        ("https://api.openai.com/v1", False),
    ],
)
def test_link_local_and_metadata_urls(url: str, link_local: bool) -> None:
    assert is_link_local_url(url) is link_local
