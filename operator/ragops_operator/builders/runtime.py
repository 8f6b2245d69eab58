"""The runtime of a RagDeployment as Kubernetes objects: pods that answer queries, and their guards.

`build_runtime_children` renders, from a RagDeploymentSpec alone, every object the operator
server-side-applies for one RagDeployment: ServiceAccount, ConfigMap (the runtime's settings),
NetworkPolicy, Service, Deployment, PodDisruptionBudget, HorizontalPodAutoscaler (only with
autoscaling), ServiceMonitor, and a ControllerRevision recording the runtime template. The
ConfigMap's keys are the `RAGOPS_*` variables of `ragops_runtime.settings.RuntimeSettings`, the
operator/runtime contract; credentials never enter it and are passed only as secretKeyRef env vars.

Each runtime template (see `runtime_template_hash`) gets its own immutable settings ConfigMap,
named after the hash, and a ControllerRevision holding that ConfigMap and the pod template, the
way StatefulSets keep their history. A rollback to an older revision re-applies exactly what that
revision ran (`StoredTemplate`), even after the spec has moved on; and pods of an older ReplicaSet
never read settings written for a newer one.

Pure: this module must not do I/O, read the clock, import Kopf or a Kubernetes client, or read
the operator's settings; everything it needs is in `RuntimeContext`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..api.common import parse_duration
from ..api.kinds import RAG_DEPLOYMENT
from ..api.knowledgebaseversion import StoreSpec
from ..api.ragdeployment import RagDeploymentSpec
from .common import (
    Manifest,
    content_hash,
    object_meta,
    restricted_container_security_context,
    restricted_pod_security_context,
    secret_env,
    tmp_mount,
    tmp_volume,
)
from .naming import NAME_LABEL, child_name, common_labels, selector_labels
from .owner import owner_reference

COMPONENT = "runtime"
CONTAINER_NAME = "runtime"
RUNTIME_PORT = 8080
SERVICE_PORT = 80
PORT_NAME = "http"
METRICS_PATH = "/metrics"
SCRAPE_INTERVAL = "15s"
TERMINATION_GRACE_SECONDS = 30

RUNTIME_HASH_ANNOTATION = "ragops.dev/runtime-hash"
RUNTIME_HASH_LABEL = "ragops.dev/runtime-hash"
"""On each template's ConfigMap and ControllerRevision, so stale ones can be found and pruned."""

DSN_ENV = "RAGOPS_DSN"
READ_ONLY_DSN_ENV = "RAGOPS_READ_ONLY_DSN"
ANTHROPIC_API_KEY_ENV = "RAGOPS_ANTHROPIC_API_KEY"
CACHE_REDIS_URL_ENV = "RAGOPS_CACHE_REDIS_URL"
API_KEYS_ENV = "RAGOPS_API_KEYS"
POD_ENV = "RAGOPS_POD"

MONITORING_POD_LABELS = {NAME_LABEL: "prometheus"}
"""Pods with these labels, in any namespace, may scrape the runtime through its NetworkPolicy.

Both the Prometheus Operator's and the prometheus-community chart's Prometheus pods carry them.
"""

ZONE_TOPOLOGY_KEY = "topology.kubernetes.io/zone"
HOST_TOPOLOGY_KEY = "kubernetes.io/hostname"


@dataclass(frozen=True)
class RuntimeContext:
    """Everything the runtime's objects are built from.

    `store` is the `spec.store` of the KnowledgeBaseVersion served: the runtime reads the same
    database the version was built into. `image` is `spec.runtime.image` or, when that is
    omitted, the operator's default runtime image; `trusted_client_header` likewise
    `spec.limits.trustedClientHeader` or the operator's default (None: the peer address).
    Resolving them is the caller's job so that this module never reads operator settings.
    """

    name: str
    namespace: str
    uid: str
    spec: RagDeploymentSpec
    store: StoreSpec
    image: str
    trusted_client_header: str | None = None


def _flag(value: bool) -> str:
    return "true" if value else "false"


