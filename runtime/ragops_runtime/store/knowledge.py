"""The only module that talks to PostgreSQL about knowledge bases: versions, chunks, activation, search.

Layout, chosen by measurement (see README, "Storage layout"): one chunk table per knowledge base
and embedding space (provider, model, dimensions, distance, HNSW parameters), shared by all the
versions built in that space, plus a membership table (version id, chunk id). A new version
inserts only chunks that did not exist yet, so the HNSW index grows by the change instead of
being rebuilt; retrieval filters on membership while pgvector's iterative index scan keeps
reading the index until enough members are found. Dropping a version deletes its membership
and then every chunk no version references any more.

A version is `building` until `complete_version` writes its membership, documents and manifest
in one transaction: an interrupted build never looks complete, and a re-run reuses every chunk
already stored. Activation changes the pointer and notifies listeners in one transaction.

A build holds a lease on its version while it runs: a session-level advisory lock, which
PostgreSQL releases by itself when the builder's connection ends, however the builder ended
(`kill -9` included). A second build of the same version is refused while the lease is held, and
a version left `building` without one is an interrupted build: `fail_interrupted_builds` marks it
failed, and running the same build again resumes it.

Next to the pointer lives the traffic split of a progressive rollout (docs/design/progressive-delivery.md):
a candidate version, the percent of queries it answers, the percent of stable queries mirrored to
it, the step's identity and the golden-probe plan. Each change is one transaction that records
history and notifies on the activation channel, like a switch; activating a version clears it.

Every identifier derived from a user's name goes through `identifiers`; values are always bound
parameters. This module does no embedding, chunking or HTTP.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import math
import time
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import numpy as np
import psycopg
from numpy.typing import NDArray
from pgvector.psycopg import register_vector_async
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from ..errors import first_line
from .identifiers import derived_identifier, sanitized_name
from .migrations import ColumnMigration, IndexMigration, add_missing_columns, add_missing_indexes

Distance = Literal["cosine", "l2", "innerProduct"]
VersionStatus = Literal["building", "built", "failed"]
ACTIVATION_CHANNEL = "ragops_activation"
Vector = NDArray[np.float32]

# operator class for the index, and the operator that orders by distance (smaller is closer)
_DISTANCE_SQL: dict[str, tuple[str, str]] = {
    "cosine": ("vector_cosine_ops", "<=>"),
    "l2": ("vector_l2_ops", "<->"),
    "innerProduct": ("vector_ip_ops", "<#>"),
}
_TEXT_SEARCH_CONFIG = "english"
_BUILD_LEASE = int.from_bytes(b"rgkb", "big")
"""First key of the advisory lock a build holds on its version (the second is the version's id)."""
_EXTRACTION_BATCH = 2_000
"""Conversions per lookup: whole page texts, so a batch stays a few tens of MB at most."""
_LEASE_WAIT_SECONDS = 2.0
"""How long a build waits for a lease held only for a moment (by `fail_interrupted_builds`)."""
INTERRUPTED_BUILD = (
    "the build was interrupted: its builder stopped before completing (killed, or its connection to "
    "PostgreSQL was lost); run the same build again to resume it"
)
_META_DDL = [
    "CREATE SCHEMA IF NOT EXISTS ragops",
    """CREATE TABLE IF NOT EXISTS ragops.kb_versions (
        id serial PRIMARY KEY,
        kb text NOT NULL,
        version text NOT NULL,
        status text NOT NULL CHECK (status IN ('building', 'built', 'failed')),
        space jsonb NOT NULL,
        chunk_table text NOT NULL,
        settings jsonb NOT NULL,
        manifest jsonb,
        gate jsonb,
        gate_passed boolean,
        error text,
        created_at timestamptz NOT NULL DEFAULT now(),
        built_at timestamptz,
        evaluated_at timestamptz,
        UNIQUE (kb, version))""",
    """CREATE TABLE IF NOT EXISTS ragops.kb_documents (
        version_id integer NOT NULL REFERENCES ragops.kb_versions(id) ON DELETE CASCADE,
        document_id text NOT NULL,
        source text NOT NULL,
        title text,
        digest text NOT NULL,
        chunks integer NOT NULL,
        PRIMARY KEY (version_id, document_id))""",
    """CREATE TABLE IF NOT EXISTS ragops.kb_activation (
        kb text PRIMARY KEY,
        active_version_id integer REFERENCES ragops.kb_versions(id),
        previous_version_id integer REFERENCES ragops.kb_versions(id),
        updated_at timestamptz NOT NULL DEFAULT now())""",
    # The extraction cache of incremental builds: an HTML or reStructuredText text's conversion, by the
    # key of its content and of the converting code (kb/ingest.py, extraction_key). Shared by every
    # knowledge base; rows no version's documents name are collected (drop_version, gc).
    """CREATE TABLE IF NOT EXISTS ragops.kb_extractions (
        key text PRIMARY KEY,
        text text NOT NULL,
        title text,
        dropped_chars integer NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now())""",
    # Every gate verdict of a version, kept beside the earlier ones: what it was judged with (k,
    # thresholds, golden set's digest) and what it measured. kb_versions.gate/gate_passed mirror the
    # newest for readers that need only that.
    """CREATE TABLE IF NOT EXISTS ragops.kb_verdicts (
        id bigserial PRIMARY KEY,
        version_id integer NOT NULL REFERENCES ragops.kb_versions(id) ON DELETE CASCADE,
        passed boolean NOT NULL,
        k integer NOT NULL,
        thresholds jsonb NOT NULL,
        golden_digest text NOT NULL,
        metrics jsonb NOT NULL,
        report jsonb NOT NULL,
        evaluated_at timestamptz NOT NULL DEFAULT now())""",
    "CREATE INDEX IF NOT EXISTS kb_verdicts_version ON ragops.kb_verdicts (version_id, id)",
    """CREATE TABLE IF NOT EXISTS ragops.kb_activation_history (
        id bigserial PRIMARY KEY,
        kb text NOT NULL,
        action text NOT NULL,
        from_version text,
        to_version text NOT NULL,
        reason text NOT NULL DEFAULT '',
        at timestamptz NOT NULL DEFAULT now())""",
]
_COLUMN_MIGRATIONS: tuple[ColumnMigration, ...] = (
    # The traffic split of progressive delivery (see migrations.py for how they reach old stores).
    ("kb_activation", "canary_version_id", "integer REFERENCES ragops.kb_versions(id)"),
    ("kb_activation", "canary_weight", "smallint NOT NULL DEFAULT 0 CHECK (canary_weight BETWEEN 0 AND 100)"),
    ("kb_activation", "shadow_percent", "real NOT NULL DEFAULT 0 CHECK (shadow_percent BETWEEN 0 AND 100)"),
    ("kb_activation", "split_id", "text"),
    ("kb_activation", "probe", "jsonb"),
    ("kb_activation_history", "canary_weight", "smallint"),
    ("kb_activation_history", "shadow_percent", "real"),
    ("kb_activation_history", "split_id", "text"),
    # What an incremental build reuses a document by (see `reusable_chunks`, `cached_extractions`).
    ("kb_documents", "extraction_key", "text"),
    ("kb_documents", "chunking_key", "text"),
)
_INDEX_MIGRATIONS: tuple[IndexMigration, ...] = (
    (
        "kb_documents_chunking_key",
        "CREATE INDEX IF NOT EXISTS kb_documents_chunking_key ON ragops.kb_documents (chunking_key)",
    ),
    (
        "kb_documents_extraction_key",
        "CREATE INDEX IF NOT EXISTS kb_documents_extraction_key ON ragops.kb_documents (extraction_key)",
    ),
)


class StoreError(Exception):
    """A store operation cannot be done; the message says why, without credentials."""


class PgvectorMissing(StoreError):
    pass


class VersionConflict(StoreError):
    pass


class VersionBusy(StoreError):
    """Another process is building this version right now (it holds the version's build lease)."""


class ActivationRefused(StoreError):
    pass


@dataclass(frozen=True)
class EmbeddingSpace:
    """Everything that makes two vectors comparable and shareable in one HNSW index."""

    provider: str
    model: str
    dimensions: int
    distance: Distance = "cosine"
    m: int = 16
    ef_construction: int = 64

    def to_json(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "model": self.model,
            "dimensions": self.dimensions,
            "distance": self.distance,
            "m": self.m,
            "efConstruction": self.ef_construction,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EmbeddingSpace:
        return cls(
            provider=data["provider"],
            model=data["model"],
            dimensions=int(data["dimensions"]),
            distance=data["distance"],
            m=int(data["m"]),
            ef_construction=int(data["efConstruction"]),
        )

    @property
    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class VersionRecord:
    id: int
    kb: str
    version: str
    status: VersionStatus
    space: EmbeddingSpace
    chunk_table: str
    settings: dict[str, Any]
    manifest: dict[str, Any] | None
    gate: dict[str, Any] | None
    gate_passed: bool | None
    error: str | None
    created_at: datetime
    built_at: datetime | None


@dataclass(frozen=True)
class GateVerdict:
    """One run of the golden-set gate on a version: what it was judged with, what it measured, the outcome."""

    passed: bool
    k: int
    thresholds: dict[str, float | None]
    """Minimums by metric name, in the report's camelCase (precisionAtK, recallAtK, mrr, ndcgAtK, answerPassRate)."""
    golden_digest: str
    """SHA-256 of the golden set's cases (see `kb.evaluation.golden_set_digest`)."""
    metrics: dict[str, float]
    report: dict[str, Any]
    """The whole report (failed metrics, every case's ranking, the retrieval path)."""
    evaluated_at: datetime | None = None

    def to_json(self, *, with_report: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "passed": self.passed,
            "k": self.k,
            "thresholds": dict(self.thresholds),
            "goldenDigest": self.golden_digest,
            "metrics": dict(self.metrics),
            "evaluatedAt": self.evaluated_at.isoformat() if self.evaluated_at else None,
        }
        if with_report:
            out["report"] = self.report
        return out


@dataclass(frozen=True)
class GateRequirement:
    """What activation asks of a version's verdicts: a passing one judged at least this strictly.

    A verdict qualifies when it passed, was made at the same `k`, with each threshold named here
    at least as high, and (when `golden_digest` is given) on that golden set. A verdict made with
    weaker thresholds never qualifies, whenever it was recorded.
    """

    k: int | None
    thresholds: dict[str, float | None]
    golden_digest: str | None = None

    def met_by(self, verdict: GateVerdict) -> bool:
        if not verdict.passed or (self.k is not None and verdict.k != self.k):
            return False
        if self.golden_digest is not None and verdict.golden_digest != self.golden_digest:
            return False
        for name, minimum in self.thresholds.items():
            if minimum is None:
                continue
            used = verdict.thresholds.get(name)
            if used is None or used < minimum:
                return False
        return True

    def describe(self) -> str:
        parts = [f"k={self.k}"] if self.k is not None else []
        parts += [f"{name}>={value}" for name, value in self.thresholds.items() if value is not None]
        if self.golden_digest is not None:
            parts.append(f"golden set {self.golden_digest[:12]}")
        return ", ".join(parts)


@dataclass(frozen=True)
class Activation:
    kb: str
    active: str | None
    previous: str | None
    updated_at: datetime | None


@dataclass(frozen=True)
class ProbeQuery:
    """One golden probe: a question and, from the golden set, the documents that answer it."""

    query: str
    relevant_documents: tuple[str, ...] = ()
    """Empty for recorded production queries: they measure latency and overlap, not recall."""


@dataclass(frozen=True)
class ProbePlan:
    """Golden probes for a rollout: sent to both versions by one runtime replica at `per_minute`."""

    queries: tuple[ProbeQuery, ...]
    per_minute: float
    """Probe queries per minute and per version, over all replicas together."""
    top_k: int = 10

    def __post_init__(self) -> None:
        if not self.queries:
            raise ValueError("a probe plan needs at least one query")
        if any(not probe.query.strip() for probe in self.queries):
            raise ValueError("probe queries must not be empty")
        if not (math.isfinite(self.per_minute) and 0 < self.per_minute <= MAX_PROBES_PER_MINUTE):
            raise ValueError(f"probes per minute must be above 0 and at most {MAX_PROBES_PER_MINUTE}")
        if not 1 <= self.top_k <= 200:
            raise ValueError(f"probe top_k must be between 1 and 200, got {self.top_k}")

    def to_json(self) -> dict[str, Any]:
        return {
            "queries": [
                {"query": probe.query, "relevantDocuments": list(probe.relevant_documents)} for probe in self.queries
            ],
            "perMinute": self.per_minute,
            "topK": self.top_k,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ProbePlan:
        return cls(
            queries=tuple(
                ProbeQuery(query=str(q["query"]), relevant_documents=tuple(map(str, q.get("relevantDocuments", ()))))
                for q in data["queries"]
            ),
            per_minute=float(data["perMinute"]),
            top_k=int(data.get("topK", 10)),
        )


MAX_PROBES_PER_MINUTE = 6000.0
"""100 a second per version: far beyond what an analysis needs, low enough never to load a store."""


@dataclass(frozen=True)
class TrafficSplit:
    """Who answers the queries of one knowledge base: the stable version and, during a rollout, a candidate.

    `canary_weight` percent of clients are answered by the candidate; `shadow_percent` percent of
    the queries stable answers are also retrieved on the candidate (never shown). `split_id` names
    the step: it salts the sticky assignment, so a client keeps its version for the life of a step.
    """

    kb: str
    stable: str | None
    canary: str | None
    canary_weight: int
    shadow_percent: float
    split_id: str | None
    probe: ProbePlan | None
    updated_at: datetime | None

    @property
    def active(self) -> bool:
        """True while a candidate is part of the split (at any weight, shadow or probes)."""
        return self.canary is not None


@dataclass(frozen=True)
class ChunkRow:
    """A chunk ready to store: identity, provenance, text and its embedding."""

    document_id: str
    source: str
    position: int
    heading_path: tuple[str, ...]
    text: str
    text_digest: str
    token_count: int
    metadata: dict[str, Any]
    embedding: Vector
    context: str = ""

    @property
    def key(self) -> str:
        return chunk_key(self.document_id, self.position, self.heading_path, self.text, self.metadata, self.context)


def chunk_key(
    document_id: str,
    position: int,
    heading_path: Sequence[str],
    text: str,
    metadata: dict[str, Any],
    context: str = "",
) -> str:
    """Identity of a stored chunk: equal keys mean the row can be shared between versions."""
    parts = [document_id, str(position), "\x1e".join(heading_path), text, json.dumps(metadata, sort_keys=True)]
    if context:
        # Appended only when present, so chunks stored before chunks had a context keep their keys.
        parts.append(context)
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class DocumentRow:
    document_id: str
    source: str
    title: str | None
    digest: str
    chunks: int
    extraction_key: str | None = None
    """The key of the conversion its text came from (HTML and reStructuredText only)."""
    chunking_key: str | None = None
    """Identity of its chunks: equal keys in one chunk table mean the same chunks (see `reusable_chunks`)."""


@dataclass(frozen=True)
class RetrievedChunk:
    chunk_id: int
    document_id: str
    source: str
    position: int
    heading_path: tuple[str, ...]
    text: str
    score: float
    """Similarity for vector search (higher is closer), BM25 for text search, the fused score for hybrid."""
    metadata: dict[str, Any] = field(default_factory=dict)


def chunk_table_name(kb: str, space: EmbeddingSpace) -> str:
    return sanitized_name(kb, space.key, suffix="_chunks")


@dataclass(frozen=True)
class Fusion:
    """How hybrid search merges its halves: weighted reciprocal rank fusion.

    A chunk scores sum(weight / (rrf_k + rank)) over the rankings it appears in, each ranking
    `depth` deep (vector: the nearest chunks; lexical: BM25 over the chunks' words).
    """

    vector_weight: float = 1.0
    lexical_weight: float = 1.0
    rrf_k: int = 60

    def depth(self, k: int) -> int:
        """Candidates each half ranks for a fused top k: a chunk ranked just below k in both halves can win."""
        return max(2 * k, 40)


BM25_K1 = 1.2
BM25_B = 0.75
"""Okapi BM25's term-frequency saturation and length normalisation, at their usual values."""
LEXICAL_CANDIDATES_PER_TERM = 400
"""Postings read per query term, best impact first (see `KnowledgeStore.text_search`)."""

_CHUNK_COLUMNS = sql.SQL(
    "chunk_key, document_id, source, position, heading_path, text, text_digest, token_count, metadata, embedding, "
    "context"
)


class KnowledgeStore:
    """Knowledge-base storage over one async psycopg connection."""

    def __init__(self, connection: psycopg.AsyncConnection[Any], *, index_build_memory: str = "512MB") -> None:
        self._conn = connection
        self._leases: dict[int, bool] = {}
        """Versions this connection is building (holds the build lease of): id -> whether shared."""
        # pgvector builds an HNSW graph several times faster when it fits in maintenance_work_mem;
        # it is set per index build only, never for the server.
        self._index_build_memory = index_build_memory

    @classmethod
    async def connect(cls, dsn: str, *, index_build_memory: str = "512MB") -> KnowledgeStore:
        try:
            connection = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
        except psycopg.OperationalError as error:
            raise StoreError(f"cannot connect to PostgreSQL: {first_line(error)}") from None
        store = cls(connection, index_build_memory=index_build_memory)
        try:
            await store.ensure_schema()
        except BaseException:
            await connection.close()
            raise
        return store

    async def close(self) -> None:
        await self._conn.close()

    async def __aenter__(self) -> KnowledgeStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def connection(self) -> psycopg.AsyncConnection[Any]:
        return self._conn

    async def ensure_schema(self) -> None:
        available = await (
            await self._conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'")
        ).fetchone()
        if available is None:
            raise PgvectorMissing(
                "the pgvector extension is not installed on this PostgreSQL server "
                "(pg_available_extensions has no 'vector'); install pgvector 0.8 or newer"
            )
        # Concurrent first runs (replicas, Jobs) may race to create the schema; serialize them.
        async with self._conn.transaction():
            await self._conn.execute("SELECT pg_advisory_xact_lock(hashtext('ragops.schema'))")
            await self._conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            for statement in _META_DDL:
                await self._conn.execute(statement)
            await add_missing_columns(self._conn, _COLUMN_MIGRATIONS)
            await add_missing_indexes(self._conn, _INDEX_MIGRATIONS)
        await register_vector_async(self._conn)

    # ---- versions ----------------------------------------------------------------------------

    async def begin_version(
        self, kb: str, version: str, space: EmbeddingSpace, settings: dict[str, Any], *, shared: bool = False
    ) -> VersionRecord:
        """Registers a version (or returns the existing one for a re-run with identical settings).

        Unless the version is already built, the caller holds its build lease on return, until
        `end_build` (or until its connection ends): a second builder gets `VersionBusy`. The shards
        of one sharded build each take the lease `shared`: they build the version together, while a
        whole build of it (exclusive) waits for all of them, and the version reads as interrupted
        only once none of them holds it.
        """
        table = chunk_table_name(kb, space)
        await self._conn.execute(
            "INSERT INTO ragops.kb_versions (kb, version, status, space, chunk_table, settings) "
            "VALUES (%s, %s, 'building', %s, %s, %s) ON CONFLICT (kb, version) DO NOTHING",
            (kb, version, json.dumps(space.to_json()), table, json.dumps(settings, sort_keys=True)),
        )
        record = await self.get_version(kb, version)
        assert record is not None
        if record.space != space or record.settings != json.loads(json.dumps(settings, sort_keys=True)):
            raise VersionConflict(
                f"version {version!r} of knowledge base {kb!r} already exists with other settings; "
                "versions are immutable: build a new version name"
            )
        if record.status == "built":
            return record
        await self._take_lease(record, shared=shared)
        try:
            async with self._conn.transaction():
                await self._conn.execute(
                    "UPDATE ragops.kb_versions SET status = 'building', error = NULL "
                    "WHERE id = %s AND status = 'failed'",
                    (record.id,),
                )
                await self._lock_chunk_table_ddl(kb, space)
                await self._ensure_chunk_table(kb, space)
            await self.fail_interrupted_builds(kb)
        except BaseException:
            await self.end_build(record)
            raise
        refreshed = await self.get_version(kb, version)
        assert refreshed is not None
        return refreshed

    async def _take_lease(self, record: VersionRecord, *, shared: bool) -> None:
        deadline = time.monotonic() + _LEASE_WAIT_SECONDS
        take = "SELECT pg_try_advisory_lock_shared(%s, %s)" if shared else "SELECT pg_try_advisory_lock(%s, %s)"
        while True:
            cursor = await self._conn.execute(take, (_BUILD_LEASE, record.id))
            row = await cursor.fetchone()
            if row is not None and row[0]:
                self._leases[record.id] = shared
                return
            if time.monotonic() >= deadline:
                holder = await (
                    await self._conn.execute(
                        "SELECT a.pid, a.client_addr, a.application_name FROM pg_locks l "
                        "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted "
                        "AND l.classid = %s::bigint::oid AND l.objid = %s::bigint::oid AND l.objsubid = 2 "
                        "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                        (_BUILD_LEASE, record.id),
                    )
                ).fetchone()
                who = ""
                if holder is not None:
                    client = f", client {holder[1]}" if holder[1] else ""
                    who = f" (PostgreSQL backend pid {holder[0]}{client})"
                raise VersionBusy(
                    f"version {record.version!r} of knowledge base {record.kb!r} is being built by another "
                    f"process{who}: wait for it to finish, or stop it and run the build again to resume"
                )
            await asyncio.sleep(0.1)

    async def end_build(self, record: VersionRecord) -> None:
        """Releases the build lease of `record` if this connection holds it (idempotent)."""
        shared = self._leases.pop(record.id, None)
        if shared is not None and not self._conn.closed:
            release = "SELECT pg_advisory_unlock_shared(%s, %s)" if shared else "SELECT pg_advisory_unlock(%s, %s)"
            await self._conn.execute(release, (_BUILD_LEASE, record.id))

    async def fail_interrupted_builds(self, kb: str) -> list[str]:
        """Marks failed every version of `kb` left `building` by a builder that is gone; returns their names.

        A version is interrupted when nobody holds its build lease: holding one is what a live
        build does. The lease is tried within this statement, so a builder resuming the version at
        the same moment either holds it first (and the version is left alone) or waits for it.
        """
        cursor = await self._conn.execute(
            """WITH candidates AS MATERIALIZED (
                   SELECT id FROM ragops.kb_versions
                   WHERE kb = %(kb)s AND status = 'building' AND NOT id = ANY(%(mine)s))
               UPDATE ragops.kb_versions v SET status = 'failed', error = %(error)s
               FROM candidates c
               WHERE v.id = c.id AND v.status = 'building' AND pg_try_advisory_xact_lock(%(lease)s, c.id)
               RETURNING v.version""",
            {"kb": kb, "mine": sorted(self._leases), "error": INTERRUPTED_BUILD, "lease": _BUILD_LEASE},
        )
        return sorted(version for (version,) in await cursor.fetchall())

    async def _lock_chunk_table_ddl(self, kb: str, space: EmbeddingSpace) -> None:
        """Serializes DDL on one chunk table's family until the transaction ends.

        `CREATE ... IF NOT EXISTS` is not safe against a concurrent creator: the loser fails on a
        catalog unique index (pg_type_typname_nsp_index) instead of finding the table. The first
        builds of several versions of a new knowledge base start together as a matter of course.
        """
        await self._conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext('ragops.chunk_table'), hashtext(%s))",
            (chunk_table_name(kb, space),),
        )

    async def _ensure_chunk_table(self, kb: str, space: EmbeddingSpace) -> None:
        chunks = derived_identifier(kb, space.key, suffix="_chunks")
        members = derived_identifier(kb, space.key, suffix="_members")
        await self._conn.execute(
            sql.SQL(
                """CREATE TABLE IF NOT EXISTS {chunks} (
                    id bigserial PRIMARY KEY,
                    chunk_key text NOT NULL UNIQUE,
                    document_id text NOT NULL,
                    source text NOT NULL,
                    position integer NOT NULL,
                    heading_path text[] NOT NULL,
                    text text NOT NULL,
                    text_digest text NOT NULL,
                    token_count integer NOT NULL,
                    metadata jsonb NOT NULL,
                    embedding vector({dimensions}) NOT NULL,
                    context text NOT NULL DEFAULT '',
                    tsv tsvector GENERATED ALWAYS AS ({full_text}) STORED)"""
            ).format(
                chunks=chunks,
                dimensions=sql.Literal(space.dimensions),
                full_text=_full_text(sql.SQL("context"), sql.SQL("text")),
            )
        )
        # Tables created before chunks had a context: they keep their full-text expression (text alone).
        await self._conn.execute(
            sql.SQL("ALTER TABLE {chunks} ADD COLUMN IF NOT EXISTS context text NOT NULL DEFAULT ''").format(
                chunks=chunks
            )
        )
        lexicon = _LexiconTables.of(kb, space)
        await self._conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {postings} (term text NOT NULL, chunk_id bigint NOT NULL, "
                "impact real NOT NULL)"
            ).format(postings=lexicon.postings)
        )
        await self._conn.execute(
            sql.SQL("CREATE TABLE IF NOT EXISTS {terms} (term text PRIMARY KEY, df integer NOT NULL)").format(
                terms=lexicon.terms
            )
        )
        await self._conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {stats} (only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row), "
                "chunks bigint NOT NULL, average_length double precision NOT NULL)"
            ).format(stats=lexicon.stats)
        )
        await self._conn.execute(
            sql.SQL("CREATE INDEX IF NOT EXISTS {name} ON {chunks} (text_digest)").format(
                name=sql.Identifier(sanitized_name(kb, space.key, suffix="_digest_idx")), chunks=chunks
            )
        )
        await self._conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {members} (version_id integer NOT NULL, chunk_id bigint NOT NULL, "
                "PRIMARY KEY (version_id, chunk_id))"
            ).format(members=members)
        )

    async def ensure_indexes(self, record: VersionRecord) -> None:
        """HNSW and full-text indexes, built once per chunk table (after the first bulk load)."""
        space = record.space
        chunks = derived_identifier(record.kb, space.key, suffix="_chunks")
        opclass, _ = _DISTANCE_SQL[space.distance]
        async with self._conn.transaction():
            await self._lock_chunk_table_ddl(record.kb, space)
            await self._conn.execute(
                sql.SQL("SET LOCAL maintenance_work_mem = {}").format(sql.Literal(self._index_build_memory))
            )
            await self._conn.execute(
                sql.SQL(
                    "CREATE INDEX IF NOT EXISTS {name} ON {chunks} USING hnsw (embedding {opclass}) "
                    "WITH (m = {m}, ef_construction = {ef})"
                ).format(
                    name=sql.Identifier(sanitized_name(record.kb, space.key, suffix="_hnsw")),
                    chunks=chunks,
                    opclass=sql.SQL(opclass),
                    m=sql.Literal(space.m),
                    ef=sql.Literal(space.ef_construction),
                )
            )
        lexicon = _LexiconTables.of(record.kb, space)
        async with self._conn.transaction():
            # A chunk table from before the lexicon existed gets its postings once, here.
            await self._conn.execute(sql.SQL("LOCK TABLE {stats}").format(stats=lexicon.stats))
            row = await (
                await self._conn.execute(sql.SQL("SELECT count(*) FROM {stats}").format(stats=lexicon.stats))
            ).fetchone()
            if row is not None and row[0] == 0:
                ids = await (
                    await self._conn.execute(sql.SQL("SELECT id FROM {chunks}").format(chunks=chunks))
                ).fetchall()
                await self._index_terms(record, [chunk_id for (chunk_id,) in ids])
        # The postings index is built after the first bulk load, like HNSW: much faster than row by row.
        async with self._conn.transaction():
            await self._lock_chunk_table_ddl(record.kb, space)
            await self._conn.execute(
                sql.SQL(
                    "CREATE INDEX IF NOT EXISTS {name} ON {postings} (term, impact DESC) INCLUDE (chunk_id)"
                ).format(
                    name=sql.Identifier(sanitized_name(record.kb, space.key, suffix="_postings_idx")),
                    postings=lexicon.postings,
                )
            )
        # VACUUM too, not only ANALYZE: it sets the visibility map, without which every posting an
        # index-only scan reads costs a heap fetch.
        for table in (lexicon.postings, lexicon.terms, lexicon.stats):
            await self._conn.execute(sql.SQL("VACUUM ANALYZE {table}").format(table=table))

    async def get_version(self, kb: str, version: str) -> VersionRecord | None:
        async with self._conn.cursor(row_factory=dict_row) as cursor:
            await cursor.execute("SELECT * FROM ragops.kb_versions WHERE kb = %s AND version = %s", (kb, version))
            row = await cursor.fetchone()
        return _version_record(row) if row else None

    async def holds(self, record: VersionRecord) -> bool:
        """Whether this server has `record` complete: on a streaming replica, whether it has replayed
        the transaction that completed the version.

        `complete_version` commits the membership, the documents and status `built` together, and a
        hot standby shows whole transactions only: the row built here means every chunk of it is.
        A replica that has not replayed the schema yet holds nothing.
        """
        try:
            cursor = await self._conn.execute(
                "SELECT 1 FROM ragops.kb_versions WHERE id = %s AND kb = %s AND version = %s AND status = 'built'",
                (record.id, record.kb, record.version),
            )
        except psycopg.errors.UndefinedTable:
            return False
        return await cursor.fetchone() is not None

    async def list_versions(self, kb: str) -> list[VersionRecord]:
        async with self._conn.cursor(row_factory=dict_row) as cursor:
            await cursor.execute("SELECT * FROM ragops.kb_versions WHERE kb = %s ORDER BY created_at, id", (kb,))
            return [_version_record(row) for row in await cursor.fetchall()]

    async def known_chunks(self, record: VersionRecord, keys: Sequence[str]) -> dict[str, int]:
        """chunk_key -> id for the keys already stored in this version's chunk table."""
        chunks = derived_identifier(record.kb, record.space.key, suffix="_chunks")
        cursor = await self._conn.execute(
            sql.SQL("SELECT chunk_key, id FROM {chunks} WHERE chunk_key = ANY(%s)").format(chunks=chunks),
            (list(keys),),
        )
        return {key: chunk_id for key, chunk_id in await cursor.fetchall()}

    async def reusable_chunks(
        self, record: VersionRecord, chunking_keys: Sequence[str]
    ) -> dict[str, list[tuple[str, int]]]:
        """Chunks an earlier built version of this chunk table stored for documents of these chunking keys.

        Returns chunking key -> [(chunk key, chunk id)] in position order, for every key a built
        version's document has and whose chunks are all still members of that version; a build
        takes them instead of chunking the document again (the chunking key covers the document's
        text, title and metadata, the chunking settings and the chunker's code).
        """
        if not chunking_keys:
            return {}
        chunks = derived_identifier(record.kb, record.space.key, suffix="_chunks")
        members = derived_identifier(record.kb, record.space.key, suffix="_members")
        cursor = await self._conn.execute(
            """SELECT DISTINCT ON (d.chunking_key) d.chunking_key, d.version_id, d.document_id, d.chunks
               FROM ragops.kb_documents d JOIN ragops.kb_versions v ON v.id = d.version_id
               WHERE d.chunking_key = ANY(%s) AND v.chunk_table = %s AND v.status = 'built' AND v.id <> %s
               ORDER BY d.chunking_key, d.version_id DESC""",
            (list(chunking_keys), record.chunk_table, record.id),
        )
        by_version: dict[int, dict[str, tuple[str, int]]] = {}
        for chunking_key, version_id, document_id, count in await cursor.fetchall():
            by_version.setdefault(version_id, {})[document_id] = (chunking_key, count)
        found: dict[str, list[tuple[str, int]]] = {}
        for version_id, documents in by_version.items():
            # One pass over the version's membership, whatever the number of documents taken from it.
            cursor = await self._conn.execute(
                sql.SQL(
                    "SELECT c.document_id, c.position, c.chunk_key, c.id FROM {members} m "
                    "JOIN {chunks} c ON c.id = m.chunk_id WHERE m.version_id = %s AND c.document_id = ANY(%s) "
                    "ORDER BY c.document_id, c.position"
                ).format(members=members, chunks=chunks),
                (version_id, list(documents)),
            )
            rows: dict[str, list[tuple[int, str, int]]] = {}
            for document_id, position, chunk_key_, chunk_id in await cursor.fetchall():
                rows.setdefault(document_id, []).append((position, chunk_key_, chunk_id))
            for document_id, (chunking_key, count) in documents.items():
                stored = rows.get(document_id, [])
                if [position for position, _, _ in stored] == list(range(count)):
                    found[chunking_key] = [(key, chunk_id) for _, key, chunk_id in stored]
        return found

    async def cached_extractions(self, keys: Sequence[str]) -> dict[str, tuple[str, str | None, int]]:
        """Stored conversions by key: (text, title, dropped characters); see `kb_extractions` above."""
        found: dict[str, tuple[str, str | None, int]] = {}
        for start in range(0, len(keys), _EXTRACTION_BATCH):
            cursor = await self._conn.execute(
                "SELECT key, text, title, dropped_chars FROM ragops.kb_extractions WHERE key = ANY(%s)",
                (list(keys[start : start + _EXTRACTION_BATCH]),),
            )
            found.update((key, (text, title, dropped)) for key, text, title, dropped in await cursor.fetchall())
        return found

    async def store_extractions(self, extractions: dict[str, tuple[str, str | None, int]]) -> None:
        """Keeps conversions for the next builds (one committed batch; keys already stored are left as they are)."""
        if not extractions:
            return
        async with self._conn.transaction():
            await self._conn.execute(
                "CREATE TEMP TABLE ragops_incoming_extractions (key text, text text, title text, dropped_chars int) "
                "ON COMMIT DROP"
            )
            async with (
                self._conn.cursor() as cursor,
                cursor.copy("COPY ragops_incoming_extractions FROM STDIN WITH (FORMAT BINARY)") as copy,
            ):
                copy.set_types(["text", "text", "text", "int4"])
                for key in sorted(extractions):
                    text, title, dropped = extractions[key]
                    await copy.write_row((key, text, title, dropped))
            await self._conn.execute(
                "INSERT INTO ragops.kb_extractions (key, text, title, dropped_chars) "
                "SELECT key, text, title, dropped_chars FROM ragops_incoming_extractions ORDER BY key "
                "ON CONFLICT (key) DO NOTHING"
            )

    async def cached_embeddings(self, record: VersionRecord, digests: Sequence[str]) -> dict[str, Vector]:
        """Embeddings of texts already embedded by this version's model: the embedding cache.

        A vector depends on the text and the model only, not on the index built over it nor on the
        knowledge base it serves, so the cache is every chunk table of the same provider, model,
        dimensions and endpoint (this version's own first): new HNSW parameters or a distance
        change re-embed nothing. Another model, or another endpoint serving a model of the same
        name, finds nothing.
        """
        wanted = list(dict.fromkeys(digests))
        found: dict[str, Vector] = {}
        for table in await self._tables_of_model(record):
            if len(found) == len(wanted):
                break
            try:
                cursor = await self._conn.execute(
                    sql.SQL(
                        "SELECT DISTINCT ON (text_digest) text_digest, embedding FROM {chunks} "
                        "WHERE text_digest = ANY(%s)"
                    ).format(chunks=table),
                    ([digest for digest in wanted if digest not in found],),
                )
            except psycopg.errors.UndefinedTable:
                continue  # its last version was dropped since it was listed
            # pgvector's loader returns its own `Vector`, which numpy cannot convert by itself.
            found.update((digest, vector.to_numpy()) for digest, vector in await cursor.fetchall())
        return found

    async def _tables_of_model(self, record: VersionRecord) -> list[sql.Identifier]:
        """The chunk tables holding vectors of `record`'s embedding model, its own first."""
        space = record.space
        endpoint = (record.settings.get("embedding") or {}).get("endpoint")
        cursor = await self._conn.execute(
            """SELECT DISTINCT kb, space FROM ragops.kb_versions
               WHERE space->>'provider' = %s AND space->>'model' = %s AND (space->>'dimensions')::int = %s
                 AND settings->'embedding'->>'endpoint' IS NOT DISTINCT FROM %s""",
            (space.provider, space.model, space.dimensions, endpoint),
        )
        tables = {(record.kb, space.key)}
        ordered = [derived_identifier(record.kb, space.key, suffix="_chunks")]
        for kb, other in await cursor.fetchall():
            key = EmbeddingSpace.from_json(other).key
            if (kb, key) not in tables:
                tables.add((kb, key))
                ordered.append(derived_identifier(kb, key, suffix="_chunks"))
        return ordered

    async def insert_chunks(self, record: VersionRecord, rows: Sequence[ChunkRow]) -> dict[str, int]:
        """Bulk-loads new chunks with COPY (one committed batch) and returns chunk_key -> id.

        Two versions of one knowledge base built at once share the chunk table, and each may try to
        add a chunk the other added after it looked: the batch then goes through a staging table and
        `ON CONFLICT DO NOTHING`, which waits for the other build's batch and reuses its rows.
        """
        if not rows:
            return {}
        chunks = derived_identifier(record.kb, record.space.key, suffix="_chunks")
        keys = [row.key for row in rows]
        try:
            async with self._conn.transaction():
                await self._copy_chunks(chunks, rows)
                inserted = await self.known_chunks(record, keys)
                await self._index_terms(record, list(inserted.values()))
        except (psycopg.errors.UniqueViolation, psycopg.errors.DeadlockDetected):
            async with self._conn.transaction():
                await self._conn.execute(
                    sql.SQL(
                        "CREATE TEMP TABLE ragops_incoming_chunks ON COMMIT DROP AS "
                        "SELECT {columns} FROM {chunks} WITH NO DATA"
                    ).format(columns=_CHUNK_COLUMNS, chunks=chunks)
                )
                await self._copy_chunks(sql.Identifier("ragops_incoming_chunks"), rows)
                cursor = await self._conn.execute(
                    sql.SQL(
                        "INSERT INTO {chunks} ({columns}) SELECT {columns} FROM ragops_incoming_chunks "
                        "ORDER BY chunk_key ON CONFLICT (chunk_key) DO NOTHING RETURNING id"
                    ).format(columns=_CHUNK_COLUMNS, chunks=chunks)
                )
                # Only the rows this build added: the other build indexed its own.
                await self._index_terms(record, [chunk_id for (chunk_id,) in await cursor.fetchall()])
        return await self.known_chunks(record, keys)

    async def _index_terms(self, record: VersionRecord, chunk_ids: Sequence[int]) -> None:
        """Adds the BM25 postings and document frequencies of new chunks; runs in the caller's transaction.

        A posting's impact is BM25's term-frequency part, tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl / avgdl)),
        so a query only multiplies it by the term's IDF and sums. avgdl is fixed by the table's first
        chunks (shared rows must not change score when another version is added); document frequencies
        and the chunk count cover the whole table, every version of this embedding space.
        """
        if not chunk_ids:
            return
        chunks = derived_identifier(record.kb, record.space.key, suffix="_chunks")
        lexicon = _LexiconTables.of(record.kb, record.space)
        lengths = sql.SQL("SELECT c.id, c.tsv, {length} AS length FROM {chunks} c WHERE c.id = ANY(%(ids)s)").format(
            chunks=chunks, length=_length(sql.SQL("c.tsv"))
        )
        ids = {"ids": list(chunk_ids)}
        await self._conn.execute(
            sql.SQL(
                "INSERT INTO {stats} (only_row, chunks, average_length) "
                "SELECT true, 0, greatest(avg(d.length), 1) FROM ({lengths}) d ON CONFLICT (only_row) DO NOTHING"
            ).format(stats=lexicon.stats, lengths=lengths),
            ids,
        )
        await self._conn.execute(
            sql.SQL(
                "INSERT INTO {postings} (term, chunk_id, impact) "
                "SELECT e.lexeme, d.id, cardinality(e.positions) * ({k1} + 1) / (cardinality(e.positions) "
                "+ {k1} * (1 - {b} + {b} * d.length / s.average_length)) "
                "FROM ({lengths}) d CROSS JOIN LATERAL unnest(d.tsv) e CROSS JOIN {stats} s"
            ).format(
                postings=lexicon.postings,
                stats=lexicon.stats,
                lengths=lengths,
                k1=sql.Literal(BM25_K1),
                b=sql.Literal(BM25_B),
            ),
            ids,
        )
        # In term order, so concurrent builds lock the same rows in the same order and cannot deadlock.
        await self._conn.execute(
            sql.SQL(
                "INSERT INTO {terms} AS t (term, df) "
                "SELECT e.lexeme, count(*) FROM {chunks} c CROSS JOIN LATERAL unnest(c.tsv) e "
                "WHERE c.id = ANY(%(ids)s) GROUP BY e.lexeme ORDER BY e.lexeme "
                "ON CONFLICT (term) DO UPDATE SET df = t.df + EXCLUDED.df"
            ).format(terms=lexicon.terms, chunks=chunks),
            ids,
        )
        await self._conn.execute(
            sql.SQL("UPDATE {stats} SET chunks = chunks + %(n)s").format(stats=lexicon.stats), {"n": len(chunk_ids)}
        )

    async def has_lexicon(self, record: VersionRecord) -> bool:
        """Whether the version's chunk table has its BM25 statistics (its average length is fixed)."""
        lexicon = _LexiconTables.of(record.kb, record.space)
        cursor = await self._conn.execute(sql.SQL("SELECT 1 FROM {stats}").format(stats=lexicon.stats))
        return await cursor.fetchone() is not None

    async def seed_lexicon(self, record: VersionRecord, rows: Sequence[tuple[str, str]]) -> None:
        """Fixes the chunk table's BM25 average length from `rows` (context, text), as storing them first would.

        `_index_terms` fixes it from the first chunks a table stores. The shards of a sharded build
        store in no set order, so each seeds it first from the chunks a one-process build would
        store first: every shard computes the same rows, whichever seeds wins, and the impacts are
        those of a one-process build. A table whose average is fixed already keeps it.
        """
        if not rows:
            return
        lexicon = _LexiconTables.of(record.kb, record.space)
        await self._conn.execute(
            sql.SQL(
                "INSERT INTO {stats} (only_row, chunks, average_length) "
                "SELECT true, 0, greatest(avg({length}), 1) FROM unnest(%s::text[], %s::text[]) AS r(context, text) "
                "ON CONFLICT (only_row) DO NOTHING"
            ).format(stats=lexicon.stats, length=_length(_full_text(sql.SQL("r.context"), sql.SQL("r.text")))),
            ([context for context, _ in rows], [text for _, text in rows]),
        )

    async def _copy_chunks(self, table: sql.Composable, rows: Sequence[ChunkRow]) -> None:
        copy_sql = sql.SQL("COPY {table} ({columns}) FROM STDIN WITH (FORMAT BINARY)").format(
            table=table, columns=_CHUNK_COLUMNS
        )
        async with self._conn.cursor() as cursor, cursor.copy(copy_sql) as copy:
            copy.set_types(
                ["text", "text", "text", "int4", "text[]", "text", "text", "int4", "jsonb", "vector", "text"]
            )
            # In key order, so two builds adding overlapping batches lock keys in the same order and
            # the later one waits for the earlier instead of deadlocking with it.
            for row in sorted(rows, key=lambda chunk: chunk.key):
                await copy.write_row(
                    (
                        row.key,
                        row.document_id,
                        row.source,
                        row.position,
                        list(row.heading_path),
                        row.text,
                        row.text_digest,
                        row.token_count,
                        Jsonb(row.metadata),
                        row.embedding,
                        row.context,
                    )
                )

    async def complete_version(
        self,
        record: VersionRecord,
        chunk_ids: Iterable[int],
        documents: Sequence[DocumentRow],
        manifest: dict[str, Any],
    ) -> VersionRecord:
        """Makes the version whole in one transaction: membership, documents, manifest, status built."""
        members = derived_identifier(record.kb, record.space.key, suffix="_members")
        async with self._conn.transaction(), self._conn.cursor() as cursor:
            await cursor.execute(
                sql.SQL("DELETE FROM {members} WHERE version_id = %s").format(members=members), (record.id,)
            )
            await cursor.execute("DELETE FROM ragops.kb_documents WHERE version_id = %s", (record.id,))
            async with cursor.copy(
                sql.SQL("COPY {members} (version_id, chunk_id) FROM STDIN WITH (FORMAT BINARY)").format(members=members)
            ) as copy:
                copy.set_types(["int4", "int8"])
                for chunk_id in sorted(set(chunk_ids)):
                    await copy.write_row((record.id, chunk_id))
            async with cursor.copy(
                "COPY ragops.kb_documents (version_id, document_id, source, title, digest, chunks, extraction_key, "
                "chunking_key) FROM STDIN WITH (FORMAT BINARY)"
            ) as copy:
                copy.set_types(["int4", "text", "text", "text", "text", "int4", "text", "text"])
                for document in documents:
                    await copy.write_row(
                        (
                            record.id,
                            document.document_id,
                            document.source,
                            document.title,
                            document.digest,
                            document.chunks,
                            document.extraction_key,
                            document.chunking_key,
                        )
                    )
            await cursor.execute(
                "UPDATE ragops.kb_versions SET status = 'built', manifest = %s, built_at = now(), error = NULL "
                "WHERE id = %s",
                (json.dumps(manifest), record.id),
            )
        # VACUUM sets the visibility map, so membership checks are index-only scans without heap fetches.
        await self._conn.execute(sql.SQL("VACUUM ANALYZE {members}").format(members=members))
        refreshed = await self.get_version(record.kb, record.version)
        assert refreshed is not None
        return refreshed

    async def fail_version(self, record: VersionRecord, error: str) -> None:
        await self._conn.execute(
            "UPDATE ragops.kb_versions SET status = 'failed', error = %s WHERE id = %s AND status = 'building'",
            (error[:4000], record.id),
        )

    async def record_gate(self, record: VersionRecord, verdict: GateVerdict) -> None:
        """Adds `verdict` to the version's verdicts (earlier ones are kept) and makes it the newest."""
        async with self._conn.transaction():
            await self._conn.execute(
                "INSERT INTO ragops.kb_verdicts (version_id, passed, k, thresholds, golden_digest, metrics, report) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (
                    record.id,
                    verdict.passed,
                    verdict.k,
                    Jsonb(verdict.thresholds),
                    verdict.golden_digest,
                    Jsonb(verdict.metrics),
                    Jsonb(verdict.report),
                ),
            )
            await self._conn.execute(
                "UPDATE ragops.kb_versions SET gate = %s, gate_passed = %s, evaluated_at = now() WHERE id = %s",
                (Jsonb({**verdict.report, **verdict.to_json()}), verdict.passed, record.id),
            )

    async def verdicts(self, record: VersionRecord) -> list[GateVerdict]:
        """Every gate verdict of `record`, oldest first."""
        cursor = await self._conn.execute(
            "SELECT passed, k, thresholds, golden_digest, metrics, report, evaluated_at FROM ragops.kb_verdicts "
            "WHERE version_id = %s ORDER BY id",
            (record.id,),
        )
        return [
            GateVerdict(passed, k, thresholds, digest, metrics, report, at)
            for passed, k, thresholds, digest, metrics, report, at in await cursor.fetchall()
        ]

    async def unmet_requirement(self, record: VersionRecord, requirement: GateRequirement) -> str | None:
        """None when one of `record`'s verdicts meets `requirement`, else why activation would be refused."""
        verdicts = await self.verdicts(record)
        if any(requirement.met_by(verdict) for verdict in verdicts):
            return None
        return (
            f"version {record.version!r} has no passing verdict made with the required gate "
            f"({requirement.describe()}); {len(verdicts)} verdict(s) recorded: run `ragops kb eval` "
            "with these thresholds"
        )

    async def document_ids(self, record: VersionRecord) -> set[str]:
        cursor = await self._conn.execute(
            "SELECT document_id, source FROM ragops.kb_documents WHERE version_id = %s", (record.id,)
        )
        return {document_id for document_id, _ in await cursor.fetchall()}

    async def source_of_documents(self, record: VersionRecord) -> dict[str, str]:
        cursor = await self._conn.execute(
            "SELECT document_id, source FROM ragops.kb_documents WHERE version_id = %s", (record.id,)
        )
        return dict(await cursor.fetchall())

    # ---- activation --------------------------------------------------------------------------

    async def activation(self, kb: str) -> Activation:
        cursor = await self._conn.execute(
            """SELECT a.kb, active.version, previous.version, a.updated_at
               FROM ragops.kb_activation a
               LEFT JOIN ragops.kb_versions active ON active.id = a.active_version_id
               LEFT JOIN ragops.kb_versions previous ON previous.id = a.previous_version_id
               WHERE a.kb = %s""",
            (kb,),
        )
        row = await cursor.fetchone()
        if row is None:
            return Activation(kb=kb, active=None, previous=None, updated_at=None)
        return Activation(kb=row[0], active=row[1], previous=row[2], updated_at=row[3])

    async def activate(
        self,
        kb: str,
        version: str,
        *,
        force: bool = False,
        reason: str = "",
        requirement: GateRequirement | None = None,
    ) -> Activation:
        """Points the knowledge base at `version` and notifies listeners, in one transaction.

        Without `force` the version's newest verdict must have passed; with a `requirement` (the
        thresholds of the KnowledgeBaseVersion's spec, or given to the CLI) one of its verdicts
        must meet it, so a re-evaluation with weaker thresholds cannot open the way.
        """
        return await self._switch(kb, version, action="activate", force=force, reason=reason, requirement=requirement)

    async def rollback(self, kb: str, *, to: str | None = None, reason: str = "") -> Activation:
        """Switches back to the last known-good version before the current one (or `to`).

        The target is found in the activation history, newest first: a version served before the
        current one, still built and gated, and never one that was rolled back (unless activated
        again since, deliberately). So a second rollback goes one step further back rather than
        re-promoting the version the first one left, and is refused when nothing good is left.
        The gate still applies; force does not.
        """
        async with self._conn.transaction():
            await self._lock_pointer(kb)
            current = await self.activation(kb)
            if current.active is None:
                raise ActivationRefused(f"knowledge base {kb!r} has no active version to roll back from")
            served, rolled_back = await self._served_history(kb)
            if to is not None:
                if to in rolled_back:
                    raise ActivationRefused(
                        f"version {to!r} of {kb!r} was rolled back: a rollback never re-promotes it; "
                        "activate it deliberately (`ragops kb activate`) if it should serve again"
                    )
                target = to
            else:
                target = None
                for candidate in served:
                    if candidate == current.active or candidate in rolled_back:
                        continue
                    record = await self.get_version(kb, candidate)
                    if record is not None and _servable(record):
                        target = candidate
                        break
                if target is None:
                    skipped = sorted(rolled_back - {current.active})
                    detail = f" (rolled back before: {', '.join(skipped)})" if skipped else ""
                    raise ActivationRefused(
                        f"knowledge base {kb!r} has no known-good version before {current.active!r} to roll back "
                        f"to{detail}"
                    )
            assert target is not None
            return await self._switch(kb, target, action="rollback", force=False, reason=reason)

    async def _served_history(self, kb: str) -> tuple[list[str], set[str]]:
        """Versions made active, newest first (repeats kept), and those rolled back since their last activation."""
        cursor = await self._conn.execute(
            "SELECT action, from_version, to_version FROM ragops.kb_activation_history "
            "WHERE kb = %s AND action IN ('activate', 'rollback') ORDER BY id DESC",
            (kb,),
        )
        served: list[str] = []
        activated_later: set[str] = set()
        rolled_back: set[str] = set()
        for action, from_version, to_version in await cursor.fetchall():
            if action == "rollback" and from_version is not None and from_version not in activated_later:
                rolled_back.add(from_version)
            if action == "activate":
                activated_later.add(to_version)
            served.append(to_version)
        return served, rolled_back

    async def _switch(
        self,
        kb: str,
        version: str,
        *,
        action: str,
        force: bool,
        reason: str,
        requirement: GateRequirement | None = None,
    ) -> Activation:
        async with self._conn.transaction():
            await self._lock_pointer(kb)
            record = await self.get_version(kb, version)
            current = await self.activation(kb)
            split = await self.traffic(kb)
            if current.active == version and not split.active:
                return current
            if current.active != version:
                current_record = await self.get_version(kb, current.active) if current.active else None
                _check_activation(kb, version, record, current_record, force=force, was_canary=split.canary == version)
                assert record is not None
                if requirement is not None and not force:
                    unmet = await self.unmet_requirement(record, requirement)
                    if unmet is not None:
                        raise ActivationRefused(unmet)
                await self._conn.execute(
                    """INSERT INTO ragops.kb_activation AS a (kb, active_version_id, previous_version_id, updated_at)
                       VALUES (%s, %s, NULL, now())
                       ON CONFLICT (kb) DO UPDATE SET previous_version_id = a.active_version_id,
                           active_version_id = EXCLUDED.active_version_id, updated_at = now()""",
                    (kb, record.id),
                )
            # Activating a version serves it to every query: any split ends with it (promote = activate
            # the candidate).
            await self._write_split(kb, None, weight=0, shadow_percent=0.0, split_id=None, probe=None)
            await self._record(kb, action, current.active, version, reason)
        return await self.activation(kb)

    async def history(self, kb: str, limit: int = 50) -> list[dict[str, Any]]:
        async with self._conn.cursor(row_factory=dict_row) as cursor:
            await cursor.execute(
                "SELECT action, from_version, to_version, reason, at, canary_weight, shadow_percent, split_id "
                "FROM ragops.kb_activation_history WHERE kb = %s ORDER BY id DESC LIMIT %s",
                (kb, limit),
            )
            return list(await cursor.fetchall())

    # ---- traffic split -----------------------------------------------------------------------

    async def traffic(self, kb: str) -> TrafficSplit:
        """The split of `kb`: stable version, candidate, weight, shadow share, step and probe plan."""
        cursor = await self._conn.execute(
            """SELECT stable.version, canary.version, a.canary_weight, a.shadow_percent, a.split_id, a.probe,
                      a.updated_at
               FROM ragops.kb_activation a
               LEFT JOIN ragops.kb_versions stable ON stable.id = a.active_version_id
               LEFT JOIN ragops.kb_versions canary ON canary.id = a.canary_version_id
               WHERE a.kb = %s""",
            (kb,),
        )
        row = await cursor.fetchone()
        if row is None:
            return TrafficSplit(kb, None, None, 0, 0.0, None, None, None)
        stable, canary, weight, shadow, split_id, probe, updated_at = row
        return TrafficSplit(
            kb=kb,
            stable=stable,
            canary=canary,
            canary_weight=int(weight),
            shadow_percent=float(shadow),
            split_id=split_id,
            probe=ProbePlan.from_json(probe) if probe is not None else None,
            updated_at=updated_at,
        )

    async def set_traffic(
        self,
        kb: str,
        *,
        canary: str,
        weight: int,
        shadow_percent: float,
        split_id: str,
        probe: ProbePlan | None = None,
        reason: str = "",
        force: bool = False,
    ) -> TrafficSplit:
        """Sends `weight` percent of clients to `canary` and mirrors `shadow_percent` of stable's queries to it.

        One transaction, recorded in the history (action "split") and notified on the activation
        channel; the same values again change nothing and notify nothing. Refuses a candidate that
        cannot serve: unknown, of another knowledge base, not built, not gated (unless `force`), the
        stable version itself, or when no version is active.
        """
        _check_split_values(weight, shadow_percent, split_id)
        async with self._conn.transaction():
            await self._lock_pointer(kb)
            current = await self.traffic(kb)
            if current.stable is None:
                raise ActivationRefused(
                    f"knowledge base {kb!r} has no active version: activate a stable version before a canary"
                )
            if canary == current.stable:
                raise ActivationRefused(
                    f"version {canary!r} is already the stable version of {kb!r}: a canary needs another version"
                )
            record = await self.get_version(kb, canary)
            if record is None:
                await self._refuse_unknown(kb, canary)
            _check_servable(kb, canary, record, force=force)
            assert record is not None
            wanted = (canary, weight, float(shadow_percent), split_id, probe)
            if (current.canary, current.canary_weight, current.shadow_percent, current.split_id, current.probe) == (
                wanted
            ):
                return current
            await self._write_split(
                kb, record.id, weight=weight, shadow_percent=shadow_percent, split_id=split_id, probe=probe
            )
            await self._record(
                kb,
                "split",
                current.stable,
                canary,
                reason,
                weight=weight,
                shadow_percent=shadow_percent,
                split_id=split_id,
            )
        return await self.traffic(kb)

    async def clear_traffic(self, kb: str, *, reason: str = "") -> TrafficSplit:
        """Ends the split at once: every query goes to the stable version again (action "abort").

        Nothing to clear changes nothing and notifies nothing.
        """
        async with self._conn.transaction():
            await self._lock_pointer(kb)
            current = await self.traffic(kb)
            if not current.active:
                return current
            assert current.canary is not None and current.stable is not None
            await self._write_split(kb, None, weight=0, shadow_percent=0.0, split_id=None, probe=None)
            await self._record(kb, "abort", current.canary, current.stable, reason, weight=0, shadow_percent=0.0)
        return await self.traffic(kb)

    async def _lock_pointer(self, kb: str) -> None:
        # Serializes changes of one knowledge base's pointer and split without blocking their readers.
        await self._conn.execute("SELECT pg_advisory_xact_lock(hashtext('ragops.activation'), hashtext(%s))", (kb,))

    async def _write_split(
        self,
        kb: str,
        canary_id: int | None,
        *,
        weight: int,
        shadow_percent: float,
        split_id: str | None,
        probe: ProbePlan | None,
    ) -> None:
        await self._conn.execute(
            """UPDATE ragops.kb_activation
               SET canary_version_id = %s, canary_weight = %s, shadow_percent = %s, split_id = %s, probe = %s,
                   updated_at = now()
               WHERE kb = %s""",
            (canary_id, weight, shadow_percent, split_id, Jsonb(probe.to_json()) if probe else None, kb),
        )

    async def _record(
        self,
        kb: str,
        action: str,
        from_version: str | None,
        to_version: str,
        reason: str,
        *,
        weight: int | None = None,
        shadow_percent: float | None = None,
        split_id: str | None = None,
    ) -> None:
        """History row and notification of one change, inside the caller's transaction."""
        await self._conn.execute(
            "INSERT INTO ragops.kb_activation_history (kb, action, from_version, to_version, reason, "
            "canary_weight, shadow_percent, split_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (kb, action, from_version, to_version, reason, weight, shadow_percent, split_id),
        )
        await self._conn.execute(
            "SELECT pg_notify(%s, %s)",
            (ACTIVATION_CHANNEL, json.dumps({"kb": kb, "version": to_version, "action": action})),
        )

    async def _refuse_unknown(self, kb: str, version: str) -> None:
        cursor = await self._conn.execute(
            "SELECT kb FROM ragops.kb_versions WHERE version = %s AND kb <> %s ORDER BY kb LIMIT 1", (version, kb)
        )
        other = await cursor.fetchone()
        if other is not None:
            raise ActivationRefused(
                f"version {version!r} belongs to knowledge base {other[0]!r}, not {kb!r}: "
                "a canary must be a version of the knowledge base it serves"
            )
        raise ActivationRefused(f"knowledge base {kb!r} has no version {version!r}")

    # ---- deletion ----------------------------------------------------------------------------

    async def drop_version(self, kb: str, version: str) -> None:
        """Deletes a version and every chunk no other version uses; refuses the active, previous or canary one."""
        async with self._conn.transaction():
            await self._lock_pointer(kb)
            record = await self.get_version(kb, version)
            if record is None:
                return
            current = await self.activation(kb)
            if version in (current.active, current.previous):
                role = "active" if version == current.active else "the rollback target (previous)"
                raise StoreError(f"version {version!r} of {kb!r} is {role}; activate another version first")
            if version == (await self.traffic(kb)).canary:
                raise StoreError(f"version {version!r} of {kb!r} is the canary of a rollout; clear the split first")
            members = derived_identifier(kb, record.space.key, suffix="_members")
            chunks = derived_identifier(kb, record.space.key, suffix="_chunks")
            await self._conn.execute(sql.SQL("DELETE FROM {m} WHERE version_id = %s").format(m=members), (record.id,))
            # Conversions only this version's documents came from go with it.
            await self._conn.execute(
                """DELETE FROM ragops.kb_extractions e
                   WHERE e.key IN (SELECT extraction_key FROM ragops.kb_documents WHERE version_id = %(v)s)
                     AND NOT EXISTS (SELECT 1 FROM ragops.kb_documents d
                                     WHERE d.extraction_key = e.key AND d.version_id <> %(v)s)""",
                {"v": record.id},
            )
            await self._conn.execute("DELETE FROM ragops.kb_versions WHERE id = %s", (record.id,))
            siblings = await (
                await self._conn.execute(
                    "SELECT count(*) FILTER (WHERE status = 'building'), count(*) FROM ragops.kb_versions "
                    "WHERE chunk_table = %s",
                    (record.chunk_table,),
                )
            ).fetchone()
            building, remaining = siblings if siblings else (0, 0)
            lexicon = _LexiconTables.of(kb, record.space)
            if remaining == 0:
                await self._conn.execute(
                    sql.SQL("DROP TABLE IF EXISTS {m}, {c}, {p}, {t}, {s}").format(
                        m=members, c=chunks, p=lexicon.postings, t=lexicon.terms, s=lexicon.stats
                    )
                )
            elif building == 0:
                # A building version's chunks have no membership yet: keep them until it completes.
                # Their postings, document frequencies and count go with them.
                await self._conn.execute(
                    sql.SQL(
                        """WITH gone AS (
                               DELETE FROM {c} c WHERE NOT EXISTS (SELECT 1 FROM {m} m WHERE m.chunk_id = c.id)
                               RETURNING c.id, c.tsv),
                           postings AS (DELETE FROM {p} p USING gone WHERE p.chunk_id = gone.id),
                           frequencies AS (
                               UPDATE {t} t SET df = t.df - f.n
                               FROM (SELECT e.lexeme, count(*) AS n FROM gone CROSS JOIN LATERAL unnest(gone.tsv) e
                                     GROUP BY e.lexeme) f
                               WHERE t.term = f.lexeme)
                           UPDATE {s} SET chunks = chunks - (SELECT count(*) FROM gone)"""
                    ).format(c=chunks, m=members, p=lexicon.postings, t=lexicon.terms, s=lexicon.stats)
                )

    async def gc(self, kb: str, *, keep: int) -> list[str]:
        """Drops versions beyond the `keep` newest built ones, never the active, previous or canary one.

        Interrupted builds are failed first (see `fail_interrupted_builds`): a version still being
        built is kept, and so are the chunks it has stored so far.
        """
        await self.fail_interrupted_builds(kb)
        current = await self.activation(kb)
        protected = {current.active, current.previous, (await self.traffic(kb)).canary}
        built = [v for v in await self.list_versions(kb) if v.status == "built"]
        newest = (
            {v.version for v in sorted(built, key=lambda v: (v.built_at or v.created_at, v.id))[-keep:]}
            if keep
            else set()
        )
        doomed = [
            v.version
            for v in await self.list_versions(kb)
            if v.version not in protected and v.version not in newest and v.status != "building"
        ]
        for version in doomed:
            await self.drop_version(kb, version)
        # Conversions stored by builds that never completed (a day gives a running build time to finish).
        await self._conn.execute(
            """DELETE FROM ragops.kb_extractions e
               WHERE e.created_at < now() - interval '1 day'
                 AND NOT EXISTS (SELECT 1 FROM ragops.kb_documents d WHERE d.extraction_key = e.key)"""
        )
        return doomed

    # ---- retrieval ---------------------------------------------------------------------------

    async def vector_search(
        self, record: VersionRecord, query: Vector, k: int, *, metadata: dict[str, Any] | None = None
    ) -> list[RetrievedChunk]:
        """The k chunks of the version nearest to `query`, nearest first."""
        statement = _vector_statement(record.kb, record.space, k, bool(metadata))
        rows = await self._search(statement, _search_parameters(record, metadata, vector=query), ef_search=k)
        return [_retrieved(row, _similarity(record.space.distance, float(row[7]))) for row in rows]

    async def text_search(
        self, record: VersionRecord, query: str, k: int, *, metadata: dict[str, Any] | None = None
    ) -> list[RetrievedChunk]:
        """The k chunks of the version that score highest in BM25 for `query`'s words, best first.

        Any word may match (OR): a question's words are not all in the passage that answers it.
        Scores are exact BM25 but the candidates are bounded: each query term contributes its
        LEXICAL_CANDIDATES_PER_TERM postings of highest impact (an index range scan), so a word
        found in most chunks costs no more than a rare one. A chunk outside a common word's top
        postings loses only that word's small share of its score (common words have a low IDF).
        """
        statement = _text_statement(record.kb, record.space, k, bool(metadata))
        rows = await self._search(statement, _search_parameters(record, metadata, text=query))
        return [_retrieved(row, float(row[7])) for row in rows]

    async def hybrid_search(
        self,
        record: VersionRecord,
        query: Vector,
        text: str,
        k: int,
        *,
        fusion: Fusion,
        metadata: dict[str, Any] | None = None,
    ) -> list[RetrievedChunk]:
        """Vector and BM25 rankings fused by weighted reciprocal rank, in one statement.

        One round trip: both halves, the fusion and the rows of the k winners are computed by the
        server, which reads the text of k chunks rather than of both candidate lists.
        """
        depth = fusion.depth(k)
        statement = _hybrid_statement(record.kb, record.space, k, depth, bool(metadata))
        parameters = {
            **_search_parameters(record, metadata, vector=query, text=text),
            "wv": float(fusion.vector_weight),
            "wl": float(fusion.lexical_weight),
            "rrf": float(fusion.rrf_k),
        }
        rows = await self._search(statement, parameters, ef_search=depth)
        return [_retrieved(row, float(row[7])) for row in rows]

    async def _search(
        self, statement: bytes, parameters: dict[str, Any], *, ef_search: int | None = None
    ) -> list[tuple[Any, ...]]:
        """Runs a search statement with the settings it needs, in one round trip.

        The statement runs on a generic plan: psycopg prepares it after a few uses, but PostgreSQL
        would still plan each execution anew (a custom plan for its parameters), and planning the
        hybrid statement costs about as much as running it. Its plan does not depend on the
        parameters (the limits are literals), so the generic plan is the one a custom plan would pick.

        On a connection that holds these settings for its session (`prepare_search_session`, the
        runtime's pooled connections) the statement runs alone; otherwise, or when it needs a
        deeper HNSW scan than the session's, the settings are set for its transaction only, in a
        pipeline: BEGIN, the settings, the statement and COMMIT, about twice the client's CPU.
        """
        settings = _search_settings(ef_search)
        if self._conn in _search_sessions and settings <= SEARCH_SESSION_SETTINGS:
            cursor = await self._conn.execute(statement, parameters)
            return await cursor.fetchall()
        async with self._conn.pipeline(), self._conn.transaction():
            await self._conn.execute(_settings_statement(tuple(sorted(settings)), local=True))
            cursor = await self._conn.execute(statement, parameters)
        fetched: list[tuple[Any, ...]] = await cursor.fetchall()
        return fetched


