"""KnowledgeBaseVersion: one immutable version of a knowledge base.

The spec says what to build (sources, chunking, embedding, index) and how to judge it
(the golden set); the status says how far the operator got and what the gate measured.
Pure models only: the CRD schema is generated from them (see crdgen).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from .common import (
    ALLOW_LINK_LOCAL_DESCRIPTION,
    ApiModel,
    Conditions,
    ConfigMapKey,
    ConfigMapKeyRef,
    DnsLabel,
    DnsSubdomain,
    FileGlob,
    HttpUrl,
    Rule,
    SecretKeyRef,
    StatusModel,
    Text,
    VolumePath,
    not_link_local,
)
from .conditions import KnowledgeBaseVersionPhase


class StoreSpec(ApiModel):
    """Where the version's chunks, embeddings and index live: PostgreSQL with pgvector."""

    dsn_secret_ref: SecretKeyRef = Field(
        description=(
            "Secret key holding a libpq connection string (postgresql://user:pass@host:5432/db) "
            "of a PostgreSQL server with the pgvector extension."
        )
    )


class ConfigMapSource(ApiModel):
    """Documents stored as the data keys of a ConfigMap, one document per key."""

    name: DnsSubdomain = Field(description="Name of the ConfigMap, in the namespace of this resource.")
    keys: list[ConfigMapKey] | None = Field(
        default=None,
        min_length=1,
        max_length=1000,
        description="Keys to read; all keys of the ConfigMap when omitted.",
    )


PVC_DEFAULT_PATH = "/"
PVC_DEFAULT_INCLUDE = ("**/*.md", "**/*.txt", "**/*.html", "**/*.jsonl")


class PvcSource(ApiModel):
    """Documents on a PersistentVolumeClaim, mounted read-only into the build Job."""

    claim_name: DnsSubdomain = Field(description="Name of the PersistentVolumeClaim to mount read-only.")
    # No schema defaults inside a list item: the apiserver would add them to the user's list, and a
    # GitOps tool comparing lists would see every source as changed. Omitted means these:
    path: VolumePath | None = Field(
        default=None,
        description=f"Directory within the volume to read, absolute (e.g. /docs); {PVC_DEFAULT_PATH} when omitted.",
    )
    include: list[FileGlob] | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description=(
            "Glob patterns, relative to path, selecting the files to ingest; "
            f"{', '.join(PVC_DEFAULT_INCLUDE)} when omitted."
        ),
    )


class Source(ApiModel):
    """One place documents come from. Exactly one of configMap, url or pvc is set."""

    rules = (
        Rule(
            cel="[has(self.configMap), has(self.url), has(self.pvc)].filter(x, x).size() == 1",
            message="exactly one of configMap, url or pvc must be set",
            holds=lambda s: sum(x is not None for x in (s.config_map, s.url, s.pvc)) == 1,
        ),
        not_link_local("url", "url"),
    )

    config_map: ConfigMapSource | None = Field(
        default=None, description="Read documents from the data keys of a ConfigMap."
    )
    url: HttpUrl | None = Field(
        default=None,
        description="Fetch one document over HTTP(S): Markdown, plain text, HTML or JSONL records.",
    )
    pvc: PvcSource | None = Field(default=None, description="Read documents from files on a PersistentVolumeClaim.")
    allow_link_local: bool | None = Field(default=None, description=ALLOW_LINK_LOCAL_DESCRIPTION.format(field="url"))


class ChunkingSpec(ApiModel):
    """How documents are cut into chunks; sizes are in approximate tokens."""

    rules = (
        Rule(
            cel="self.overlap < self.size",
            message="overlap must be smaller than size",
            field_path=".overlap",
            holds=lambda c: c.overlap < c.size,
        ),
    )

    strategy: Literal["recursive", "fixed"] = Field(
        default="recursive",
        description=(
            "recursive splits on headings, then paragraphs, then sentences down to size; "
            "fixed cuts windows of size tokens."
        ),
    )
    size: int = Field(default=512, ge=32, le=8192, description="Target chunk size in approximate tokens.")
    overlap: int = Field(default=64, ge=0, le=4096, description="Tokens shared by consecutive chunks of one document.")


