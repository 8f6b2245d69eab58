"""Builds one knowledge-base version: ingest, chunk, embed only what is new, store, index, complete.

The version is registered first (so a re-run of a finished build returns at once), new chunks
are embedded and stored in committed groups (so an interrupted build resumes where it stopped,
embedding nothing twice), and it becomes `built` only in the final transaction of the store.
Reuse works at two levels: a chunk identical to one of an earlier version is shared as is; a
chunk whose text was embedded before by the same model reuses that embedding, whatever index or
knowledge base it was embedded for (`KnowledgeStore.cached_embeddings`).

This module orchestrates; SQL lives in the store, HTTP in the embedders, parsing in ingest.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import inspect
import json
import os
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import numpy as np
import psycopg

from ..embedding import Embedder, EmbeddingError, embed_all, make_embedder
from ..store import ChunkRow, DocumentRow, EmbeddingSpace, KnowledgeStore, StoreError, VersionRecord
from ..store.knowledge import chunk_key
from ..store.shards import clear_parts, ensure_parts_table, publishing, record_part, recorded_parts
from .chunking import chunk_document
from .cleaning import BoilerplateReport
from .documents import Chunk, Document, sha256_hex
from .ingest import Extract, IngestError, IngestResult, SkippedSource, extract_documents, read_sources
from .sharding import Shard, assign_shares

_T = TypeVar("_T")

_KEY_BATCH = 10_000
"""Keys per lookup query: bounded so a 100k-chunk build never sends one giant array."""


class BuildError(Exception):
    """The build cannot complete; the message names the cause. The version is left unbuilt."""


@dataclass(frozen=True)
class ChunkingSettings:
    strategy: Literal["recursive", "fixed"] = "recursive"
    size: int = 512
    overlap: int = 64


@dataclass(frozen=True)
class EmbeddingSettings:
    provider: str = "static"
    model: str = "wordllama-l2-supercat"
    dimensions: int = 256
    endpoint: str | None = None
    batch_size: int = 64
    concurrency: int = 4


@dataclass(frozen=True)
class IndexSettings:
    distance: Literal["cosine", "l2", "innerProduct"] = "cosine"
    m: int = 16
    ef_construction: int = 64


@dataclass(frozen=True)
class BuildRequest:
    knowledge_base: str
    version: str
    sources: tuple[str, ...]
    chunking: ChunkingSettings = ChunkingSettings()
    embedding: EmbeddingSettings = EmbeddingSettings()
    index: IndexSettings = IndexSettings()
    strict: bool = False

    @property
    def space(self) -> EmbeddingSpace:
        return EmbeddingSpace(
            provider=self.embedding.provider,
            model=self.embedding.model,
            dimensions=self.embedding.dimensions,
            distance=self.index.distance,
            m=self.index.m,
            ef_construction=self.index.ef_construction,
        )

    def settings(self) -> dict[str, Any]:
        """What defines the version's content, recorded with it; never includes credentials."""
        return {
            "sources": list(self.sources),
            "chunking": {
                "strategy": self.chunking.strategy,
                "size": self.chunking.size,
                "overlap": self.chunking.overlap,
            },
            "embedding": {"endpoint": self.embedding.endpoint, "batchSize": self.embedding.batch_size},
        }


class BuildProgress(Protocol):
    def stage(self, name: str, total: int | None = None) -> None: ...
    def advance(self, amount: int) -> None: ...
    def log(self, message: str) -> None: ...


class SilentProgress:
    def stage(self, name: str, total: int | None = None) -> None:
        pass

    def advance(self, amount: int) -> None:
        pass

    def log(self, message: str) -> None:
        pass


@dataclass(frozen=True)
class BuildReport:
    record: VersionRecord
    manifest: dict[str, Any]
    already_built: bool
    skipped: tuple[SkippedSource, ...] = ()
    embedding_requests: int = 0
    embedded_chunks: int = 0


