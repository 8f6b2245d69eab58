"""The runtime's settings: the contract between the operator, which renders them, and the pods.

Every field is read from a `RAGOPS_`-prefixed environment variable (the operator renders a
ConfigMap for plain values and secretKeyRef env vars for credentials). Loaded once at start-up
by `ragops serve` and passed down; nothing reads the environment anywhere else.
"""

from __future__ import annotations

import socket
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .store import Fusion


class RuntimeSettings(BaseSettings):
    """Settings of one runtime process. Field names map to RAGOPS_<UPPER_SNAKE> variables."""

    model_config = SettingsConfigDict(env_prefix="RAGOPS_", extra="ignore", frozen=True, populate_by_name=True)

    # ---- where and what -----------------------------------------------------------------------
    dsn: SecretStr | None = Field(
        default=None, description="libpq DSN of PostgreSQL with pgvector; secret, never logged."
    )
    read_only_dsn: SecretStr | None = Field(
        default=None,
        description=(
            "libpq DSN of a streaming replica (a CloudNativePG -ro service) the chunks are read from; the "
            "activation pointer, the traffic split and every write stay on RAGOPS_DSN. Secret, never logged."
        ),
    )
    embedded: bool = Field(default=False, description="Use the embedded PostgreSQL in RAGOPS_DATA_DIR instead.")
    knowledge_base: str = Field(default="sample", min_length=1, description="Knowledge base served.")
    namespace: str = Field(default="default", description="Kubernetes namespace, a label on every metric.")
    deployment: str = Field(default="local", description="RagDeployment name, a label on every metric.")
    pod: str = Field(
        default_factory=socket.gethostname,
        validation_alias=AliasChoices("RAGOPS_POD", "POD_NAME", "HOSTNAME"),
        description="Pod name, a label on every metric.",
    )
    host: str = Field(default="0.0.0.0", description="Listen address.")
    port: int = Field(default=8080, ge=1, le=65535, description="Listen port.")

    # ---- retrieval ----------------------------------------------------------------------------
    top_k: int = Field(default=20, ge=1, le=200, description="Candidates retrieved per query.")
    rerank_top_k: int = Field(default=5, ge=1, le=50, description="Chunks kept for generation.")
    hybrid: bool = Field(default=True, description="Fuse vector search and BM25 full-text search.")
    fusion_vector_weight: float = Field(
        default=1.0, ge=0, le=10, description="Hybrid: weight of the vector ranking in reciprocal rank fusion."
    )
    fusion_lexical_weight: float = Field(
        default=1.0, ge=0, le=10, description="Hybrid: weight of the BM25 ranking in reciprocal rank fusion."
    )
    fusion_rrf_k: int = Field(
        default=60, ge=1, le=1000, description="Hybrid: the RRF constant; larger flattens the rank differences."
    )
    reranker_provider: Literal["none", "http"] = Field(default="none", description="Second-stage reranker.")
    reranker_endpoint: str | None = Field(default=None, description="Full URL of the /rerank endpoint.")
    reranker_model: str | None = Field(default=None, description="Reranker model name, if needed.")
    reranker_timeout_ms: int = Field(default=1000, ge=10, le=60_000, description="Reranker time budget.")
    embedding_api_key: SecretStr | None = Field(
        default=None, description="Key for an OpenAI-compatible embedding endpoint (query embeddings)."
    )
    query_embedding_cache_size: int = Field(default=4096, ge=0, le=1_000_000, description="LRU of query vectors.")

    # ---- generation ---------------------------------------------------------------------------
    generation_provider: Literal["anthropic", "none"] = Field(
        default="anthropic", description="anthropic, or none for retrieval-only answers."
    )
    generation_model: str = Field(default="claude-sonnet-4-6", description="Anthropic model id.")
    generation_max_tokens: int = Field(default=500, ge=1, le=8192, description="Most output tokens.")
    generation_timeout_seconds: float = Field(default=30, gt=0, le=300, description="Generation time budget.")
    anthropic_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("RAGOPS_ANTHROPIC_API_KEY", "ANTHROPIC_API_KEY"),
        description="Anthropic API key; without one the runtime answers retrieval-only, by design.",
    )
    anthropic_base_url: str | None = Field(default=None, description="Anthropic API base URL (a proxy or gateway).")
    price_table: str | None = Field(
        default=None, description='JSON {"model-prefix": {"input": usd_per_mtok, "output": usd_per_mtok}}.'
    )

    # ---- protection ---------------------------------------------------------------------------
    requests_per_minute_per_client: int = Field(
        default=100, ge=1, le=1_000_000, description="Rate per client (the trusted identity, see below)."
    )
    trusted_client_header: str | None = Field(
        default=None,
        pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$",
        max_length=64,
        description="Header the ingress or gateway sets to the caller's identity (e.g. X-Real-IP, X-Forwarded-For: "
        "its last entry); the rate limit and feedback raters key on it, else on the peer address. X-Client-Id "
        "only picks a rollout version, unless it is this header.",
    )
    max_query_chars: int = Field(
        default=2000,
        ge=1,
        le=100_000,
        description="Longer queries get 422. Also sizes the body limit of every POST but /v1/jobs "
        "(12 bytes a character + 16 KiB, at least 64 KiB): a larger body gets 413 before it is parsed.",
    )
    retrieval_timeout_ms: int = Field(default=2000, ge=10, le=60_000, description="Retrieval time budget.")
    max_concurrent_requests: int = Field(default=64, ge=1, le=10_000, description="In-flight queries; more get 503.")
    database_timeout_seconds: float = Field(default=2.0, gt=0, le=60, description="Wait for a pooled connection.")
    pool_size: int = Field(default=10, ge=1, le=200, description="Database connections per replica.")
    max_header_bytes: int = Field(
        default=16_384, ge=1024, le=1_048_576, description="Largest request line and headers; more gets 431."
    )
    read_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=600,
        description="A request's headers and body must arrive within this long of its first byte (and a new "
        "connection's first request within this long of connecting); slower clients get 408 and are cut.",
    )

    # ---- cache, log, version switch -----------------------------------------------------------
    cache_ttl_seconds: int = Field(default=600, ge=0, le=604_800, description="Answer cache TTL; 0 disables.")
    cache_max_entries: int = Field(
        default=10_000, ge=0, le=10_000_000, description="Answer cache size bound (memory backend only)."
    )
    cache_backend: Literal["memory", "redis"] = Field(
        default="memory", description="memory (per replica) or redis (shared by every replica)."
    )
    cache_redis_url: SecretStr | None = Field(
        default=None, description="redis:// or rediss:// URL of the shared cache; secret, never logged."
    )
    cache_redis_timeout_ms: int = Field(
        default=100, ge=1, le=10_000, description="Redis socket timeout; slower calls count as a miss."
    )
    feedback_window_seconds: int = Field(
        default=300,
        ge=1,
        le=31_536_000,
        description="Window of ragops_feedback_raters (distinct raters per version); the operator renders slo.window.",
    )
    answer_log_retention_days: int = Field(default=30, ge=1, le=3650, description="Answer log retention.")
    version_poll_seconds: float = Field(
        default=0.5, gt=0, le=60, description="Fallback check of the activation pointer besides LISTEN/NOTIFY."
    )
    shadow_max_concurrency: int = Field(
        default=4, ge=1, le=1000, description="Shadow retrievals in flight on a canary; more are dropped and counted."
    )

    # ---- OpenAI-compatible API and tracing ------------------------------------------------------
    api_keys: SecretStr | None = Field(
        default=None,
        description="Comma-separated keys the OpenAI-compatible routes (/v1/chat/completions, /v1/models) require "
        "as `Authorization: Bearer <key>`; without it they are open, like /v1/query.",
    )
    otlp_endpoint: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="OTLP/HTTP base URL of an OpenTelemetry collector (e.g. http://otel-collector:4318); "
        "traces are exported only when set.",
    )
    trace_sampling_ratio: float = Field(
        default=1.0, ge=0, le=1, description="Share of queries traced (the caller's sampled traceparent always is)."
    )

    # ---- async and batch jobs (POST /v1/jobs) ----------------------------------------------------
    job_concurrency: int = Field(
        default=4, ge=0, le=1000, description="Job queries this replica works on at once; 0 works none."
    )
    job_max_queries: int = Field(default=100, ge=1, le=10_000, description="Most queries in one job; more get 422.")
    job_max_body_bytes: int = Field(
        default=1_048_576, ge=1024, le=100_000_000, description="Largest POST /v1/jobs body; larger gets 413."
    )
    job_max_attempts: int = Field(
        default=5, ge=1, le=100, description="Attempts per job query before it fails (transient failures only)."
    )
    job_retry_base_seconds: float = Field(
        default=1.0, gt=0, le=3600, description="First retry delay; doubles per attempt, with jitter."
    )
    job_retry_max_seconds: float = Field(default=60.0, gt=0, le=86_400, description="Longest retry delay.")
    job_lease_seconds: float = Field(
        default=30.0, ge=0.5, le=3600, description="A lost replica's job queries are retried after this long."
    )
    job_poll_seconds: float = Field(default=0.5, gt=0, le=60, description="Idle wait between job queue polls.")
    job_retention_seconds: int = Field(
        default=604_800, ge=1, le=31_536_000, description="Finished jobs are kept this long, then purged."
    )

    @model_validator(mode="after")
    def _consistent(self) -> RuntimeSettings:
        if self.job_retry_max_seconds < self.job_retry_base_seconds:
            raise ValueError("RAGOPS_JOB_RETRY_MAX_SECONDS must not be below RAGOPS_JOB_RETRY_BASE_SECONDS")
        if self.rerank_top_k > self.top_k:
            raise ValueError("RAGOPS_RERANK_TOP_K must not exceed RAGOPS_TOP_K")
        if self.reranker_provider == "http" and not self.reranker_endpoint:
            raise ValueError("RAGOPS_RERANKER_PROVIDER=http needs RAGOPS_RERANKER_ENDPOINT")
        if self.cache_backend == "redis" and self.cache_redis_url is None:
            raise ValueError("RAGOPS_CACHE_BACKEND=redis needs RAGOPS_CACHE_REDIS_URL")
        if self.hybrid and self.fusion_vector_weight == 0 and self.fusion_lexical_weight == 0:
            raise ValueError("RAGOPS_FUSION_VECTOR_WEIGHT and RAGOPS_FUSION_LEXICAL_WEIGHT must not both be 0")
        if self.embedded == (self.dsn is not None):
            raise ValueError("set exactly one of RAGOPS_DSN and RAGOPS_EMBEDDED=true")
        if self.read_only_dsn is not None and self.dsn is None:
            raise ValueError("RAGOPS_READ_ONLY_DSN needs RAGOPS_DSN: the pointer and every write go to the primary")
        return self

    @property
    def fusion(self) -> Fusion:
        return Fusion(
            vector_weight=self.fusion_vector_weight, lexical_weight=self.fusion_lexical_weight, rrf_k=self.fusion_rrf_k
        )

    @property
    def max_body_bytes(self) -> int:
        """Largest body of every POST but /v1/jobs: what the longest allowed query can take, at least 64 KiB.

        12 bytes a character is a character outside the BMP written as a JSON surrogate-pair escape;
        16 KiB more is for the other fields and filters.
        """
        return max(65_536, 12 * self.max_query_chars + 16_384)

    @property
    def generation_enabled(self) -> bool:
        return self.generation_provider == "anthropic" and self.anthropic_api_key is not None