STATIC_MODEL = "wordllama-l2-supercat"
STATIC_DIMENSIONS = (64, 128, 256)


class EmbeddingSpec(ApiModel):
    """The model that turns chunks and queries into vectors; its name and dimensions define the version's space."""

    rules = (
        Rule(
            cel="self.provider != 'openai' || has(self.endpoint)",
            message="the openai provider needs an endpoint (an OpenAI-compatible /v1 base URL)",
            field_path=".endpoint",
            holds=lambda e: e.provider != "openai" or e.endpoint is not None,
        ),
        Rule(
            cel="self.provider != 'openai' || (has(self.model) && self.model != 'hashing-v1')",
            message="the openai provider needs the name of a served embedding model in model",
            field_path=".model",
            holds=lambda e: e.provider != "openai" or (e.model is not None and e.model != "hashing-v1"),
        ),
        Rule(
            cel=f"self.provider != 'static' || !has(self.model) || self.model == '{STATIC_MODEL}'",
            message=f"the static provider's model is {STATIC_MODEL}",
            field_path=".model",
            holds=lambda e: e.provider != "static" or e.model in (None, STATIC_MODEL),
        ),
        Rule(
            cel="self.provider != 'static' || !has(self.dimensions) || self.dimensions in [64, 128, 256]",
            message="the static model has 64, 128 or 256 dimensions (its Matryoshka prefixes)",
            field_path=".dimensions",
            holds=lambda e: e.provider != "static" or e.dimensions in (None, *STATIC_DIMENSIONS),
        ),
        Rule(
            cel="self.provider != 'hashing' || !has(self.model) || self.model == 'hashing-v1'",
            message="the hashing provider's model is hashing-v1",
            field_path=".model",
            holds=lambda e: e.provider != "hashing" or e.model in (None, "hashing-v1"),
        ),
        not_link_local("endpoint", "endpoint"),
    )

    provider: Literal["static", "hashing", "openai"] = Field(
        default="static",
        description=(
            "static (the default) is a semantic static-embedding model whose weights ship in the runtime "
            "image (WordLlama l2_supercat): offline, no API key, well under a millisecond per query; hashing "
            "is built in and deterministic but lexical, not semantic; openai calls any OpenAI-compatible "
            "/v1/embeddings endpoint (OpenAI, vLLM, TEI, Ollama)."
        ),
    )
    model: Text | None = Field(
        default=None,
        min_length=1,
        description=(
            f"Embedding model name; default {STATIC_MODEL} for static and hashing-v1 for hashing; required "
            "for openai. Part of the embedding space, so changing it re-embeds everything."
        ),
    )
    dimensions: int | None = Field(
        default=None,
        ge=8,
        le=2000,
        description=(
            "Vector dimensions, at most 2000 (the largest a pgvector HNSW index accepts); default 256 for "
            "static (64, 128 or 256: the model's Matryoshka prefixes) and 384 for the others."
        ),
    )

    @property
    def resolved_model(self) -> str:
        """The model name, the provider's default filled in (openai always names one, by rule)."""
        if self.model is not None:
            return self.model
        return STATIC_MODEL if self.provider == "static" else "hashing-v1"

    @property
    def resolved_dimensions(self) -> int:
        if self.dimensions is not None:
            return self.dimensions
        return 256 if self.provider == "static" else 384

    endpoint: HttpUrl | None = Field(
        default=None, description="Base URL of the OpenAI-compatible API, e.g. https://api.openai.com/v1."
    )
    api_key_secret_ref: SecretKeyRef | None = Field(
        default=None, description="Secret key holding the API key; omit for endpoints without auth."
    )
    batch_size: int = Field(default=64, ge=1, le=2048, description="Chunks sent per embedding request.")
    allow_link_local: bool | None = Field(
        default=None, description=ALLOW_LINK_LOCAL_DESCRIPTION.format(field="endpoint")
    )