@dataclass(frozen=True)
class ShardReport:
    """What one shard of a sharded build did, and the version's report if it is the one that completed it."""

    record: VersionRecord
    shard: Shard
    already_built: bool = False
    documents: int = 0
    chunks: int = 0
    embedded_chunks: int = 0
    embedding_requests: int = 0
    published: BuildReport | None = None
    """Set on the shard that found every part recorded and completed the version; None on the others."""


@dataclass
class _Plan:
    """What one build must do, computed before any embedding."""

    documents: list[Document]
    keys: list[str] = field(default_factory=list)
    """Every chunk key of the version, document by document in position order."""
    counts: dict[str, int] = field(default_factory=dict)
    """Document id -> its number of chunks."""
    new: list[tuple[Document, Chunk, str]] = field(default_factory=list)
    """The chunks of the documents chunked by this build: (document, chunk, chunk key)."""
    known: dict[str, int] = field(default_factory=dict)
    """Chunk key -> id of the chunks already stored (reused documents' and identical chunks')."""
    chunking_keys: dict[str, str] = field(default_factory=dict)
    reused_documents: int = 0


async def build_version(
    store: KnowledgeStore,
    request: BuildRequest,
    *,
    api_key: str | None = None,
    embedder: Embedder | None = None,
    progress: BuildProgress | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> BuildReport:
    """Builds `request` into `store`; idempotent, resumable, and never leaves a half version built.

    However the build ends before completing, the version is left resumable: a known error or an
    interruption (a signal, a cancelled task) marks it failed with the cause; a builder killed
    outright or cut off from PostgreSQL leaves it `building` without a lease, which
    `KnowledgeStore.fail_interrupted_builds` reports as failed. Running the same build again
    resumes it and ends with the same chunks, vectors and content digest as an uninterrupted build.
    """
    progress = progress or SilentProgress()
    started = clock()
    record = await store.begin_version(request.knowledge_base, request.version, request.space, request.settings())
    if record.status == "built" and record.manifest is not None:
        await store.end_build(record)
        progress.log(f"{request.knowledge_base}/{request.version} is already built; nothing to do")
        return BuildReport(record=record, manifest=record.manifest, already_built=True)
    return await _failing_version(
        store, record, _build(store, record, request, api_key, embedder, progress, clock, started)
    )


async def build_shard(
    store: KnowledgeStore,
    request: BuildRequest,
    shard: Shard,
    *,
    api_key: str | None = None,
    embedder: Embedder | None = None,
    progress: BuildProgress | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> ShardReport:
    """Builds `shard`'s share of `request`; the shard that records the last part completes the version.

    Every shard reads all the sources (through the store's extraction cache) into the documents
    a one-process build would have, boilerplate removed over all of them, then chunks, embeds and
    stores only its share (`sharding.assign_shares`) into the same version, which stays
    `building`. A new chunk table's BM25 average length is seeded from the chunks a one-process
    build would store first (`KnowledgeStore.seed_lexicon`), whichever shard stores first. Each
    shard then records its part; under the version's publish lock, the shard that finds all of
    them recorded builds the indexes and completes the version with their union, in one
    transaction as always. Chunks, postings, documents and manifest are those of a one-process
    build, bar what measures the run (seconds, embedding requests, reuse counts). A retried
    shard redoes its own share only, reusing every chunk it had stored; a shard that fails marks
    the version failed with the cause, and its retry (or any shard starting) resumes it.
    """
    progress = progress or SilentProgress()
    started_at = now()
    await ensure_parts_table(store)
    record = await store.begin_version(
        request.knowledge_base, request.version, request.space, request.settings(), shared=True
    )
    if record.status == "built" and record.manifest is not None:
        await store.end_build(record)
        progress.log(f"{request.knowledge_base}/{request.version} is already built; nothing to do")
        return ShardReport(record=record, shard=shard, already_built=True)
    return await _failing_version(
        store, record, _build_shard(store, record, request, shard, api_key, embedder, progress, now, started_at)
    )


async def _failing_version(store: KnowledgeStore, record: VersionRecord, work: Coroutine[Any, Any, _T]) -> _T:
    """Runs `work` (a build of `record`), marking the version failed with the cause if it stops early."""
    try:
        return await work
    except BaseException as error:
        cause = _failure(error)
        with contextlib.suppress(psycopg.Error, StoreError):
            # Best effort: without a connection the version keeps no lease and reads as interrupted.
            await store.fail_version(record, cause)
        if isinstance(error, BuildError | EmbeddingError | IngestError | psycopg.OperationalError):
            raise BuildError(cause) from error
        raise
    finally:
        with contextlib.suppress(psycopg.Error):
            await store.end_build(record)


def _failure(error: BaseException) -> str:
    """What the version's `error` says about why its build stopped."""
    if isinstance(error, BuildError | EmbeddingError | IngestError | StoreError):
        return str(error)
    if isinstance(error, asyncio.CancelledError | KeyboardInterrupt | SystemExit):
        return "the build was interrupted (stopped by a signal); run the same build again to resume it"
    if isinstance(error, psycopg.OperationalError):
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return f"lost PostgreSQL during the build ({first}); run the same build again to resume it"
    return f"internal error: {type(error).__name__}: {error}"


async def _build(
    store: KnowledgeStore,
    record: VersionRecord,
    request: BuildRequest,
    api_key: str | None,
    embedder: Embedder | None,
    progress: BuildProgress,
    clock: Callable[[], float],
    started: float,
) -> BuildReport:
    owned_embedder = embedder is None
    if embedder is None:
        embedder = _make_embedder(request, api_key)
    try:
        result = await _read(store, request, progress)
        plan = await _plan(store, record, request, result.documents, progress)
        if not plan.keys:
            raise BuildError("the sources yielded no text to index")
        requests, embedded, ids = await _store_new_chunks(store, record, request, plan, embedder, progress)
    finally:
        if owned_embedder:
            await embedder.aclose()
    return await _complete(
        store,
        record,
        request,
        result,
        chunk_ids=ids.values(),
        documents=_document_rows(plan, result),
        chunk_keys=plan.keys,
        embedded_chunks=embedded,
        embedding_requests=requests,
        reused_documents=plan.reused_documents,
        seconds=clock() - started,
        progress=progress,
    )


def _make_embedder(request: BuildRequest, api_key: str | None) -> Embedder:
    return make_embedder(
        request.embedding.provider,
        model=request.embedding.model,
        dimensions=request.embedding.dimensions,
        endpoint=request.embedding.endpoint,
        api_key=api_key,
    )


async def _build_shard(
    store: KnowledgeStore,
    record: VersionRecord,
    request: BuildRequest,
    shard: Shard,
    api_key: str | None,
    embedder: Embedder | None,
    progress: BuildProgress,
    now: Callable[[], datetime],
    started_at: datetime,
) -> ShardReport:
    result = await _read(store, request, progress)
    shares = assign_shares([len(document.text) for document in result.documents], shard.count)
    mine = [document for document, share in zip(result.documents, shares, strict=True) if share == shard.index]
    progress.log(f"shard {shard.index + 1} of {shard.count}: {len(mine)} of {len(result.documents)} documents")
    owned_embedder = embedder is None
    if embedder is None:
        embedder = _make_embedder(request, api_key)
    try:
        plan = await _plan(store, record, request, mine, progress)
        if not await store.has_lexicon(record):
            await store.seed_lexicon(record, _first_stored(result.documents, request))
        requests, embedded, ids = await _store_new_chunks(store, record, request, plan, embedder, progress)
    finally:
        if owned_embedder:
            await embedder.aclose()
    part = {
        "documentsDigest": _documents_digest(result.documents),
        "startedAt": started_at.isoformat(),
        "documents": [_document_json(row) for row in _document_rows(plan, result)],
        "chunkKeys": plan.keys,
        "embeddedChunks": embedded,
        "embeddingRequests": requests,
        "reusedDocuments": plan.reused_documents,
    }
    await record_part(store, record, shard.count, shard.index, ids.values(), part)
    progress.log(
        f"shard {shard.index + 1} of {shard.count} stored: {len(mine)} documents, {len(plan.keys)} chunks, "
        f"{embedded} embedded, {requests} embedding requests"
    )
    published = await _publish(store, record, request, shard, result, progress, now)
    return ShardReport(
        record=published.record if published is not None else record,
        shard=shard,
        documents=len(mine),
        chunks=len(plan.keys),
        embedded_chunks=embedded,
        embedding_requests=requests,
        published=published,
    )


async def _publish(
    store: KnowledgeStore,
    record: VersionRecord,
    request: BuildRequest,
    shard: Shard,
    result: IngestResult,
    progress: BuildProgress,
    now: Callable[[], datetime],
) -> BuildReport | None:
    """Completes the version if every shard's part is recorded and no other shard has completed it."""
    async with publishing(store, record):
        current = await store.get_version(record.kb, record.version)
        if current is not None and current.status == "built":
            return None
        parts = await recorded_parts(store, record, shard.count)
        if len(parts) < shard.count:
            waiting = sorted(set(range(shard.count)) - {part.shard for part in parts})
            progress.log(f"waiting for shards {', '.join(str(index + 1) for index in waiting)} to store their parts")
            return None
        digest = _documents_digest(result.documents)
        changed = [part.shard + 1 for part in parts if part.report["documentsDigest"] != digest]
        if changed:
            raise BuildError(
                f"the sources changed while the shards read them: shards {', '.join(map(str, changed))} read "
                f"other documents than shard {shard.index + 1}; build a new version from sources that stay put"
            )
        documents = sorted(
            (_document_row(row) for part in parts for row in part.report["documents"]),
            key=lambda row: row.document_id,
        )
        chunk_keys = [key for part in parts for key in part.report["chunkKeys"]]
        if not chunk_keys:
            raise BuildError("the sources yielded no text to index")
        started_at = min(datetime.fromisoformat(part.report["startedAt"]) for part in parts)
        report = await _complete(
            store,
            record,
            request,
            result,
            chunk_ids=[chunk_id for part in parts for chunk_id in part.chunk_ids],
            documents=documents,
            chunk_keys=chunk_keys,
            embedded_chunks=sum(part.report["embeddedChunks"] for part in parts),
            embedding_requests=sum(part.report["embeddingRequests"] for part in parts),
            reused_documents=sum(part.report["reusedDocuments"] for part in parts),
            seconds=(now() - started_at).total_seconds(),
            progress=progress,
        )
        await clear_parts(store, record)
        return report


def _first_stored(documents: Sequence[Document], request: BuildRequest) -> list[tuple[str, str]]:
    """(context, text) of the chunks a one-process build into an empty chunk table stores first.

    Its first committed group: the first `_group_size` distinct chunks of the documents in order
    (nothing is reused from an empty table), which fix the table's BM25 average length.
    """
    first: dict[str, tuple[str, str]] = {}
    size = _group_size(request.embedding)
    for document in documents:
        for _, chunk, key in _chunks(document, request.chunking):
            first.setdefault(key, (chunk.context, chunk.text))
            if len(first) == size:
                return list(first.values())
    return list(first.values())


def _documents_digest(documents: Sequence[Document]) -> str:
    """Identity of the documents read (the manifest's `sourcesDigest`): every shard must read the same."""
    return hashlib.sha256("\n".join(f"{d.id}\x1f{d.digest}" for d in documents).encode()).hexdigest()


def _document_json(row: DocumentRow) -> dict[str, Any]:
    return {
        "id": row.document_id,
        "source": row.source,
        "title": row.title,
        "digest": row.digest,
        "chunks": row.chunks,
        "extractionKey": row.extraction_key,
        "chunkingKey": row.chunking_key,
    }


def _document_row(data: dict[str, Any]) -> DocumentRow:
    return DocumentRow(
        data["id"],
        data["source"],
        data["title"],
        data["digest"],
        data["chunks"],
        extraction_key=data["extractionKey"],
        chunking_key=data["chunkingKey"],
    )


async def _complete(
    store: KnowledgeStore,
    record: VersionRecord,
    request: BuildRequest,
    result: IngestResult,
    *,
    chunk_ids: Iterable[int],
    documents: Sequence[DocumentRow],
    chunk_keys: Sequence[str],
    embedded_chunks: int,
    embedding_requests: int,
    reused_documents: int,
    seconds: float,
    progress: BuildProgress,
) -> BuildReport:
    """The last step of every build, sharded or not: indexes, manifest, and the version made whole at once."""
    progress.stage("indexing")
    await store.ensure_indexes(record)
    progress.stage("completing")
    manifest = build_manifest(
        request,
        result.documents,
        chunk_keys=chunk_keys,
        embedded_chunks=embedded_chunks,
        embedding_requests=embedding_requests,
        skipped=result.skipped,
        seconds=seconds,
        created_at=datetime.now(UTC),
        boilerplate=result.boilerplate,
        reused_extractions=result.reused_extractions,
        reused_documents=reused_documents,
    )
    record = await store.complete_version(record, chunk_ids, documents, manifest)
    progress.log(
        f"built {request.knowledge_base}/{request.version}: "
        f"{len(documents)} documents ({reused_documents} unchanged), {len(chunk_keys)} chunks, "
        f"{manifest['reusedEmbeddings']} embeddings reused, {embedding_requests} embedding requests, "
        f"{manifest['buildSeconds']:.1f}s"
    )
    return BuildReport(
        record=record,
        manifest=manifest,
        already_built=False,
        skipped=tuple(result.skipped),
        embedding_requests=embedding_requests,
        embedded_chunks=embedded_chunks,
    )


def _document_rows(plan: _Plan, result: IngestResult) -> list[DocumentRow]:
    return [
        DocumentRow(
            d.id,
            d.source,
            d.title,
            d.digest,
            plan.counts.get(d.id, 0),
            extraction_key=result.extraction_keys.get(d.id),
            chunking_key=plan.chunking_keys[d.id],
        )
        for d in plan.documents
    ]


async def _read(store: KnowledgeStore, request: BuildRequest, progress: BuildProgress) -> IngestResult:
    """Reads every source into documents, converting only what the store's extraction cache lacks.

    A document whose file is unchanged is not converted again (its HTML or reStructuredText
    conversion comes from the store's cache). Repeated blocks are still found across all of a
    source's documents, so the documents are those of a build from nothing, only cheaper.
    """
    progress.stage("reading sources")
    reading = await asyncio.to_thread(read_sources, list(request.sources), strict=request.strict)
    cached = {
        key: Extract(text, title, dropped)
        for key, (text, title, dropped) in (await store.cached_extractions(reading.extraction_keys)).items()
    }
    result = await asyncio.to_thread(extract_documents, reading, cached)
    await store.store_extractions({key: (e.text, e.title, e.dropped_chars) for key, e in result.extracted.items()})
    for skip in result.skipped:
        progress.log(f"skipped {skip.source}: {skip.reason}")
    dropped = result.boilerplate
    if dropped.markup_chars or dropped.repeated_chars:
        progress.log(
            f"boilerplate dropped: {dropped.markup_chars:,} characters of navigation markup, "
            f"{dropped.repeated_blocks:,} repeated blocks ({dropped.repeated_chars:,} characters); "
            f"{dropped.dropped_share:.1%} of the text"
        )
    return result


async def _plan(
    store: KnowledgeStore,
    record: VersionRecord,
    request: BuildRequest,
    documents: list[Document],
    progress: BuildProgress,
) -> _Plan:
    """Chunks `documents` and finds what is new, doing as little as an unchanged document allows.

    A document whose text, title and metadata are unchanged is not chunked again (its chunks
    come from an earlier version of this chunk table).
    """
    plan = _Plan(
        documents=documents,
        chunking_keys={document.id: chunking_key(document, request.chunking) for document in documents},
    )
    wanted = list(plan.chunking_keys.values())
    reusable: dict[str, list[tuple[str, int]]] = {}
    for start in range(0, len(wanted), _KEY_BATCH):
        reusable.update(await store.reusable_chunks(record, wanted[start : start + _KEY_BATCH]))

    progress.stage("chunking", len(documents))
    for document in documents:
        stored = reusable.get(plan.chunking_keys[document.id])
        if stored is not None:
            plan.reused_documents += 1
            plan.keys.extend(key for key, _ in stored)
            plan.known.update(stored)
            plan.counts[document.id] = len(stored)
        else:
            chunks = _chunks(document, request.chunking)
            plan.new.extend(chunks)
            plan.keys.extend(key for _, _, key in chunks)
            plan.counts[document.id] = len(chunks)
        progress.advance(1)
    keys = [key for _, _, key in plan.new]
    for start in range(0, len(keys), _KEY_BATCH):
        plan.known.update(await store.known_chunks(record, keys[start : start + _KEY_BATCH]))
    return plan


def _chunks(document: Document, chunking: ChunkingSettings) -> list[tuple[Document, Chunk, str]]:
    """`document`'s chunks, each with its chunk key."""
    return [
        (
            document,
            chunk,
            chunk_key(
                chunk.document_id,
                chunk.position,
                chunk.heading_path,
                chunk.text,
                dict(document.metadata),
                chunk.context,
            ),
        )
        for chunk in chunk_document(document, strategy=chunking.strategy, size=chunking.size, overlap=chunking.overlap)
    ]


def chunking_key(document: Document, chunking: ChunkingSettings) -> str:
    """Identity of `document`'s chunks: equal keys, equal chunks (the chunker is deterministic).

    It covers everything chunking reads (the document's id, text, title and metadata, the
    settings) and the chunker's own code, so a release that chunks differently reuses nothing.
    """
    identity = [
        _chunker_fingerprint(),
        chunking.strategy,
        chunking.size,
        chunking.overlap,
        document.id,
        document.title,
        document.digest,
        dict(document.metadata),
    ]
    return hashlib.sha256(json.dumps(identity, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


@functools.cache
def _chunker_fingerprint() -> str:
    """The code that turns a document into chunk keys: the chunker, the chunk type and `chunk_key`."""
    from . import chunking, documents

    try:
        code = b"".join(Path(module.__file__ or "").read_bytes() for module in (chunking, documents))
        code += inspect.getsource(chunk_key).encode()
    except (OSError, TypeError):
        code = os.urandom(16)  # no source to read: reuse nothing rather than guess
    return hashlib.sha256(code).hexdigest()


async def _store_new_chunks(
    store: KnowledgeStore,
    record: VersionRecord,
    request: BuildRequest,
    plan: _Plan,
    embedder: Embedder,
    progress: BuildProgress,
) -> tuple[int, int, dict[str, int]]:
    """Embeds and stores the chunks not stored yet, in committed groups.

    Returns (embedding requests, chunks whose embedding was computed now, chunk key -> id).
    """
    ids = dict(plan.known)
    pending: dict[str, tuple[Document, Chunk]] = {}
    for document, chunk, key in plan.new:
        if key not in ids:
            pending.setdefault(key, (document, chunk))
    digests = sorted({chunk.digest for _, chunk in pending.values()})
    cache: dict[str, np.ndarray] = {}
    for start in range(0, len(digests), _KEY_BATCH):
        cache.update(await store.cached_embeddings(record, digests[start : start + _KEY_BATCH]))

    progress.stage("embedding", len(pending))
    group_size = _group_size(request.embedding)
    items = list(pending.items())
    requests = fresh_chunks = 0
    for start in range(0, len(items), group_size):
        group = items[start : start + group_size]
        fresh = [chunk for _, (_, chunk) in group if chunk.digest not in cache]
        fresh_chunks += len(fresh)
        texts = sorted({chunk.embedding_text for chunk in fresh})
        if texts:
            vectors, stats = await embed_all(
                embedder, texts, batch_size=request.embedding.batch_size, concurrency=request.embedding.concurrency
            )
            requests += stats.requests
            for text, vector in zip(texts, vectors, strict=True):
                cache[sha256_hex(text)] = np.asarray(vector, dtype=np.float32)
        rows = [
            ChunkRow(
                document_id=chunk.document_id,
                source=document.source,
                position=chunk.position,
                heading_path=chunk.heading_path,
                text=chunk.text,
                text_digest=chunk.digest,
                token_count=chunk.token_count,
                metadata=dict(document.metadata),
                embedding=cache[chunk.digest],
                context=chunk.context,
            )
            for _, (document, chunk) in group
        ]
        ids.update(await store.insert_chunks(record, rows))
        progress.advance(len(group))
    return requests, fresh_chunks, ids


def _group_size(embedding: EmbeddingSettings) -> int:
    """Chunks embedded and stored per committed group."""
    return max(embedding.batch_size * embedding.concurrency * 4, 256)


def build_manifest(
    request: BuildRequest,
    documents: Sequence[Document],
    *,
    chunk_keys: Sequence[str],
    embedded_chunks: int,
    embedding_requests: int,
    skipped: Sequence[SkippedSource],
    seconds: float,
    created_at: datetime,
    boilerplate: BoilerplateReport | None = None,
    reused_extractions: int = 0,
    reused_documents: int = 0,
) -> dict[str, Any]:
    """The version manifest: what was built, from what, and what it cost. Keys follow the CRD status.

    `contentDigest` identifies the version's content (the SHA-256 of its sorted chunk keys, which
    cover each chunk's document, position, headings, context, text and metadata); with the
    embedding space it fixes every vector. Two builds of the same sources and settings have the
    same digest however they were done (from nothing, incrementally, resumed after a crash), which
    the cost fields (`embeddedChunks`, `reused*`, `embeddingRequests`, `buildSeconds`) do not share.
    """
    sources_digest = _documents_digest(sorted(documents, key=lambda d: d.id))
    content_digest = hashlib.sha256("\n".join(sorted(chunk_keys)).encode()).hexdigest()
    space = request.space
    chunks = len(chunk_keys)
    return {
        "knowledgeBase": request.knowledge_base,
        "version": request.version,
        "embeddingProvider": space.provider,
        "embeddingModel": space.model,
        "dimensions": space.dimensions,
        "chunking": f"{request.chunking.strategy}/{request.chunking.size}/{request.chunking.overlap}",
        "index": f"hnsw/m={space.m}/ef={space.ef_construction}/{space.distance}",
        "sources": list(request.sources),
        "sourcesDigest": sources_digest,
        "contentDigest": content_digest,
        "documents": len(documents),
        "chunks": chunks,
        "reusedEmbeddings": chunks - embedded_chunks,
        "embeddedChunks": embedded_chunks,
        "embeddingRequests": embedding_requests,
        "reusedExtractions": reused_extractions,
        "reusedDocuments": reused_documents,
        "skipped": [{"source": s.source, "reason": s.reason} for s in skipped],
        "boilerplate": (boilerplate or BoilerplateReport()).to_json(),
        "buildSeconds": round(seconds, 3),
        "createdAt": created_at.isoformat(),
    }