MIN_EF_SEARCH = 40
"""The HNSW candidate list of every search at least (pgvector's default): top 20 and a hybrid's depth of 40."""


def _search_settings(ef_search: int | None) -> frozenset[tuple[str, str]]:
    """What a search needs set: a generic plan, and for an HNSW scan its depth and iterative order."""
    settings = {("plan_cache_mode", "force_generic_plan")}
    if ef_search is not None:
        # relaxed_order lets the HNSW scan continue past ef_search until enough members are found;
        # the statement's ORDER BY restores exact order among the candidates it returned.
        settings |= {("hnsw.iterative_scan", "relaxed_order"), ("hnsw.ef_search", str(max(MIN_EF_SEARCH, ef_search)))}
    return frozenset(settings)


SEARCH_SESSION_SETTINGS = _search_settings(MIN_EF_SEARCH)
"""The settings a pooled connection keeps for its session: those of every search of the default depth.

The generic plan then applies to every statement the connection prepares (psycopg prepares a
statement after its fifth use): the runtime's others are key lookups and inserts, whose plans
do not depend on their parameters either."""

_search_sessions: weakref.WeakSet[psycopg.AsyncConnection[Any]] = weakref.WeakSet()


async def prepare_search_session(connection: psycopg.AsyncConnection[Any]) -> None:
    """Sets SEARCH_SESSION_SETTINGS for the rest of `connection`'s session (an autocommit connection).

    For connections that a pool keeps for searches: a search of the default depth on them is one
    statement instead of a transaction around the statement and its settings.
    """
    await connection.execute(_settings_statement(tuple(sorted(SEARCH_SESSION_SETTINGS)), local=False))
    _search_sessions.add(connection)