def runtime_settings_env(ctx: RuntimeContext) -> dict[str, str]:
    """The plain (non-secret) `RAGOPS_*` settings of the runtime, derived from the spec.

    Optional settings the spec leaves unset are omitted rather than rendered empty: an empty
    string is a value to pydantic, not an absent one.
    """
    spec = ctx.spec
    retrieval, reranker = spec.retrieval, spec.retrieval.reranker
    generation, limits, cache, jobs = spec.generation, spec.limits, spec.cache, spec.jobs
    settings: dict[str, str | None] = {
        "RAGOPS_KNOWLEDGE_BASE": spec.knowledge_base.name,
        "RAGOPS_NAMESPACE": ctx.namespace,
        "RAGOPS_DEPLOYMENT": ctx.name,
        "RAGOPS_PORT": str(RUNTIME_PORT),
        "RAGOPS_TOP_K": str(retrieval.top_k),
        "RAGOPS_RERANK_TOP_K": str(retrieval.rerank_top_k),
        "RAGOPS_HYBRID": _flag(retrieval.hybrid),
        "RAGOPS_FUSION_VECTOR_WEIGHT": str(retrieval.fusion.vector_weight),
        "RAGOPS_FUSION_LEXICAL_WEIGHT": str(retrieval.fusion.lexical_weight),
        "RAGOPS_FUSION_RRF_K": str(retrieval.fusion.rrf_k),
        "RAGOPS_RERANKER_PROVIDER": reranker.provider,
        "RAGOPS_RERANKER_ENDPOINT": reranker.endpoint,
        "RAGOPS_RERANKER_MODEL": reranker.model,
        "RAGOPS_RERANKER_TIMEOUT_MS": str(reranker.timeout_ms),
        # Always rendered: the runtime's own default is "anthropic", the CRD's is "none".
        "RAGOPS_GENERATION_PROVIDER": generation.provider,
        "RAGOPS_GENERATION_MODEL": generation.model,
        "RAGOPS_GENERATION_MAX_TOKENS": str(generation.max_tokens),
        "RAGOPS_GENERATION_TIMEOUT_SECONDS": str(generation.timeout_seconds),
        "RAGOPS_REQUESTS_PER_MINUTE_PER_CLIENT": str(limits.requests_per_minute_per_client),
        "RAGOPS_MAX_QUERY_CHARS": str(limits.max_query_chars),
        "RAGOPS_RETRIEVAL_TIMEOUT_MS": str(limits.retrieval_timeout_ms),
        "RAGOPS_MAX_CONCURRENT_REQUESTS": str(limits.max_concurrent_requests),
        "RAGOPS_TRUSTED_CLIENT_HEADER": ctx.trusted_client_header,
        # ragops_feedback_raters counts the raters of the SLO window, for the satisfaction SLO's minimum.
        "RAGOPS_FEEDBACK_WINDOW_SECONDS": str(int(parse_duration(spec.slo.window).total_seconds())),
        "RAGOPS_CACHE_TTL_SECONDS": str(cache.ttl_seconds),
        "RAGOPS_CACHE_MAX_ENTRIES": str(cache.max_entries),
        "RAGOPS_CACHE_BACKEND": cache.backend,
        "RAGOPS_JOB_CONCURRENCY": str(jobs.concurrency),
        "RAGOPS_JOB_MAX_QUERIES": str(jobs.max_queries_per_job),
        "RAGOPS_JOB_MAX_ATTEMPTS": str(jobs.max_attempts),
        "RAGOPS_JOB_RETENTION_SECONDS": str(int(parse_duration(jobs.retention).total_seconds())),
        # Only with tracing on: a deployment without it keeps the pod template (and hash) it had.
        "RAGOPS_OTLP_ENDPOINT": spec.tracing.otlp_endpoint,
        "RAGOPS_TRACE_SAMPLING_RATIO": str(spec.tracing.sampling_ratio) if spec.tracing.otlp_endpoint else None,
    }
    return {key: value for key, value in settings.items() if value is not None}


