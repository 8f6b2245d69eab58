"""The runtime's objects: the settings contract with the runtime, autoscaling, and the template hash."""

from __future__ import annotations

from typing import Annotated, Any

import pytest
import yaml
from pydantic import TypeAdapter

from ragops_operator.builders import (
    RUNTIME_HASH_ANNOTATION,
    RUNTIME_HASH_LABEL,
    Manifest,
    StoredTemplate,
    build_config_map,
    build_controller_revision,
    build_deployment,
    build_horizontal_pod_autoscaler,
    build_runtime_children,
    runtime_settings_env,
    runtime_template_hash,
    template_object_name,
)
from tests.support.readme import readme_snippet

from .scenarios import RAGD_EXAMPLES, SETTINGS_BY_ENV, is_secret, runtime_context

AUTOSCALING = {"runtime": {"autoscaling": {"minReplicas": 2, "maxReplicas": 6}}}
NO_AUTOSCALING = {"runtime": {"autoscaling": None}}


def runtime_container(ctx_patch: dict[str, Any] | None = None, example: str = "ragdeployment.yaml") -> Manifest:
    ctx = runtime_context(example, ctx_patch)
    container: Manifest = build_deployment(ctx, runtime_template_hash(ctx))["spec"]["template"]["spec"]["containers"][0]
    return container


@pytest.mark.parametrize("example", RAGD_EXAMPLES)
def test_every_rendered_env_var_is_a_runtime_setting(example: str) -> None:
    ctx = runtime_context(example, {"retrieval": {"reranker": {"provider": "http", "endpoint": "http://tei/rerank"}}})
    config = build_config_map(ctx, runtime_template_hash(ctx))["data"]
    container = runtime_container(example=example)
    rendered = set(config) | {entry["name"] for entry in container["env"]}
    unknown = rendered - set(SETTINGS_BY_ENV)
    assert not unknown, f"not RuntimeSettings fields or aliases: {sorted(unknown)}"


@pytest.mark.parametrize("example", RAGD_EXAMPLES)
def test_every_plain_setting_has_a_value_its_field_accepts(example: str) -> None:
    ctx = runtime_context(example, {"retrieval": {"reranker": {"provider": "http", "endpoint": "http://tei/rerank"}}})
    for env, value in runtime_settings_env(ctx).items():
        _, field = SETTINGS_BY_ENV[env]
        assert not is_secret(field), f"{env} is a credential and must come from a Secret"
        # The field's type with its constraints (ge, le, Literal ...), validated as pydantic-settings
        # would validate the environment string, without instantiating the settings class.
        annotation: Any = Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
        adapter: TypeAdapter[Any] = TypeAdapter(annotation)
        adapter.validate_python(value)


def test_credentials_are_secret_refs_and_secret_settings_come_only_from_secrets() -> None:
    for entry in runtime_container()["env"]:
        _, field = SETTINGS_BY_ENV[entry["name"]]
        source = entry["valueFrom"]
        assert "value" not in entry
        assert ("secretKeyRef" in source) is is_secret(field), entry["name"]