@dataclass(frozen=True)
class _LexiconTables:
    """The BM25 side of a chunk table: postings (term, chunk, impact), document frequencies, table stats."""

    postings: sql.Identifier
    terms: sql.Identifier
    stats: sql.Identifier

    @classmethod
    def of(cls, kb: str, space: EmbeddingSpace) -> _LexiconTables:
        return cls(
            postings=derived_identifier(kb, space.key, suffix="_postings"),
            terms=derived_identifier(kb, space.key, suffix="_terms"),
            stats=derived_identifier(kb, space.key, suffix="_lexstats"),
        )


class _Search:
    """The SQL pieces every search shares: the version's membership, the metadata filter, both halves.

    Only what shapes the statement goes in (the table, the limits, whether metadata filters), so
    that statements are rendered once per shape (see `_vector_statement`) and the values are
    parameters (see `_search_parameters`).
    """

    def __init__(self, kb: str, space: EmbeddingSpace, *, depth: int, filtered: bool) -> None:
        self.depth = depth
        self.filtered = filtered
        self.chunks = derived_identifier(kb, space.key, suffix="_chunks")
        self.members = derived_identifier(kb, space.key, suffix="_members")
        self.lexicon = _LexiconTables.of(kb, space)
        self.operator = sql.SQL(_DISTANCE_SQL[space.distance][1])

    def dense(self) -> sql.Composable:
        """The `depth` nearest member chunks: (chunk_id, distance).

        A version that holds every chunk of its table skips the membership probe of each candidate
        (evaluated once, before the scan), as the lexical half does. `OFFSET 0` keeps the probe an
        index lookup per candidate: without it the planner may hash the version's whole membership.
        """
        return sql.SQL(
            """SELECT c.id AS chunk_id, c.embedding {op} %(q)s AS distance
               FROM {chunks} c
               WHERE ((SELECT s.chunks FROM {stats} s) = %(members)s
                      OR EXISTS (SELECT 1 FROM {members} m WHERE m.version_id = %(v)s AND m.chunk_id = c.id
                                 OFFSET 0)){meta}
               ORDER BY c.embedding {op} %(q)s
               LIMIT {depth}"""
        ).format(
            depth=sql.Literal(self.depth),
            stats=self.lexicon.stats,
            op=self.operator,
            chunks=self.chunks,
            members=self.members,
            meta=sql.SQL(" AND c.metadata @> %(meta)s") if self.filtered else sql.SQL(""),
        )

    def lexical(self) -> sql.Composable:
        """CTEs ending in `lexical` (chunk_id, score): the `depth` best member chunks by BM25."""
        meta = (
            sql.SQL(
                " AND EXISTS (SELECT 1 FROM {chunks} c WHERE c.id = hit.chunk_id AND c.metadata @> %(meta)s)"
            ).format(chunks=self.chunks)
            if self.filtered
            else sql.SQL("")
        )
        # The query's words go through the same parser and stemmer as the chunks' (to_tsvector), which
        # also drops stop words; words no chunk holds have no document frequency and drop out too.
        # Each term's postings are read best impact first and cut at `per_term` before the version and
        # metadata checks: a bounded index range scan per term, whatever the term's frequency. The
        # checks then drop candidates of other versions sharing the chunk table (most chunks are
        # shared between versions, so few) and of other metadata. A version that holds every chunk of
        # its table (the first one built in an embedding space, or the only one left) needs no
        # membership check: it costs an index probe per candidate, most of the lexical half's time.
        # The whole-table test is evaluated once (an InitPlan) and short-circuits the probe; `OFFSET 0`
        # keeps the probe one index lookup per candidate, never a join or a hash that reads the
        # version's whole membership (100k rows at 100k chunks).
        return sql.SQL(
            """query_terms AS (
                   SELECT t.term,
                          ln(1.0::float8 + (s.chunks - t.df + 0.5::float8) / (t.df + 0.5::float8)) AS idf
                   FROM unnest(tsvector_to_array(to_tsvector({config}, %(text)s))) AS u(term)
                   JOIN {terms} t ON t.term = u.term
                   CROSS JOIN {stats} s
                   WHERE t.df > 0),
               lexical AS MATERIALIZED (
                   SELECT hit.chunk_id, sum(q.idf * hit.impact) AS score
                   FROM query_terms q
                   CROSS JOIN LATERAL (
                       SELECT p.chunk_id, p.impact FROM {postings} p
                       WHERE p.term = q.term
                       ORDER BY p.impact DESC
                       LIMIT {per_term}) hit
                   WHERE ((SELECT s.chunks FROM {stats} s) = %(members)s
                          OR EXISTS (SELECT 1 FROM {members} m WHERE m.version_id = %(v)s AND m.chunk_id = hit.chunk_id
                                     OFFSET 0)) {meta}
                   GROUP BY hit.chunk_id
                   ORDER BY score DESC, hit.chunk_id
                   LIMIT {depth})"""
        ).format(
            depth=sql.Literal(self.depth),
            per_term=sql.Literal(max(LEXICAL_CANDIDATES_PER_TERM, self.depth)),
            config=sql.Literal(_TEXT_SEARCH_CONFIG),
            terms=self.lexicon.terms,
            stats=self.lexicon.stats,
            postings=self.lexicon.postings,
            members=self.members,
            meta=meta,
        )