def runtime_secret_env(ctx: RuntimeContext) -> list[Manifest]:
    """The credentials of the runtime, as secretKeyRef env vars (names and keys, never values)."""
    env = [secret_env(DSN_ENV, ctx.store.dsn_secret_ref)]
    if ctx.spec.store.read_only_dsn_secret_ref is not None:
        env.append(secret_env(READ_ONLY_DSN_ENV, ctx.spec.store.read_only_dsn_secret_ref))
    if ctx.spec.generation.api_key_secret_ref is not None:
        env.append(secret_env(ANTHROPIC_API_KEY_ENV, ctx.spec.generation.api_key_secret_ref))
    if ctx.spec.cache.redis_url_secret_ref is not None:
        # The URL can carry a password: a secretKeyRef, never a ConfigMap value.
        env.append(secret_env(CACHE_REDIS_URL_ENV, ctx.spec.cache.redis_url_secret_ref))
    if ctx.spec.openai.api_keys_secret_ref is not None:
        env.append(secret_env(API_KEYS_ENV, ctx.spec.openai.api_keys_secret_ref))
    return env


def _resources(ctx: RuntimeContext) -> Manifest:
    resources = ctx.spec.runtime.resources
    rendered: Manifest = {}
    if resources.requests:
        rendered["requests"] = dict(resources.requests)
    if resources.limits:
        rendered["limits"] = dict(resources.limits)
    return rendered


def runtime_template_hash(ctx: RuntimeContext) -> str:
    """A 12-hex digest of what the runtime pods run: image, resources, settings and secret refs.

    It names a runtime revision (status.runtimeRevision, rollback history), so it changes exactly
    when pods must be replaced: replicas and autoscaling are not inputs, and neither is the
    knowledge-base version, which the runtime switches to live through the store. The secret
    references (which Secret and key, not their values) are inputs because pointing at another
    Secret does replace the pods.
    """
    return content_hash(
        {
            "image": ctx.image,
            "resources": _resources(ctx),
            "settings": runtime_settings_env(ctx),
            "secrets": runtime_secret_env(ctx),
        }
    )


def _name(ctx: RuntimeContext) -> str:
    return child_name(ctx.name, COMPONENT)


def _labels(ctx: RuntimeContext) -> dict[str, str]:
    return common_labels(RAG_DEPLOYMENT.kind, ctx.name, COMPONENT)


def _selector(ctx: RuntimeContext) -> dict[str, str]:
    return selector_labels(ctx.name, COMPONENT)


def _meta(ctx: RuntimeContext) -> Manifest:
    owner = owner_reference(RAG_DEPLOYMENT.api_version, RAG_DEPLOYMENT.kind, ctx.name, ctx.uid)
    return object_meta(_name(ctx), ctx.namespace, _labels(ctx), owner)


def build_service_account(ctx: RuntimeContext) -> Manifest:
    """A ServiceAccount of the runtime's own, with no API token: the runtime never calls the API.

    Its own account (not `default`) keeps any RBAC granted to `default` in the namespace away
    from a pod that answers untrusted queries.
    """
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _meta(ctx),
        "automountServiceAccountToken": False,
    }


def template_object_name(ctx: RuntimeContext, template_hash: str) -> str:
    """Name of one template's settings ConfigMap and of its ControllerRevision."""
    return child_name(ctx.name, f"{COMPONENT}-{template_hash}")


def _template_meta(ctx: RuntimeContext, template_hash: str) -> Manifest:
    owner = owner_reference(RAG_DEPLOYMENT.api_version, RAG_DEPLOYMENT.kind, ctx.name, ctx.uid)
    labels = {**_labels(ctx), RUNTIME_HASH_LABEL: template_hash}
    return object_meta(template_object_name(ctx, template_hash), ctx.namespace, labels, owner)


def build_config_map(ctx: RuntimeContext, template_hash: str) -> Manifest:
    """The runtime's plain settings for one template, mounted into the container with `envFrom`.

    Immutable: a settings change is a new template, hence a new ConfigMap and a rolling update,
    never an edit under running pods (which would only see it at their next restart).
    """
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _template_meta(ctx, template_hash),
        "immutable": True,
        "data": runtime_settings_env(ctx),
    }


def _probe(path: str, period_seconds: int, failure_threshold: int) -> Manifest:
    return {
        "httpGet": {"path": path, "port": PORT_NAME},
        "periodSeconds": period_seconds,
        "timeoutSeconds": 2,
        "failureThreshold": failure_threshold,
    }