class IndexSpec(ApiModel):
    """pgvector index parameters."""

    rules = (
        Rule(
            cel="self.efConstruction >= 2 * self.m",
            message="efConstruction must be at least 2 * m (a pgvector requirement)",
            field_path=".efConstruction",
            holds=lambda i: i.ef_construction >= 2 * i.m,
        ),
    )

    type: Literal["hnsw"] = Field(default="hnsw", description="Index type; HNSW is the one supported.")
    m: int = Field(default=16, ge=2, le=100, description="HNSW: maximum connections per layer.")
    ef_construction: int = Field(
        default=64, ge=4, le=1000, description="HNSW: size of the candidate list while building."
    )
    distance: Literal["cosine", "l2", "innerProduct"] = Field(
        default="cosine", description="Distance the index orders by."
    )


class GateThresholds(ApiModel):
    """Minimum golden-set scores, each in [0, 1]; a version below any of them fails its gate."""

    precision_at_k: float = Field(default=0.6, ge=0, le=1, description="Minimum mean precision@k.")
    recall_at_k: float = Field(default=0.8, ge=0, le=1, description="Minimum mean recall@k.")
    mrr: float = Field(default=0.5, ge=0, le=1, description="Minimum mean reciprocal rank.")
    ndcg_at_k: float = Field(default=0.6, ge=0, le=1, description="Minimum mean nDCG@k.")
    answer_pass_rate: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Minimum share of answerContains checks passed; checked only when a generator is set.",
    )


class GoldenSetSpec(ApiModel):
    """The labelled queries every version must answer well before it may be promoted."""

    config_map_ref: ConfigMapKeyRef = Field(
        description=("ConfigMap key holding the cases, as YAML or JSONL: {id, query, relevant, answerContains?}.")
    )
    k: int = Field(default=5, ge=1, le=100, description="Cut-off rank for the @k metrics.")
    thresholds: GateThresholds = Field(
        default=GateThresholds(), description="Minimum scores; the gate passes when all are met."
    )


MAX_BUILD_PARALLELISM = 16
"""The most pods one build runs as (the runtime's `kb.sharding.MAX_SHARDS`)."""


class BuildSpec(ApiModel):
    """How the build Job runs."""

    parallelism: int = Field(
        default=1,
        ge=1,
        le=MAX_BUILD_PARALLELISM,
        description=(
            "Pods building the version together, as an Indexed Job: each reads every source, then chunks, "
            "embeds and stores its own share of the documents; the last to finish builds the indexes and "
            "completes the version, equal to a one-pod build. A failed pod is retried alone and resumes its "
            "share. Worth it when embedding dominates (a remote API); every pod holds a store connection."
        ),
    )


class KnowledgeBaseVersionSpec(ApiModel):
    """What to build and how to judge it. Immutable: a change is a new version."""

    rules = (
        Rule(
            cel="self == oldSelf",
            message="spec is immutable: create a new KnowledgeBaseVersion instead",
        ),
    )

    knowledge_base: DnsLabel = Field(
        description=("Name of the knowledge base this is a version of; versions of one KB share an activation pointer.")
    )
    store: StoreSpec = Field(description="The PostgreSQL + pgvector store the version is built into.")
    sources: list[Source] = Field(min_length=1, max_length=100, description="Where the documents come from.")
    chunking: ChunkingSpec = Field(default=ChunkingSpec(), description="How documents are chunked.")
    embedding: EmbeddingSpec = Field(default=EmbeddingSpec(), description="How chunks are embedded.")
    index: IndexSpec = Field(default=IndexSpec(), description="pgvector index parameters.")
    build: BuildSpec = Field(default=BuildSpec(), description="How the build Job runs.")
    golden_set: GoldenSetSpec = Field(description="The evaluation gate the version must pass.")