def _search_parameters(
    record: VersionRecord,
    metadata: dict[str, Any] | None,
    *,
    vector: Vector | None = None,
    text: str | None = None,
) -> dict[str, Any]:
    """The values of a search statement; its limits are literals in the statement, not parameters: its
    generic plan (see `KnowledgeStore._search`) must know that few rows come out, or it joins whole tables."""
    # The version's member count (its manifest's chunks), compared with the table's chunk count.
    parameters: dict[str, Any] = {"v": record.id, "members": int((record.manifest or {}).get("chunks", -1))}
    if vector is not None:
        parameters["q"] = vector
    if text is not None:
        parameters["text"] = text
    if metadata:
        parameters["meta"] = Jsonb(metadata)
    return parameters


# Statements are rendered once per shape (knowledge base, embedding space, limits, filtered or not):
# composing and quoting them on every query cost a fifth of a busy runtime's CPU.


@functools.lru_cache(maxsize=256)
def _vector_statement(kb: str, space: EmbeddingSpace, k: int, filtered: bool) -> bytes:
    search = _Search(kb, space, depth=k, filtered=filtered)
    return (
        sql.SQL(
            """WITH dense AS MATERIALIZED ({dense})
               SELECT c.id, c.document_id, c.source, c.position, c.heading_path, c.text, c.metadata, d.distance
               FROM dense d JOIN {chunks} c ON c.id = d.chunk_id
               ORDER BY d.distance, c.id"""
        )
        .format(dense=search.dense(), chunks=search.chunks)
        .as_bytes(None)
    )