def _spread(ctx: RuntimeContext, topology_key: str) -> Manifest:
    return {
        "maxSkew": 1,
        "topologyKey": topology_key,
        # ScheduleAnyway: spreading is a preference; a single-zone or single-node cluster must
        # still run every replica.
        "whenUnsatisfiable": "ScheduleAnyway",
        "labelSelector": {"matchLabels": _selector(ctx)},
        # Count only the pods of the current ReplicaSet, so a rollout's old pods, about to go,
        # do not skew where the new ones land.
        "matchLabelKeys": ["pod-template-hash"],
    }


def build_deployment(ctx: RuntimeContext, template_hash: str) -> Manifest:
    """The runtime Deployment; `template_hash` is `runtime_template_hash(ctx)`, passed in so the
    caller computes it once and records the same value in status."""
    container: Manifest = {
        "name": CONTAINER_NAME,
        "image": ctx.image,
        "command": ["ragops", "serve"],
        "ports": [{"name": PORT_NAME, "containerPort": RUNTIME_PORT, "protocol": "TCP"}],
        "envFrom": [{"configMapRef": {"name": template_object_name(ctx, template_hash)}}],
        "env": [
            {"name": POD_ENV, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            *runtime_secret_env(ctx),
        ],
        # The startup probe covers connecting to the store and loading the active version (up
        # to 2s * 60); liveness only starts after it, so a slow start is not killed as hung.
        "startupProbe": _probe("/healthz", period_seconds=2, failure_threshold=60),
        # /healthz ignores dependencies: restarting a pod never fixes its database.
        "livenessProbe": _probe("/healthz", period_seconds=10, failure_threshold=3),
        "readinessProbe": _probe("/readyz", period_seconds=5, failure_threshold=2),
        "resources": _resources(ctx),
        "securityContext": restricted_container_security_context(),
        "volumeMounts": [tmp_mount()],
    }
    template_annotations = {
        RUNTIME_HASH_ANNOTATION: template_hash,
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(RUNTIME_PORT),
        "prometheus.io/path": METRICS_PATH,
    }
    spec: Manifest = {
        "selector": {"matchLabels": _selector(ctx)},
        # Surge before removing, so a rollout never dips below the serving capacity.
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
        "template": {
            "metadata": {"labels": _labels(ctx), "annotations": template_annotations},
            "spec": {
                "serviceAccountName": _name(ctx),
                "automountServiceAccountToken": False,
                # Service links would inject e.g. RAGOPS_PORT=tcp://... for a Service named
                # "ragops" in the namespace: a RAGOPS_* variable the runtime would try to read.
                "enableServiceLinks": False,
                "securityContext": restricted_pod_security_context(),
                "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
                "topologySpreadConstraints": [_spread(ctx, ZONE_TOPOLOGY_KEY), _spread(ctx, HOST_TOPOLOGY_KEY)],
                "containers": [container],
                "volumes": [tmp_volume("256Mi")],
            },
        },
    }
    if ctx.spec.runtime.autoscaling is None:
        spec = {"replicas": ctx.spec.runtime.replicas, **spec}
    # With autoscaling, `replicas` is left out on purpose: under server-side apply, a field the
    # operator sets is a field it owns, and every reconcile would reset the HPA's choice.
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(ctx), "spec": spec}