class GateMetrics(StatusModel):
    """Mean golden-set scores over all cases."""

    precision_at_k: float = Field(description="Mean precision@k.")
    recall_at_k: float = Field(description="Mean recall@k.")
    mrr: float = Field(description="Mean reciprocal rank of the first relevant document.")
    ndcg_at_k: float = Field(description="Mean normalized discounted cumulative gain at k.")
    hit_rate: float = Field(description="Share of cases with at least one relevant document in the top k.")
    answer_pass_rate: float | None = Field(
        default=None, description="Share of answerContains checks passed, when a generator was used."
    )


class GateStatus(StatusModel):
    """The result of the golden-set evaluation."""

    metrics: GateMetrics = Field(description="Mean scores over all cases.")
    passed: bool = Field(description="Whether every threshold was met.")
    cases: int = Field(ge=0, description="Number of golden-set cases evaluated.")
    failed_metrics: list[Annotated[str, StringConstraints(max_length=256)]] = Field(
        default=[], max_length=16, description="Metrics below their threshold, as name=value<threshold."
    )
    evaluated_at: datetime | None = Field(default=None, description="When the evaluation finished.")


class BoilerplateDropped(StatusModel):
    """What document cleaning removed before chunking, in characters of extracted text."""

    markup_chars: int = Field(ge=0, description="Text inside navigation, header, footer and sidebar markup.")
    repeated_blocks: int = Field(ge=0, description="Blocks dropped because they recur across a source's documents.")
    repeated_chars: int = Field(ge=0, description="Characters of those repeated blocks.")
    kept_chars: int = Field(ge=0, description="Characters of text kept and chunked.")
    dropped_share: float = Field(ge=0, le=1, description="Share of the extracted text dropped as boilerplate.")


class VersionManifest(StatusModel):
    """What exactly was built, as recorded in the store: enough to reproduce or audit the version."""

    embedding_provider: str = Field(max_length=64, description="Embedding provider used.")
    embedding_model: str = Field(max_length=256, description="Embedding model used.")
    dimensions: int = Field(description="Vector dimensions.")
    chunking: str = Field(max_length=128, description="Chunking strategy, size and overlap, e.g. recursive/512/64.")
    index: str = Field(max_length=128, description="Index type and parameters, e.g. hnsw/m=16/ef=64/cosine.")
    sources_digest: str = Field(max_length=128, description="SHA-256 over the sorted per-document content digests.")
    documents: int = Field(ge=0, description="Documents ingested.")
    chunks: int = Field(ge=0, description="Chunks stored.")
    reused_embeddings: int = Field(ge=0, description="Chunks whose embedding came from the cache.")
    boilerplate: BoilerplateDropped | None = Field(
        default=None, description="What cleaning dropped: navigation markup and repeated blocks."
    )
    build_seconds: float = Field(ge=0, description="Wall time of the build.")
    created_at: datetime = Field(description="When the build finished.")


class KnowledgeBaseVersionStatus(StatusModel):
    """Observed state of the version, written by the operator only."""

    observed_generation: int | None = Field(default=None, description="The .metadata.generation this status describes.")
    phase: KnowledgeBaseVersionPhase | None = Field(
        default=None, description="Pending, Building, Evaluating, Ready or Failed."
    )
    conditions: Conditions = Field(default=[], description="Built, GatePassed and Ready.")
    documents: int | None = Field(default=None, ge=0, description="Documents ingested.")
    chunks: int | None = Field(default=None, ge=0, description="Chunks stored.")
    reused_embeddings: int | None = Field(
        default=None, ge=0, description="Chunks whose embedding was reused from an earlier version."
    )
    gate: GateStatus | None = Field(default=None, description="The golden-set gate's result.")
    manifest: VersionManifest | None = Field(default=None, description="The version manifest.")