@functools.lru_cache(maxsize=256)
def _text_statement(kb: str, space: EmbeddingSpace, k: int, filtered: bool) -> bytes:
    search = _Search(kb, space, depth=k, filtered=filtered)
    return (
        sql.SQL(
            """WITH {lexical_ctes}
               SELECT c.id, c.document_id, c.source, c.position, c.heading_path, c.text, c.metadata, l.score
               FROM lexical l JOIN {chunks} c ON c.id = l.chunk_id
               ORDER BY l.score DESC, c.id"""
        )
        .format(lexical_ctes=search.lexical(), chunks=search.chunks)
        .as_bytes(None)
    )


@functools.lru_cache(maxsize=256)
def _hybrid_statement(kb: str, space: EmbeddingSpace, k: int, depth: int, filtered: bool) -> bytes:
    """Both halves `depth` deep, fused by weighted reciprocal rank, and the rows of the k winners."""
    search = _Search(kb, space, depth=depth, filtered=filtered)
    return (
        sql.SQL(
            """WITH dense AS MATERIALIZED ({dense}),
               {lexical_ctes},
               ranked AS (
                   SELECT chunk_id, row_number() OVER (ORDER BY distance, chunk_id) AS rank, %(wv)s::float8 AS weight
                   FROM dense
                   UNION ALL
                   SELECT chunk_id, row_number() OVER (ORDER BY score DESC, chunk_id), %(wl)s::float8 FROM lexical),
               fused AS (
                   SELECT chunk_id, sum(weight / (%(rrf)s::float8 + rank)) AS score, min(rank) AS best
                   FROM ranked GROUP BY chunk_id
                   ORDER BY score DESC, best, chunk_id
                   LIMIT {k})
               SELECT c.id, c.document_id, c.source, c.position, c.heading_path, c.text, c.metadata, f.score
               FROM fused f JOIN {chunks} c ON c.id = f.chunk_id
               ORDER BY f.score DESC, f.best, f.chunk_id"""
        )
        .format(dense=search.dense(), lexical_ctes=search.lexical(), chunks=search.chunks, k=sql.Literal(k))
        .as_bytes(None)
    )