def build_service(ctx: RuntimeContext) -> Manifest:
    """A ClusterIP Service on port 80 in front of the runtime's `http` port."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(ctx),
        "spec": {
            "type": "ClusterIP",
            "selector": _selector(ctx),
            "ports": [{"name": PORT_NAME, "port": SERVICE_PORT, "targetPort": PORT_NAME, "protocol": "TCP"}],
        },
    }


def build_pod_disruption_budget(ctx: RuntimeContext) -> Manifest:
    """At most one runtime pod voluntarily evicted (node drains, upgrades) at a time.

    `maxUnavailable: 1` rather than `minAvailable`: with one replica (or the HPA's minimum of
    one), `minAvailable: 1` would forbid every eviction and block node drains forever, while
    `maxUnavailable` follows whatever size the Deployment or HPA has chosen.
    """
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(ctx),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": _selector(ctx)},
            # A pod that is not Ready serves nothing: evicting it costs no availability, and
            # protecting it would let a crash-looping pod block a drain.
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


def build_horizontal_pod_autoscaler(ctx: RuntimeContext) -> Manifest | None:
    """An autoscaling/v2 HPA on CPU utilization, or None without `spec.runtime.autoscaling`.

    Utilization is a percentage of the CPU *request*, so the runtime needs a CPU request for the
    HPA to act (the spec's default resources have one).
    """
    autoscaling = ctx.spec.runtime.autoscaling
    if autoscaling is None:
        return None
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _meta(ctx),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": _name(ctx)},
            "minReplicas": autoscaling.min_replicas,
            "maxReplicas": autoscaling.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": autoscaling.target_cpu_utilization},
                    },
                }
            ],
        },
    }


def build_network_policy(ctx: RuntimeContext) -> Manifest:
    """Ingress to the runtime's port from its own namespace and from Prometheus; egress open.

    Only Ingress is listed in policyTypes, so egress stays unrestricted: the runtime must reach
    PostgreSQL, the Anthropic API, a reranker and DNS, whose addresses the spec does not know.
    Traffic from elsewhere (an ingress controller in its own namespace) needs a NetworkPolicy of
    the user's; policies add up, so one allowing it is enough.
    """
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(ctx),
        "spec": {
            "podSelector": {"matchLabels": _selector(ctx)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [
                        {"podSelector": {}},
                        {"namespaceSelector": {}, "podSelector": {"matchLabels": dict(MONITORING_POD_LABELS)}},
                    ],
                    "ports": [{"protocol": "TCP", "port": RUNTIME_PORT}],
                }
            ],
        },
    }


def build_service_monitor(ctx: RuntimeContext) -> Manifest:
    """A Prometheus Operator ServiceMonitor scraping the runtime's /metrics every 15s.

    The SLO checks read these metrics; the pod's `prometheus.io/*` annotations serve Prometheus
    set-ups without the operator (configure one of the two, or each pod is scraped twice).
    """
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": _meta(ctx),
        "spec": {
            "selector": {"matchLabels": _selector(ctx)},
            "endpoints": [{"port": PORT_NAME, "path": METRICS_PATH, "interval": SCRAPE_INTERVAL}],
        },
    }


@dataclass(frozen=True)
class StoredTemplate:
    """What one runtime revision ran: its settings ConfigMap and its pod template."""

    template_hash: str
    config_map: Manifest
    pod_template: Manifest

    @classmethod
    def from_controller_revision(cls, revision: Mapping[str, Any]) -> StoredTemplate:
        labels = (revision.get("metadata") or {}).get("labels") or {}
        data = revision.get("data") or {}
        return cls(labels[RUNTIME_HASH_LABEL], dict(data["configMap"]), dict(data["podTemplate"]))


def build_controller_revision(ctx: RuntimeContext, template_hash: str, revision: int) -> Manifest:
    """The record of one runtime template, owned by the RagDeployment (collected with it).

    `revision` orders records (the spec generation that first rendered the template). Its data is
    immutable in the API, so the caller creates it once and never updates it.
    """
    deployment = build_deployment(ctx, template_hash)
    return {
        "apiVersion": "apps/v1",
        "kind": "ControllerRevision",
        "metadata": _template_meta(ctx, template_hash),
        "revision": revision,
        "data": {"configMap": build_config_map(ctx, template_hash), "podTemplate": deployment["spec"]["template"]},
    }


def build_runtime_children(ctx: RuntimeContext, served: StoredTemplate | None = None) -> list[Manifest]:
    """Every object of the runtime, in apply order.

    The ServiceAccount and ConfigMap come before the Deployment whose pods need them, and the
    NetworkPolicy before any pod exists, so no runtime pod is ever reachable unprotected.
    `served`, when given, is an older revision's template to run instead of the spec's (after a
    rollback); everything else (replicas, Service, budgets) still follows the current spec.
    """
    template_hash = runtime_template_hash(ctx)
    config_map = build_config_map(ctx, template_hash)
    deployment = build_deployment(ctx, template_hash)
    if served is not None and served.template_hash != template_hash:
        config_map = served.config_map
        deployment = {**deployment, "spec": {**deployment["spec"], "template": served.pod_template}}
    children: list[Manifest | None] = [
        build_service_account(ctx),
        config_map,
        build_network_policy(ctx),
        build_service(ctx),
        deployment,
        build_pod_disruption_budget(ctx),
        build_horizontal_pod_autoscaler(ctx),
        build_service_monitor(ctx),
    ]
    return [child for child in children if child is not None]