def test_the_settings_mapping() -> None:
    ctx = runtime_context(
        patch={
            "retrieval": {
                "topK": 30,
                "rerankTopK": 7,
                "hybrid": False,
                "reranker": {"provider": "http", "endpoint": "http://tei/rerank", "model": "bge", "timeoutMs": 250},
            },
            "generation": {"maxTokens": 800, "timeoutSeconds": 12, "model": "claude-haiku-4-5"},
            "limits": {"maxConcurrentRequests": 16, "retrievalTimeoutMs": 900, "trustedClientHeader": "X-Real-IP"},
            "slo": {"window": "2m", "checkInterval": "30s"},
            "cache": {
                "ttlSeconds": 0,
                "maxEntries": 5,
                "backend": "redis",
                "redisUrlSecretRef": {"name": "r", "key": "u"},
            },
            "jobs": {"concurrency": 0, "maxQueriesPerJob": 20, "maxAttempts": 3, "retention": "36h"},
        },
        name="search",
    )
    assert runtime_settings_env(ctx) == {
        "RAGOPS_KNOWLEDGE_BASE": "docs",
        "RAGOPS_NAMESPACE": "docs-team",
        "RAGOPS_DEPLOYMENT": "search",
        "RAGOPS_PORT": "8080",
        "RAGOPS_TOP_K": "30",
        "RAGOPS_RERANK_TOP_K": "7",
        "RAGOPS_HYBRID": "false",
        "RAGOPS_FUSION_VECTOR_WEIGHT": "1.0",
        "RAGOPS_FUSION_LEXICAL_WEIGHT": "1.0",
        "RAGOPS_FUSION_RRF_K": "60",
        "RAGOPS_RERANKER_PROVIDER": "http",
        "RAGOPS_RERANKER_ENDPOINT": "http://tei/rerank",
        "RAGOPS_RERANKER_MODEL": "bge",
        "RAGOPS_RERANKER_TIMEOUT_MS": "250",
        "RAGOPS_GENERATION_PROVIDER": "anthropic",
        "RAGOPS_GENERATION_MODEL": "claude-haiku-4-5",
        "RAGOPS_GENERATION_MAX_TOKENS": "800",
        "RAGOPS_GENERATION_TIMEOUT_SECONDS": "12",
        "RAGOPS_REQUESTS_PER_MINUTE_PER_CLIENT": "100",
        "RAGOPS_MAX_QUERY_CHARS": "2000",
        "RAGOPS_RETRIEVAL_TIMEOUT_MS": "900",
        "RAGOPS_MAX_CONCURRENT_REQUESTS": "16",
        "RAGOPS_TRUSTED_CLIENT_HEADER": "X-Real-IP",
        "RAGOPS_FEEDBACK_WINDOW_SECONDS": "120",
        "RAGOPS_CACHE_TTL_SECONDS": "0",
        "RAGOPS_CACHE_MAX_ENTRIES": "5",
        "RAGOPS_CACHE_BACKEND": "redis",
        "RAGOPS_JOB_CONCURRENCY": "0",
        "RAGOPS_JOB_MAX_QUERIES": "20",
        "RAGOPS_JOB_MAX_ATTEMPTS": "3",
        "RAGOPS_JOB_RETENTION_SECONDS": "129600",
    }


def test_unset_optional_settings_are_omitted_not_rendered_empty() -> None:
    settings = runtime_settings_env(runtime_context("ragdeployment-retrieval-only.yaml"))
    assert "RAGOPS_RERANKER_ENDPOINT" not in settings and "RAGOPS_RERANKER_MODEL" not in settings
    assert "RAGOPS_TRUSTED_CLIENT_HEADER" not in settings  # the runtime keys on the peer address
    assert settings["RAGOPS_GENERATION_PROVIDER"] == "none"  # the runtime's own default is anthropic