@functools.lru_cache(maxsize=16)
def _settings_statement(settings: tuple[tuple[str, str], ...], *, local: bool) -> bytes:
    """One statement for all of a search's settings, for its transaction (`local`) or the rest of the session."""
    return (
        sql.SQL("SELECT {}")
        .format(
            sql.SQL(", ").join(
                sql.SQL("set_config({}, {}, {})").format(sql.Literal(name), sql.Literal(value), sql.Literal(local))
                for name, value in settings
            )
        )
        .as_bytes(None)
    )


def _full_text(context: sql.Composable, text: sql.Composable) -> sql.Composable:
    """A chunk's full-text vector: its context (title and headings) and its text, one expression everywhere."""
    return sql.SQL("to_tsvector({config}, {context} || ' ' || {text})").format(
        config=sql.Literal(_TEXT_SEARCH_CONFIG), context=context, text=text
    )


def _length(tsv: sql.Composable) -> sql.Composable:
    """BM25's document length of a tsvector: its word occurrences."""
    return sql.SQL("(SELECT coalesce(sum(cardinality(e.positions)), 0) FROM unnest({tsv}) e)").format(tsv=tsv)


def _retrieved(row: Sequence[Any], score: float) -> RetrievedChunk:
    """A search row (id, document_id, source, position, heading_path, text, metadata, ...) as a chunk."""
    return RetrievedChunk(
        chunk_id=row[0],
        document_id=row[1],
        source=row[2],
        position=row[3],
        heading_path=tuple(row[4]),
        text=row[5],
        metadata=row[6],
        score=score,
    )


