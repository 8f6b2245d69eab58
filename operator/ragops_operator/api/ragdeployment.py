"""RagDeployment: a served RAG endpoint, its knowledge-base version, limits, SLOs and rollout policy.

Pure models only: the CRD schema is generated from them (see crdgen). Every default here is
also the CRD default, so `kubectl get -o yaml` shows the settings the operator acts on.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from .common import (
    ALLOW_LINK_LOCAL_DESCRIPTION,
    ApiModel,
    Conditions,
    DnsLabel,
    DnsSubdomain,
    Duration,
    HeaderName,
    HttpUrl,
    ImageReference,
    ResourceList,
    Rule,
    SecretKeyRef,
    StatusModel,
    Text,
    duration_between,
    not_link_local,
    parse_duration,
    parse_quantity,
)
from .conditions import RagDeploymentPhase
from .rollout import BlueGreenStrategy, RolloutStatus, RolloutStrategy


class KnowledgeBaseRef(ApiModel):
    """The knowledge base served and the version to promote to."""

    name: DnsLabel = Field(description="Name of the knowledge base (spec.knowledgeBase of its versions).")
    version: DnsSubdomain = Field(
        description=(
            "Name of the KnowledgeBaseVersion to serve, in this namespace. It is promoted only "
            "once Ready with its gate passed; until then the current version keeps serving."
        )
    )


def _quantity(side: str) -> str:
    """CEL: the quantity of resource `k` in `self.<side>` (an int-or-string, so made a string first)."""
    return f"quantity(string(self.{side}[k]))"


def _overcommittable(name: str) -> bool:
    """Whether the kubelet lets a container's request stay below its limit (Kubernetes' IsOvercommitAllowed)."""
    return not name.startswith("hugepages-") and "/" not in name


class ResourceRequirements(ApiModel):
    """Compute resources of one runtime container, as in a Pod spec."""

    rules = (
        Rule(
            cel=(
                "self.requests.all(k, !(k in self.limits) || "
                f"{_quantity('requests')}.compareTo({_quantity('limits')}) <= 0)"
            ),
            message="each request must be less than or equal to its limit",
            field_path=".requests",
            holds=lambda r: all(
                parse_quantity(value) <= parse_quantity(r.limits[name])
                for name, value in r.requests.items()
                if name in r.limits
            ),
        ),
        Rule(
            cel=(
                "self.requests.all(k, !(k.startsWith('hugepages-') || k.contains('/')) || "
                f"(k in self.limits && {_quantity('requests')}.compareTo({_quantity('limits')}) == 0))"
            ),
            message="hugepages and extended resources (example.com/gpu) need a limit equal to their request",
            field_path=".limits",
            holds=lambda r: all(
                _overcommittable(name) or (name in r.limits and parse_quantity(value) == parse_quantity(r.limits[name]))
                for name, value in r.requests.items()
            ),
        ),
    )

    requests: ResourceList = Field(
        default={}, description="Minimum resources the scheduler reserves, e.g. cpu: 250m, memory: 512Mi."
    )
    limits: ResourceList = Field(default={}, description="Maximum resources the container may use, e.g. memory: 1Gi.")


class AutoscalingSpec(ApiModel):
    """A HorizontalPodAutoscaler for the runtime; replicas is then only the starting size."""

    rules = (
        Rule(
            cel="self.maxReplicas >= self.minReplicas",
            message="maxReplicas must be greater than or equal to minReplicas",
            field_path=".maxReplicas",
            holds=lambda a: a.max_replicas >= a.min_replicas,
        ),
    )

    min_replicas: int = Field(default=2, ge=1, le=1000, description="Fewest replicas the autoscaler keeps.")
    max_replicas: int = Field(ge=1, le=1000, description="Most replicas the autoscaler may run.")
    target_cpu_utilization: int = Field(
        default=70,
        alias="targetCPUUtilization",
        ge=1,
        le=100,
        description="Average CPU utilization, in percent of requests, to hold.",
    )


class RuntimeStoreSpec(ApiModel):
    """How the runtime reaches the store past one database node."""

    read_only_dsn_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description=(
            "Secret key holding a libpq connection string to read-only replicas of the version's store (a "
            "CloudNativePG -ro Service): the runtime reads chunks there once a replica holds the served "
            "version, and on the primary until then or while no replica answers. Builds, activation, the "
            "traffic split and every write use the KnowledgeBaseVersion's spec.store.dsnSecretRef (the "
            "primary). Only the runtime pods read this Secret, never the operator."
        ),
    )


class RuntimeSpec(ApiModel):
    """The runtime pods that answer queries."""

    image: ImageReference | None = Field(
        default=None,
        description="Runtime container image; the operator's matching ragops image when omitted.",
    )
    replicas: int = Field(default=2, ge=0, le=1000, description="Number of runtime pods (without autoscaling).")
    resources: ResourceRequirements = Field(
        default=ResourceRequirements(
            requests={"cpu": "250m", "memory": "512Mi"},
            limits={"memory": "1Gi"},
        ),
        description="Resources of the runtime container.",
    )
    autoscaling: AutoscalingSpec | None = Field(
        default=None, description="Scale the runtime with a HorizontalPodAutoscaler."
    )


class RerankerSpec(ApiModel):
    """An optional second-stage reranker."""

    rules = (
        Rule(
            cel="self.provider != 'http' || has(self.endpoint)",
            message="the http reranker needs an endpoint",
            field_path=".endpoint",
            holds=lambda r: r.provider != "http" or r.endpoint is not None,
        ),
        not_link_local("endpoint", "endpoint"),
    )

    provider: Literal["none", "http"] = Field(
        default="none",
        description="none keeps the retrieval order; http calls a Cohere/TEI-style /rerank endpoint.",
    )
    endpoint: HttpUrl | None = Field(default=None, description="URL of the /rerank endpoint.")
    model: Text | None = Field(default=None, description="Reranker model name, if it needs one.")
    timeout_ms: int = Field(
        default=1000,
        ge=10,
        le=60000,
        description="Give up reranking after this long and keep the retrieval order.",
    )
    allow_link_local: bool | None = Field(
        default=None, description=ALLOW_LINK_LOCAL_DESCRIPTION.format(field="endpoint")
    )


class FusionSpec(ApiModel):
    """How hybrid retrieval merges the vector and BM25 rankings: weighted reciprocal rank fusion.

    A chunk scores the sum of weight / (rrfK + rank) over the rankings it appears in.
    """

    rules = (
        Rule(
            cel="self.vectorWeight > 0.0 || self.lexicalWeight > 0.0",
            message="at least one of vectorWeight and lexicalWeight must be above 0",
            holds=lambda f: f.vector_weight > 0 or f.lexical_weight > 0,
        ),
    )

    vector_weight: float = Field(default=1.0, ge=0, le=10, description="Weight of the vector (semantic) ranking.")
    lexical_weight: float = Field(default=1.0, ge=0, le=10, description="Weight of the BM25 (lexical) ranking.")
    rrf_k: int = Field(
        default=60, ge=1, le=1000, description="RRF constant: larger values flatten the difference between ranks."
    )


class RetrievalSpec(ApiModel):
    """How chunks are retrieved for a query."""

    rules = (
        Rule(
            cel="self.rerankTopK <= self.topK",
            message="rerankTopK must be less than or equal to topK",
            field_path=".rerankTopK",
            holds=lambda r: r.rerank_top_k <= r.top_k,
        ),
    )

    top_k: int = Field(default=20, ge=1, le=200, description="Candidates retrieved per query.")
    rerank_top_k: int = Field(
        default=5, ge=1, le=50, description="Chunks kept after reranking and passed to generation."
    )
    hybrid: bool = Field(
        default=True,
        description="Fuse vector search with BM25 full-text search (both in PostgreSQL) by reciprocal rank fusion.",
    )
    fusion: FusionSpec = Field(default=FusionSpec(), description="How hybrid retrieval weighs its two rankings.")
    reranker: RerankerSpec = Field(default=RerankerSpec(), description="Optional second-stage reranker.")


class GenerationSpec(ApiModel):
    """Answer generation from the retrieved context."""

    rules = (
        Rule(
            cel="self.provider != 'anthropic' || has(self.apiKeySecretRef)",
            message="the anthropic provider needs apiKeySecretRef",
            field_path=".apiKeySecretRef",
            holds=lambda g: g.provider != "anthropic" or g.api_key_secret_ref is not None,
        ),
    )

    provider: Literal["anthropic", "none"] = Field(
        default="none",
        description="anthropic generates cited answers; none answers with the retrieved chunks only.",
    )
    model: Text = Field(default="claude-sonnet-4-6", min_length=1, description="Anthropic model name.")
    max_tokens: int = Field(default=500, ge=1, le=8192, description="Most output tokens per answer.")
    api_key_secret_ref: SecretKeyRef | None = Field(
        default=None, description="Secret key holding the Anthropic API key."
    )
    timeout_seconds: int = Field(
        default=30,
        ge=1,
        le=300,
        description="Give up generating after this long and answer retrieval-only, marked degraded.",
    )


class LimitsSpec(ApiModel):
    """Protection of the runtime and its dependencies."""

    requests_per_minute_per_client: int = Field(
        default=100, ge=1, le=1_000_000, description="Token-bucket rate per client; excess gets 429."
    )
    max_query_chars: int = Field(default=2000, ge=1, le=100_000, description="Longer queries are refused with 422.")
    retrieval_timeout_ms: int = Field(
        default=2000, ge=10, le=60_000, description="Give up retrieval after this long with 503."
    )
    max_concurrent_requests: int = Field(
        default=64,
        ge=1,
        le=10_000,
        description="In-flight queries per replica; more are refused fast with 503.",
    )
    trusted_client_header: HeaderName | None = Field(
        default=None,
        description=(
            "Header the ingress or gateway in front of the runtime sets to the caller's identity (e.g. X-Real-IP; "
            "for X-Forwarded-For its last entry). The per-client rate limit and the one-rating-per-rater rule key "
            "on it; unset: the operator's default (chart runtimeDefaults.trustedClientHeader), else the TCP peer "
            "address. Name a header the gateway always overwrites, never one clients set themselves."
        ),
    )


class CacheSpec(ApiModel):
    """The answer cache, keyed by KB version, normalized query and parameters."""

    rules = (
        Rule(
            cel="self.backend != 'redis' || has(self.redisUrlSecretRef)",
            message="the redis cache backend needs redisUrlSecretRef",
            field_path=".redisUrlSecretRef",
            holds=lambda c: c.backend != "redis" or c.redis_url_secret_ref is not None,
        ),
    )

    backend: Literal["memory", "redis"] = Field(
        default="memory",
        description=(
            "memory keeps answers in each replica; redis shares them between all replicas. An unreachable "
            "Redis means answering without the cache, never failing a query."
        ),
    )
    ttl_seconds: int = Field(
        default=600, ge=0, le=604_800, description="How long an answer is reused; 0 disables the cache."
    )
    max_entries: int = Field(
        default=10_000,
        ge=0,
        le=10_000_000,
        description="Most answers kept per replica (memory backend; bound Redis with its maxmemory policy).",
    )
    redis_url_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description="Secret key holding the redis:// or rediss:// URL (with any password) of the shared cache.",
    )


class JobsSpec(ApiModel):
    """Async and batch queries (POST /v1/jobs): a queue in the store, worked by every replica."""

    rules = (duration_between("retention", "retention", "1m", "8760h"),)

    concurrency: int = Field(
        default=4, ge=0, le=1000, description="Job queries each replica works on at once; 0 leaves jobs to others."
    )
    max_queries_per_job: int = Field(
        default=100, ge=1, le=10_000, description="Most queries in one job; larger jobs are refused with 422."
    )
    max_attempts: int = Field(
        default=5, ge=1, le=100, description="Attempts per job query on transient failures before it fails."
    )
    retention: Duration = Field(default="168h", description="How long finished jobs and their answers are kept.")


class SloSpec(ApiModel):
    """Service-level objectives checked against Prometheus; breaches trigger rollback."""

    rules = (
        # A window under a second is an empty PromQL range, an interval of 0 a busy loop.
        duration_between("window", "window", "1s", "8760h"),
        duration_between("checkInterval", "check_interval", "1s", "8760h"),
        Rule(
            cel="duration(self.checkInterval) <= duration(self.window)",
            message="checkInterval must not be longer than window",
            field_path=".checkInterval",
            holds=lambda s: parse_duration(s.check_interval) <= parse_duration(s.window),
        ),
    )

    p95_latency_ms: int = Field(
        default=1000, ge=1, le=600_000, description="Highest acceptable 95th-percentile query latency."
    )
    max_error_rate: float = Field(default=0.01, ge=0, le=1, description="Highest acceptable share of failed queries.")
    min_satisfaction: float = Field(
        default=0.65, ge=0, le=1, description="Lowest acceptable mean user rating (feedback, 0..1)."
    )
    max_cost_per_query_usd: float = Field(
        default=0.01, ge=0, le=100, description="Highest acceptable mean cost per query, in US dollars."
    )
    window: Duration = Field(default="5m", description="Range over which each objective is measured.")
    check_interval: Duration = Field(default="15s", description="How often the objectives are checked.")
    failure_threshold: int = Field(
        default=3, ge=1, le=100, description="Consecutive breached checks that count as a failure."
    )
    min_requests: int = Field(
        default=20,
        ge=0,
        le=1_000_000,
        description="Fewer queries in the window make a check inconclusive: never a breach, never a pass.",
    )
    min_raters: int = Field(
        default=3,
        ge=0,
        le=1_000_000,
        description=(
            "Fewer distinct raters (trusted client identities) in the window leave satisfaction unjudged: "
            "never a breach, never a pass. One client cannot rate a revision into a rollback."
        ),
    )


class RolloutSpec(ApiModel):
    """Promotion and rollback policy, and how a new knowledge-base version reaches users."""

    auto_rollback: bool = Field(
        default=True, description="Roll back to the last known-good revision when the SLOs fail."
    )
    bake_time: Duration = Field(
        default="10m", description="How long a new revision is watched before it becomes known-good."
    )
    strategy: RolloutStrategy = Field(
        default=RolloutStrategy(blue_green=BlueGreenStrategy()),
        description=(
            "blueGreen (switch at once, then bake), canary (weighted steps with relative analysis) or shadow "
            "(mirror, analyse, switch). A progressive rollout starts when spec.knowledgeBase.version names a "
            "Ready version other than the one served; promotion at its end is followed by the bake."
        ),
    )


class MonitoringSpec(ApiModel):
    """Where the SLO metrics are read."""

    rules = (not_link_local("prometheusUrl", "prometheus_url"),)

    prometheus_url: HttpUrl | None = Field(
        default=None,
        description=("Base URL of the Prometheus HTTP API; without it SLOs are not checked and never roll back."),
    )
    allow_link_local: bool | None = Field(
        default=None, description=ALLOW_LINK_LOCAL_DESCRIPTION.format(field="prometheusUrl")
    )


class TracingSpec(ApiModel):
    """OpenTelemetry traces of the queries: one trace per query, a span per stage, sent over OTLP/HTTP."""

    rules = (not_link_local("otlpEndpoint", "otlp_endpoint"),)

    otlp_endpoint: HttpUrl | None = Field(
        default=None,
        description="OTLP/HTTP base URL of an OpenTelemetry collector (e.g. http://otel-collector.observability:4318); "
        "spans go to <url>/v1/traces. Unset, tracing is off.",
    )
    sampling_ratio: float = Field(
        default=1.0,
        ge=0,
        le=1,
        description="Share of queries traced; a caller's sampled traceparent is always followed. "
        "Export never delays a query: a slow collector loses spans instead.",
    )
    allow_link_local: bool | None = Field(
        default=None, description=ALLOW_LINK_LOCAL_DESCRIPTION.format(field="otlpEndpoint")
    )


class OpenAISpec(ApiModel):
    """The OpenAI-compatible routes of the runtime (POST /v1/chat/completions, GET /v1/models)."""

    api_keys_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description="Secret key holding the API keys (comma-separated) these routes require as "
        "`Authorization: Bearer <key>`; unset, they are open like /v1/query.",
    )


class RagDeploymentSpec(ApiModel):
    """The desired RAG endpoint."""

    rules = (
        Rule(
            cel="has(self.monitoring.prometheusUrl) || !has(self.rollout.strategy.shadow) && "
            "!(has(self.rollout.strategy.canary) && self.rollout.strategy.canary.steps.exists(s, has(s.analysis)))",
            message="analysis steps and the shadow strategy read Prometheus: set spec.monitoring.prometheusUrl",
            field_path=".monitoring.prometheusUrl",
            holds=lambda s: (
                s.monitoring.prometheus_url is not None
                or (
                    s.rollout.strategy.shadow is None
                    and not (
                        s.rollout.strategy.canary is not None
                        and any(step.analysis is not None for step in s.rollout.strategy.canary.steps)
                    )
                )
            ),
        ),
    )

    knowledge_base: KnowledgeBaseRef = Field(description="The knowledge base and version to serve.")
    runtime: RuntimeSpec = Field(default=RuntimeSpec(), description="The runtime pods.")
    store: RuntimeStoreSpec = Field(
        default=RuntimeStoreSpec(), description="Read-only replicas to read chunks from (the primary is the version's)."
    )
    retrieval: RetrievalSpec = Field(default=RetrievalSpec(), description="Retrieval settings.")
    generation: GenerationSpec = Field(default=GenerationSpec(), description="Generation settings.")
    limits: LimitsSpec = Field(default=LimitsSpec(), description="Rate, size, concurrency and time limits.")
    cache: CacheSpec = Field(default=CacheSpec(), description="Answer cache.")
    jobs: JobsSpec = Field(default=JobsSpec(), description="Async and batch queries.")
    slo: SloSpec = Field(default=SloSpec(), description="Service-level objectives.")
    rollout: RolloutSpec = Field(default=RolloutSpec(), description="Promotion and rollback policy.")
    monitoring: MonitoringSpec = Field(default=MonitoringSpec(), description="Metrics source for SLO checks.")
    tracing: TracingSpec = Field(default=TracingSpec(), description="OpenTelemetry traces of the queries.")
    openai: OpenAISpec = Field(default=OpenAISpec(), description="The OpenAI-compatible API.")


class SloMeasurement(StatusModel):
    """The latest SLO check."""

    verdict: Literal["Met", "Breached", "Inconclusive"] = Field(
        description="Met, Breached, or Inconclusive (too few requests or metrics unavailable)."
    )
    requests: float | None = Field(default=None, description="Queries in the window.")
    p95_latency_ms: float | None = Field(default=None, description="Measured 95th-percentile latency.")
    error_rate: float | None = Field(default=None, description="Measured share of failed queries.")
    satisfaction: float | None = Field(default=None, description="Measured mean user rating.")
    raters: float | None = Field(default=None, description="Distinct raters in the window (ragops_feedback_raters).")
    cost_per_query_usd: float | None = Field(default=None, description="Measured mean cost per query.")
    consecutive_breaches: int = Field(default=0, ge=0, description="Breached checks in a row.")
    checked_at: datetime = Field(description="When the check ran.")


class Revision(StatusModel):
    """One promoted combination of knowledge-base version and runtime template."""

    revision: int = Field(ge=1, description="Monotonic revision number.")
    kb_version: str = Field(max_length=253, description="KnowledgeBaseVersion served by this revision.")
    runtime_hash: str = Field(max_length=64, description="Hash of the rendered runtime pod template.")
    promoted_at: datetime = Field(description="When the revision was promoted.")
    outcome: Literal["Baking", "KnownGood", "Superseded", "RolledBack"] = Field(
        description="Baking, KnownGood, Superseded by a later revision, or RolledBack after an SLO breach."
    )
    message: str | None = Field(
        default=None,
        max_length=1024,
        description="Why it was rolled back (the breached objectives), kept after the Event has expired.",
    )


class RagDeploymentStatus(StatusModel):
    """Observed state of the deployment, written by the operator only."""

    observed_generation: int | None = Field(default=None, description="The .metadata.generation this status describes.")
    phase: RagDeploymentPhase | None = Field(
        default=None, description="Pending, Progressing, Baking, Healthy, Degraded or Failed."
    )
    active_version: str | None = Field(default=None, max_length=253, description="KnowledgeBaseVersion being served.")
    last_known_good_version: str | None = Field(
        default=None, max_length=253, description="Latest version that completed its bake without breaching the SLOs."
    )
    runtime_revision: str | None = Field(
        default=None, max_length=64, description="Hash of the live runtime pod template."
    )
    replicas: int | None = Field(default=None, ge=0, description="Runtime pods that exist.")
    ready_replicas: int | None = Field(default=None, ge=0, description="Runtime pods ready to serve.")
    conditions: Conditions = Field(
        default=[],
        description=(
            "Available, Progressing, Degraded, RolledBack and SLOHealthy; with the canary and shadow "
            "strategies also Promoted, Aborted and Paused (for kubectl wait); VersionDeleting while a "
            "version it keeps (serves, would roll back to, rolls out) is being deleted."
        ),
    )
    slo: SloMeasurement | None = Field(default=None, description="The latest SLO check.")
    history: list[Revision] = Field(
        default=[], max_length=20, description="Recent revisions, newest last; at most 20 are kept."
    )
    rollout: RolloutStatus | None = Field(
        default=None, description="Progressive delivery (canary and shadow strategies): steps, weight, analysis."
    )