def test_pod_name_comes_from_the_downward_api_and_settings_from_the_config_map() -> None:
    container = runtime_container()
    assert {"name": "RAGOPS_POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in container["env"]
    ctx = runtime_context()
    config_map = template_object_name(ctx, runtime_template_hash(ctx))
    assert config_map.startswith("docs-runtime-")
    assert container["envFrom"] == [{"configMapRef": {"name": config_map}}]


def test_the_redis_url_is_a_secret_ref_and_only_for_the_redis_backend() -> None:
    redis = {"cache": {"backend": "redis", "redisUrlSecretRef": {"name": "cache", "key": "url"}}}
    container = runtime_container(redis)
    expected = {"secretKeyRef": {"name": "cache", "key": "url"}}
    assert [e["valueFrom"] for e in container["env"] if e["name"] == "RAGOPS_CACHE_REDIS_URL"] == [expected]
    ctx = runtime_context(patch=redis)
    assert "RAGOPS_CACHE_REDIS_URL" not in runtime_settings_env(ctx)
    assert runtime_settings_env(ctx)["RAGOPS_CACHE_BACKEND"] == "redis"
    assert "RAGOPS_CACHE_REDIS_URL" not in {e["name"] for e in runtime_container()["env"]}


def test_the_read_only_dsn_is_a_secret_ref_next_to_the_primary_and_only_when_given() -> None:
    env = {e["name"]: e["valueFrom"] for e in runtime_container()["env"]}
    assert env["RAGOPS_READ_ONLY_DSN"] == {"secretKeyRef": {"name": "pg-ro", "key": "dsn"}}
    assert env["RAGOPS_DSN"] == {"secretKeyRef": {"name": "pg", "key": "dsn"}}  # the version's store
    primary_only = {e["name"] for e in runtime_container({"store": {"readOnlyDsnSecretRef": None}})["env"]}
    assert "RAGOPS_DSN" in primary_only and "RAGOPS_READ_ONLY_DSN" not in primary_only
    assert "RAGOPS_READ_ONLY_DSN" not in runtime_settings_env(runtime_context())


def test_anthropic_key_is_passed_only_when_referenced() -> None:
    with_key = {entry["name"] for entry in runtime_container()["env"]}
    without_key = {entry["name"] for entry in runtime_container(example="ragdeployment-retrieval-only.yaml")["env"]}
    assert with_key == {"RAGOPS_POD", "RAGOPS_DSN", "RAGOPS_READ_ONLY_DSN", "RAGOPS_ANTHROPIC_API_KEY"}
    assert without_key == {"RAGOPS_POD", "RAGOPS_DSN"}


def test_tracing_settings_are_rendered_only_with_a_collector() -> None:
    assert not {"RAGOPS_OTLP_ENDPOINT", "RAGOPS_TRACE_SAMPLING_RATIO"} & set(runtime_settings_env(runtime_context()))
    traced = runtime_context(patch={"tracing": {"otlpEndpoint": "http://otel:4318", "samplingRatio": 0.25}})
    settings = runtime_settings_env(traced)
    assert (settings["RAGOPS_OTLP_ENDPOINT"], settings["RAGOPS_TRACE_SAMPLING_RATIO"]) == ("http://otel:4318", "0.25")
    assert runtime_template_hash(traced) != runtime_template_hash(runtime_context())


def test_openai_api_keys_are_a_secret_ref_when_referenced() -> None:
    container = runtime_container({"openai": {"apiKeysSecretRef": {"name": "clients", "key": "keys"}}})
    expected = {"secretKeyRef": {"name": "clients", "key": "keys"}}
    assert [e["valueFrom"] for e in container["env"] if e["name"] == "RAGOPS_API_KEYS"] == [expected]
    assert "RAGOPS_API_KEYS" not in {e["name"] for e in runtime_container()["env"]}


@pytest.mark.parametrize(
    ("patch", "has_hpa"),
    [(AUTOSCALING, True), (NO_AUTOSCALING, False), ({"runtime": {"replicas": 0}}, True)],
    ids=["autoscaling", "fixed", "example-autoscaling-replicas-0"],
)
def test_an_hpa_exists_only_with_autoscaling_and_then_owns_replicas(patch: dict[str, Any], has_hpa: bool) -> None:
    ctx = runtime_context(patch=patch)
    children = build_runtime_children(ctx)
    hpa = build_horizontal_pod_autoscaler(ctx)
    deployment = next(child for child in children if child["kind"] == "Deployment")
    assert (hpa is not None) is has_hpa
    assert any(child["kind"] == "HorizontalPodAutoscaler" for child in children) is has_hpa
    assert ("replicas" in deployment["spec"]) is not has_hpa
    if hpa is None:
        assert deployment["spec"]["replicas"] == ctx.spec.runtime.replicas
    else:
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "docs-runtime"}
        assert hpa["spec"]["metrics"][0]["resource"]["target"] == {"type": "Utilization", "averageUtilization": 70}


def test_children_come_in_apply_order() -> None:
    kinds = [child["kind"] for child in build_runtime_children(runtime_context())]
    assert kinds == [
        "ServiceAccount",
        "ConfigMap",
        "NetworkPolicy",
        "Service",
        "Deployment",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "ServiceMonitor",
    ]