def _servable(record: VersionRecord) -> bool:
    """Built and gated (its newest verdict passed): a version a rollback may return to."""
    return record.status == "built" and record.gate_passed is True


def _check_servable(kb: str, version: str, record: VersionRecord | None, *, force: bool) -> None:
    """Refuses a version that would serve incomplete or ungated data (force skips the gate only)."""
    if record is None:
        raise ActivationRefused(f"knowledge base {kb!r} has no version {version!r}")
    if record.status != "built":
        raise ActivationRefused(f"version {version!r} is {record.status}, not built: it cannot serve")
    if record.gate_passed is None and not force:
        raise ActivationRefused(f"version {version!r} has not been evaluated: run `ragops kb eval` (or --force)")
    if record.gate_passed is False and not force:
        failed = ", ".join((record.gate or {}).get("failedMetrics", [])) or "see its gate report"
        raise ActivationRefused(f"version {version!r} failed its gate ({failed}); pass --force to override")


def _check_activation(
    kb: str,
    version: str,
    record: VersionRecord | None,
    current: VersionRecord | None,
    *,
    force: bool,
    was_canary: bool = False,
) -> None:
    """Refuses a switch that would serve an incomplete, ungated or incompatible version.

    A candidate promoted from a canary has already been served in its own embedding space by every
    runtime (an embedding-model migration), so a dimension change needs no force then.
    """
    _check_servable(kb, version, record, force=force)
    assert record is not None
    if current is not None and current.space.dimensions != record.space.dimensions and not (force or was_canary):
        raise ActivationRefused(
            f"version {version!r} uses {record.space.dimensions}-dimension embeddings but the active version "
            f"{current.version!r} uses {current.space.dimensions}: runtimes embed queries for the active "
            "dimension; reconfigure them, then pass --force"
        )


def _check_split_values(weight: int, shadow_percent: float, split_id: str) -> None:
    if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 100:
        raise ActivationRefused(f"canary weight must be a whole percent from 0 to 100, got {weight!r}")
    if not (math.isfinite(shadow_percent) and 0 <= shadow_percent <= 100):
        raise ActivationRefused(f"shadow percent must be from 0 to 100, got {shadow_percent!r}")
    if not split_id or len(split_id) > 253:
        raise ActivationRefused("split_id must be a non-empty identity of the step, at most 253 characters")


def _similarity(distance: str, value: float) -> float:
    if distance == "cosine":
        return 1.0 - value
    if distance == "innerProduct":
        return -value  # <#> is the negative inner product
    return -value


def _version_record(row: dict[str, Any]) -> VersionRecord:
    return VersionRecord(
        id=row["id"],
        kb=row["kb"],
        version=row["version"],
        status=row["status"],
        space=EmbeddingSpace.from_json(row["space"]),
        chunk_table=row["chunk_table"],
        settings=row["settings"],
        manifest=row["manifest"],
        gate=row["gate"],
        gate_passed=row["gate_passed"],
        error=row["error"],
        created_at=row["created_at"],
        built_at=row["built_at"],
    )