@pytest.mark.parametrize(
    ("change", "patch", "extra", "changes"),
    [
        ("image", {}, {"image": "registry.example.com/ragops/ragops:0.2.0"}, True),
        ("cpu request", {"runtime": {"resources": {"requests": {"cpu": "500m"}}}}, {}, True),
        ("memory limit", {"runtime": {"resources": {"limits": {"memory": "2Gi"}}}}, {}, True),
        ("topK setting", {"retrieval": {"topK": 40}}, {}, True),
        ("generation model", {"generation": {"model": "claude-haiku-4-5"}}, {}, True),
        ("cache ttl", {"cache": {"ttlSeconds": 60}}, {}, True),
        ("api key secret", {"generation": {"apiKeySecretRef": {"name": "anthropic-2", "key": "api-key"}}}, {}, True),
        ("store secret", {}, {"store_patch": {"dsnSecretRef": {"name": "pg-2", "key": "dsn"}}}, True),
        ("read-only store secret", {"store": {"readOnlyDsnSecretRef": {"name": "pg-ro-2", "key": "uri"}}}, {}, True),
        ("replicas", {"runtime": {"replicas": 5}}, {}, False),
        ("autoscaling bounds", {"runtime": {"autoscaling": {"maxReplicas": 12}}}, {}, False),
        ("autoscaling removed", NO_AUTOSCALING, {}, False),
        ("kb version promoted", {"knowledgeBase": {"version": "docs-v2"}}, {}, False),
        ("slo and rollout", {"slo": {"p95LatencyMs": 500}, "rollout": {"bakeTime": "1m"}}, {}, False),
    ],
)
def test_template_hash_changes_exactly_when_pods_must_change(
    change: str, patch: dict[str, Any], extra: dict[str, Any], changes: bool
) -> None:
    before = runtime_template_hash(runtime_context())
    after = runtime_template_hash(runtime_context(patch=patch, **extra))
    assert (before != after) is changes, change
    assert len(after) == 12 and int(after, 16) >= 0


def _child(children: list[Manifest], kind: str) -> Manifest:
    return next(child for child in children if child["kind"] == kind)


def test_each_template_reads_its_own_immutable_settings_config_map() -> None:
    ctx = runtime_context()
    template_hash = runtime_template_hash(ctx)
    children = build_runtime_children(ctx)
    config_map, deployment = _child(children, "ConfigMap"), _child(children, "Deployment")
    template = deployment["spec"]["template"]
    assert template["metadata"]["annotations"][RUNTIME_HASH_ANNOTATION] == template_hash
    assert template["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert config_map["immutable"] is True
    assert config_map["metadata"]["labels"][RUNTIME_HASH_LABEL] == template_hash
    assert template["spec"]["containers"][0]["envFrom"] == [{"configMapRef": {"name": config_map["metadata"]["name"]}}]
    # A settings change is a new template: a new ConfigMap name, so the pods roll and old ones keep theirs.
    changed = runtime_context(patch={"cache": {"maxEntries": 1}})
    changed_map = build_config_map(changed, runtime_template_hash(changed))
    assert changed_map["metadata"]["name"] != config_map["metadata"]["name"]
    assert template_object_name(ctx, template_hash).endswith(template_hash)


def test_a_rolled_back_revision_runs_its_stored_template_while_the_rest_follows_the_spec() -> None:
    old = runtime_context(patch={"runtime": {"image": "ghcr.io/ragops/ragops:0.0.9"}})
    record = build_controller_revision(old, runtime_template_hash(old), revision=3)
    assert record["kind"] == "ControllerRevision" and record["revision"] == 3
    stored = StoredTemplate.from_controller_revision(record)
    assert stored.template_hash == runtime_template_hash(old)

    new = runtime_context(
        patch={"runtime": {"image": "ghcr.io/ragops/ragops:0.2.0", "replicas": 4, "autoscaling": None}}
    )
    restored = build_runtime_children(new, served=stored)
    deployment = _child(restored, "Deployment")
    assert deployment["spec"]["template"] == build_deployment(old, stored.template_hash)["spec"]["template"]
    assert deployment["spec"]["replicas"] == 4  # scale follows the spec; only the template is the revision's
    assert _child(restored, "ConfigMap") == build_config_map(old, stored.template_hash)
    # Serving the spec's own template needs no record: the same objects as without one.
    current = build_controller_revision(new, runtime_template_hash(new), revision=4)
    assert build_runtime_children(new, served=StoredTemplate.from_controller_revision(current)) == (
        build_runtime_children(new)
    )


def test_the_runtime_container_serves_on_8080_with_probes() -> None:
    container = runtime_container()
    assert container["name"] == "runtime" and container["command"] == ["ragops", "serve"]
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert "startupProbe" in container
    assert container["resources"] == {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}}


def test_the_readme_tracing_snippet_turns_tracing_on() -> None:
    document = yaml.safe_load(readme_snippet("tracing"))
    assert document["kind"] == "RagDeployment"
    ctx = runtime_context(patch=document["spec"])
    settings = runtime_settings_env(ctx)
    assert settings["RAGOPS_OTLP_ENDPOINT"] == "http://otel-collector.observability:4318"
    assert settings["RAGOPS_TRACE_SAMPLING_RATIO"] == "0.1"
