"""The query pipeline: limits, version choice, cache, embed, retrieve, rerank, generate, log, in that order.

Each stage has a budget and a fallback: a failing reranker keeps the retrieval order, a failing
generator answers retrieval-only; both mark the answer `degraded` with the reason, and degraded
answers are never cached. What cannot be answered at all (no active version, database down,
retrieval over budget) raises `ServiceUnavailable`, which the HTTP layer turns into a 503.
This module decides; the HTTP layer only translates (see app.py).

During a progressive rollout each query is answered by one version, stable or canary, chosen
by the client's sticky assignment (rollout/assignment.py); everything after the choice (cache
key, embedding space, citations, metrics, answer log) belongs to that version. A share of the
queries stable answered is also retrieved on the candidate by the shadow runner, off the
response path.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
import psycopg
from opentelemetry.trace import Span
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from .answer_log import AnswerLogWriter
from .embedding import Embedder, EmbeddingError, make_embedder
from .errors import first_line
from .generation.anthropic import AnthropicGenerator, Generation, GenerationUnavailable
from .generation.pricing import Price, cost_usd
from .generation.prompt import Turn
from .kb.ingest import source_id
from .observability.metrics import RuntimeMetrics
from .observability.tracing import QueryTrace, Tracing, degrade
from .protection.cache import AnswerCacheBackend, make_key, normalize_query
from .protection.identity import ClientIdentity
from .protection.limits import ConcurrencyLimiter, TokenBucketLimiter
from .replica import ReadRouter
from .retrieval.hybrid import retrieve
from .retrieval.reranker import HttpReranker, RerankUnavailable
from .rollout import Role, ServedSplit
from .rollout.shadow import ShadowRunner
from .store import Fusion, KnowledgeStore, RetrievedChunk, VersionRecord
from .store.answers import AnswerRecord

Mode = Literal["generated", "retrieval_only", "cached"]
Scalar = str | int | float | bool


class ServiceUnavailable(Exception):
    """The query cannot be answered now; `code` is machine-readable, the message says why."""

    def __init__(self, code: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.retry_after = retry_after


class RateLimited(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__(f"rate limit exceeded; retry after {retry_after:.1f}s")
        self.retry_after = retry_after


class QueryTooLong(Exception):
    def __init__(self, length: int, limit: int) -> None:
        super().__init__(f"query is {length} characters; the limit is {limit}")
        self.limit = limit


@dataclass(frozen=True)
class Question:
    query: str
    client: ClientIdentity
    """Who asks: the rate limit takes `client.trusted`, version assignment `client.sticky_key`."""
    top_k: int | None = None
    filters: Mapping[str, Scalar] = field(default_factory=dict)
    history: tuple[Turn, ...] = ()
    """Earlier turns of the conversation, passed to generation (retrieval uses `query` alone)."""
    instructions: str | None = None
    """The client's own system message, added after the grounding rules."""
    retrieval_only: bool = False
    """Answer with the retrieved passages, without generation, even when a generator is configured."""


@dataclass(frozen=True)
class Answer:
    query_id: uuid.UUID
    knowledge_base: str
    kb_version: str
    answer: str | None
    mode: Mode
    degraded_reason: str | None
    chunks: tuple[RetrievedChunk, ...]
    input_tokens: int
    output_tokens: int
    cost_usd: float | None
    timings_ms: Mapping[str, float]
    generation_error: GenerationUnavailable | None = None
    """Why generation failed, typed, when it did (`degraded_reason` says it in words): a job retries on it."""
    role: Role = "stable"
    """Whether `kb_version` answered as the stable version or as the canary of a rollout."""
    stop_reason: str | None = None
    """Why generation stopped, as the model API said it (`end_turn`, `max_tokens`, ...); None without generation."""

    @property
    def degraded(self) -> bool:
        return self.degraded_reason is not None


@dataclass(frozen=True)
class Retrieved:
    """What retrieval produced for one question: the input of generation, streamed or not."""

    query_id: uuid.UUID
    record: VersionRecord
    role: Role
    chunks: tuple[RetrievedChunk, ...]
    degraded_reason: str | None
    timings_ms: dict[str, float]
    started: float
    cache_key: Any


class QueryEmbeddings:
    """Query vectors per embedding space, with an LRU: popular questions repeat."""

    def __init__(self, *, api_key: str | None, cache_size: int) -> None:
        self._api_key = api_key
        self._cache_size = cache_size
        self._cache: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._embedders: dict[str, Embedder] = {}

    def embedder_for(self, record: VersionRecord) -> Embedder:
        space = record.space
        if space.key not in self._embedders:
            endpoint = (record.settings.get("embedding") or {}).get("endpoint")
            self._embedders[space.key] = make_embedder(
                space.provider, model=space.model, dimensions=space.dimensions, endpoint=endpoint, api_key=self._api_key
            )
        return self._embedders[space.key]

    async def embed(self, record: VersionRecord, text: str) -> np.ndarray:
        key = (record.space.key, text)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        vectors = await self.embedder_for(record).embed_batch([text])
        vector = np.asarray(vectors[0], dtype=np.float32)
        if self._cache_size:
            self._cache[key] = vector
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return vector

    async def warm(self, record: VersionRecord) -> None:
        """Loads the version's embedder before its first query: the static model reads its files once."""
        await self.embedder_for(record).embed_batch([])

    async def aclose(self) -> None:
        for embedder in self._embedders.values():
            await embedder.aclose()


@dataclass
class QueryService:
    """Answers questions about the active version of one knowledge base."""

    knowledge_base: str
    deployment: str
    pool: AsyncConnectionPool[Any]
    """The primary: the answer log, feedback and jobs. Chunks are read through `reads`."""
    reads: ReadRouter
    metrics: RuntimeMetrics
    limiter: TokenBucketLimiter
    concurrency: ConcurrencyLimiter
    cache: AnswerCacheBackend[Answer]
    embeddings: QueryEmbeddings
    generator: AnthropicGenerator | None
    reranker: HttpReranker | None
    prices: Mapping[str, Price]
    top_k: int
    rerank_top_k: int
    hybrid: bool
    max_query_chars: int
    retrieval_timeout_seconds: float
    database_timeout_seconds: float
    active: Any  # ActiveVersionWatcher; typed loosely to keep this module free of the watcher's task logic
    answer_log: AnswerLogWriter
    shadow: ShadowRunner | None = None
    clock: Any = time.monotonic
    fusion: Fusion = field(default_factory=Fusion)
    tracing: Tracing = field(default_factory=Tracing.disabled)

    # ---- admission --------------------------------------------------------------------------

    def admit(self, question: Question) -> None:
        """Cheap checks before any work: length, then the client's rate."""
        if len(question.query) > self.max_query_chars:
            raise QueryTooLong(len(question.query), self.max_query_chars)
        decision = self.limiter.check(question.client.trusted, self.clock())
        if not decision.allowed:
            self.metrics.rate_limited()
            raise RateLimited(decision.retry_after_seconds)

    # ---- the pipeline -----------------------------------------------------------------------

    def _enter(self, question: Question) -> None:
        """Admission and a concurrency slot; the caller releases the slot."""
        self.admit(question)
        if not self.concurrency.try_acquire():
            self.metrics.saturated()
            raise ServiceUnavailable("saturated", "too many queries in flight; retry shortly", retry_after=1)

    async def answer(self, question: Question) -> Answer:
        trace = self.tracing.begin()
        try:
            answer = await self._answer(question, trace)
        except BaseException as error:
            trace.end(error=error)
            raise
        trace.end(_outcome(answer))
        return answer

    async def _answer(self, question: Question, trace: QueryTrace) -> Answer:
        self._enter(question)
        try:
            retrieved_or_cached = await self._retrieve(question, trace)
            if isinstance(retrieved_or_cached, Answer):
                return retrieved_or_cached
            retrieved = retrieved_or_cached
            generation, degraded, error = await self._generate(question, retrieved, trace)
            return await self._finish(question, retrieved, generation, degraded, error)
        finally:
            self.concurrency.release()

    async def stream(self, question: Question) -> tuple[Retrieved | Answer, AsyncIterator[tuple[str, Any]]]:
        """What retrieval produced (which version and role answer), then the events:
        ("retrieval", Retrieved | Answer), ("delta", str)..., ("done", Answer)."""
        trace = self.tracing.begin()
        try:
            self._enter(question)
        except BaseException as error:
            trace.end(error=error)
            raise
        try:
            retrieved_or_cached = await self._retrieve(question, trace)
        except BaseException as error:
            self.concurrency.release()
            trace.end(error=error)
            raise
        return retrieved_or_cached, self._stream_events(question, retrieved_or_cached, trace)

    async def _stream_events(
        self, question: Question, retrieved: Retrieved | Answer, trace: QueryTrace
    ) -> AsyncIterator[tuple[str, Any]]:
        try:
            yield "retrieval", retrieved
            if isinstance(retrieved, Answer):
                if retrieved.answer:
                    yield "delta", retrieved.answer
                trace.end(_outcome(retrieved))
                yield "done", retrieved
                return
            generation: Generation | None = None
            generation_error: GenerationUnavailable | None = None
            degraded = retrieved.degraded_reason
            if self._generates(question, retrieved):
                assert self.generator is not None
                started = self.clock()
                # Not a `with`: the span stays open across the yields below, ended here whatever happens.
                span = trace.start_stage(f"chat {self.generator.model}", self._chat_attributes(stream=True))
                try:
                    # aclosing: a client that hangs up mid-answer also closes the upstream stream.
                    async with contextlib.aclosing(
                        self.generator.stream(
                            question.query,
                            retrieved.chunks,
                            history=question.history,
                            instructions=question.instructions,
                        )
                    ) as events:
                        async for event in events:
                            if isinstance(event, Generation):
                                generation = event
                                _generated(span, event)
                            else:
                                yield "delta", event
                except GenerationUnavailable as error:
                    degraded = _join(degraded, f"generation {error.reason}: {error.detail}")
                    generation_error = error
                    self.metrics.degraded(f"generation_{error.reason}", **_labels(retrieved))
                    degrade(span, f"generation_{error.reason}")
                finally:
                    span.end()
                retrieved.timings_ms["generate"] = (self.clock() - started) * 1000
            answer = await self._finish(question, retrieved, generation, degraded, generation_error)
            trace.end(_outcome(answer))
            yield "done", answer
        except BaseException as error:
            trace.end(error=error)
            raise
        finally:
            self.concurrency.release()

    async def _retrieve(self, question: Question, trace: QueryTrace) -> Retrieved | Answer:
        started = self.clock()
        served: ServedSplit = self.active.served
        if served.stable is None:
            raise ServiceUnavailable("no_active_version", self.active.problem or "no active knowledge-base version")
        role, record = served.route(question.client.sticky_key)
        trace.served(kb=record.kb, version=record.version, role=role)
        labels = {"kb_version": record.version, "role": role}
        top_k = question.top_k or self.top_k
        params = {
            "topK": top_k,
            "filters": dict(question.filters),
            "hybrid": self.hybrid,
            "fusion": [self.fusion.vector_weight, self.fusion.lexical_weight, self.fusion.rrf_k]
            if self.hybrid
            else None,
            "rerankTopK": self.rerank_top_k,
            "generator": self.generator is not None and not question.retrieval_only,
            # Replicas of two templates share a Redis cache during a rollout: a new model or
            # answer length must not be served the old template's answers.
            "model": self.generator.model if self.generator is not None else None,
            "maxTokens": self.generator.max_tokens if self.generator is not None else None,
        }
        if question.history or question.instructions:
            # An answer depends on the conversation it continues, not on its last question alone.
            params["conversation"] = _conversation_digest(question)
        # Keyed by the version that answers: a cached stable answer is never served as canary.
        key = make_key(cache_version(record), question.query, params)
        with trace.stage("ragops.cache", {"ragops.cache.backend": self.cache.backend}) as span:
            hit = await self.cache.get(key)
            span.set_attribute("ragops.cache.hit", hit is not None)
        if hit is not None:
            self.metrics.cache_hit()
            # An answer of its own: its own id (logged, so it can be rated) and no cost or tokens
            # (it called no model); the text and citations are the cached answer's.
            answer = replace(
                hit,
                query_id=uuid.uuid4(),
                mode="cached",
                role=role,
                input_tokens=0,
                output_tokens=0,
                cost_usd=0.0,
                timings_ms={"total": (self.clock() - started) * 1000},
            )
            self.metrics.observe_query(mode="cached", status="ok", seconds=self.clock() - started, stages={}, **labels)
            self._log(question, answer)
            return answer
        self.metrics.cache_miss()

        try:
            chunks, timings = await self.search(
                record, question.query, top_k=top_k, filters=question.filters, trace=trace
            )
        except ServiceUnavailable:
            self.metrics.observe_query(mode="none", status="error", seconds=self.clock() - started, stages={}, **labels)
            raise
        query_id = uuid.uuid4()
        candidate = served.mirrors(query_id) if role == "stable" else None
        if candidate is not None and self.shadow is not None:
            self.shadow.submit(candidate, question.query, top_k=top_k, filters=question.filters, stable=chunks)

        degraded: str | None = None
        if not chunks:
            self.metrics.retrieval_empty(**labels)
        if self.reranker is not None and chunks:
            stage = self.clock()
            with trace.stage(
                "ragops.rerank",
                {"gen_ai.request.model": self.reranker.model or "", "gen_ai.request.top_k": self.rerank_top_k},
            ) as span:
                try:
                    chunks = await self.reranker.rerank(question.query, chunks, self.rerank_top_k)
                except RerankUnavailable as error:
                    degraded = f"reranker {error.reason}: kept the retrieval order"
                    self.metrics.degraded(f"rerank_{error.reason}", **labels)
                    degrade(span, f"rerank_{error.reason}")
            timings["rerank"] = (self.clock() - stage) * 1000
        return Retrieved(
            query_id=query_id,
            record=record,
            role=role,
            chunks=tuple(chunks[: self.rerank_top_k]),
            degraded_reason=degraded,
            timings_ms=timings,
            started=started,
            cache_key=key,
        )

    async def search(
        self,
        record: VersionRecord,
        query: str,
        *,
        top_k: int,
        filters: Mapping[str, Scalar] | None = None,
        trace: QueryTrace | None = None,
    ) -> tuple[list[RetrievedChunk], dict[str, float]]:
        """Embeds `query` in `record`'s own space and retrieves its top_k, within the retrieval budget.

        The one retrieval path: users' queries, shadow retrievals and golden probes all take it.
        Raises ServiceUnavailable when retrieval cannot be done now.
        """
        timings: dict[str, float] = {}
        waiting_for_database = False
        trace = trace or _UNTRACED
        space = record.space
        try:
            async with asyncio.timeout(self.retrieval_timeout_seconds):
                stage = self.clock()
                with trace.stage(
                    f"embeddings {space.model}",
                    {
                        "gen_ai.operation.name": "embeddings",
                        "gen_ai.provider.name": space.provider,
                        "gen_ai.request.model": space.model,
                        "gen_ai.embeddings.dimension.count": space.dimensions,
                    },
                ):
                    vector = await self.embeddings.embed(record, normalize_query(query))
                timings["embed"] = (self.clock() - stage) * 1000
                stage = self.clock()
                waiting_for_database = True

                async def on_connection(store: KnowledgeStore) -> list[RetrievedChunk]:
                    nonlocal waiting_for_database
                    waiting_for_database = False
                    return await retrieve(
                        store,
                        record,
                        vector,
                        query,
                        top_k=top_k,
                        hybrid=self.hybrid,
                        fusion=self.fusion,
                        metadata=dict(filters or {}) or None,
                    )

                with trace.stage(
                    f"retrieval {record.kb}/{record.version}",
                    {
                        "gen_ai.operation.name": "retrieval",
                        "gen_ai.data_source.id": f"{record.kb}/{record.version}",
                        "gen_ai.request.top_k": top_k,
                        # One SQL statement runs every search and the fusion, so they share this span.
                        "ragops.retrieval.searches": ["vector", "lexical", "fusion"] if self.hybrid else ["vector"],
                    },
                ) as span:
                    chunks = await self.reads.read(record, on_connection)
                    span.set_attribute("ragops.retrieval.returned", len(chunks))
                timings["retrieve"] = (self.clock() - stage) * 1000
                chunks = shown(record, chunks)
        except TimeoutError:
            if waiting_for_database:
                # The budget ran out before the pool had a connection to give: the database (or
                # the way to it) is what failed, whichever of the two timeouts fired first.
                raise ServiceUnavailable(
                    "database_unavailable",
                    f"no database connection within {self.retrieval_timeout_seconds * 1000:.0f} ms",
                    retry_after=2,
                ) from None
            raise ServiceUnavailable(
                "retrieval_timeout",
                f"retrieval took longer than {self.retrieval_timeout_seconds * 1000:.0f} ms",
                retry_after=1,
            ) from None
        except (PoolTimeout, psycopg.OperationalError) as error:
            raise ServiceUnavailable(
                "database_unavailable", f"the database is unavailable: {first_line(error)}", retry_after=2
            ) from None
        except EmbeddingError as error:
            raise ServiceUnavailable(
                "embedding_unavailable", f"query embedding failed: {error}", retry_after=2
            ) from None
        return chunks, timings

    def search_as(self, role: str) -> Callable[..., Awaitable[tuple[list[RetrievedChunk], dict[str, float]]]]:
        """`search` as its own trace, with `role` (shadow, probe): for retrievals that answer no user."""

        async def search(
            record: VersionRecord, query: str, *, top_k: int, filters: Mapping[str, Scalar] | None = None
        ) -> tuple[list[RetrievedChunk], dict[str, float]]:
            trace = self.tracing.begin(role)
            trace.served(kb=record.kb, version=record.version, role=role)
            try:
                result = await self.search(record, query, top_k=top_k, filters=filters, trace=trace)
            except BaseException as error:
                trace.end(error=error)
                raise
            trace.end({"ragops.retrieval.returned": len(result[0])})
            return result

        return search

    def _generates(self, question: Question, retrieved: Retrieved) -> bool:
        return self.generator is not None and bool(retrieved.chunks) and not question.retrieval_only

    def _chat_attributes(self, *, stream: bool) -> dict[str, str | int | bool]:
        assert self.generator is not None
        return {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "anthropic",
            "gen_ai.request.model": self.generator.model,
            "gen_ai.request.max_tokens": self.generator.max_tokens,
            "gen_ai.request.stream": stream,
        }

    async def _generate(
        self, question: Question, retrieved: Retrieved, trace: QueryTrace
    ) -> tuple[Generation | None, str | None, GenerationUnavailable | None]:
        degraded = retrieved.degraded_reason
        if not self._generates(question, retrieved):
            return None, degraded, None
        assert self.generator is not None
        stage = self.clock()
        with trace.stage(f"chat {self.generator.model}", self._chat_attributes(stream=False)) as span:
            try:
                generation = await self.generator.generate(
                    question.query, retrieved.chunks, history=question.history, instructions=question.instructions
                )
            except GenerationUnavailable as error:
                self.metrics.degraded(f"generation_{error.reason}", **_labels(retrieved))
                degrade(span, f"generation_{error.reason}")
                return None, _join(degraded, f"generation {error.reason}: {error.detail}"), error
            finally:
                retrieved.timings_ms["generate"] = (self.clock() - stage) * 1000
            _generated(span, generation)
        return generation, degraded, None

    async def _finish(
        self,
        question: Question,
        retrieved: Retrieved,
        generation: Generation | None,
        degraded: str | None,
        generation_error: GenerationUnavailable | None = None,
    ) -> Answer:
        input_tokens = generation.usage.input_tokens if generation else 0
        output_tokens = generation.usage.output_tokens if generation else 0
        cost = cost_usd(generation.model, input_tokens, output_tokens, self.prices) if generation else 0.0
        total = (self.clock() - retrieved.started) * 1000
        answer = Answer(
            query_id=retrieved.query_id,
            knowledge_base=self.knowledge_base,
            kb_version=retrieved.record.version,
            answer=generation.text if generation else None,
            mode="generated" if generation else "retrieval_only",
            degraded_reason=degraded,
            chunks=retrieved.chunks,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost_usd=cost,
            timings_ms={**retrieved.timings_ms, "total": total},
            generation_error=generation_error,
            role=retrieved.role,
            stop_reason=generation.stop_reason if generation else None,
        )
        labels = _labels(retrieved)
        if generation:
            self.metrics.tokens(input_tokens=input_tokens, output_tokens=output_tokens, **labels)
            if cost is not None:
                self.metrics.cost(service="generation", usd=cost, **labels)
        self.metrics.observe_query(
            mode=answer.mode,
            status="degraded" if answer.degraded else "ok",
            seconds=total / 1000,
            stages={stage: ms / 1000 for stage, ms in retrieved.timings_ms.items()},
            **labels,
        )
        if not answer.degraded:
            await self.cache.put(retrieved.cache_key, answer)
        self._log(question, answer)
        return answer

    def _log(self, question: Question, answer: Answer) -> None:
        """Queues the answer's log record: written in the background, never on the response path."""
        self.answer_log.submit(
            AnswerRecord(
                query_id=answer.query_id,
                kb=self.knowledge_base,
                version=answer.kb_version,
                role=answer.role,
                deployment=self.deployment,
                query_digest=hashlib.sha256(normalize_query(question.query).encode()).hexdigest(),
                document_ids=[chunk.document_id for chunk in answer.chunks],
                mode=answer.mode,
                degraded_reason=answer.degraded_reason,
                latency_ms=answer.timings_ms["total"],
                input_tokens=answer.input_tokens,
                output_tokens=answer.output_tokens,
                cost_usd=answer.cost_usd,
                at=datetime.now(UTC),
            )
        )

    async def on_change(self, previous: ServedSplit | None, current: ServedSplit) -> None:
        """Called by the watcher when the split moves: publish its versions, forget the answers of those that left."""
        assert current.stable is not None
        self.metrics.set_active_version(self.knowledge_base, current.stable.version)
        self.metrics.prepare_split(
            current.stable.version,
            current.canary.version if current.canary else None,
            probes=current.probe is not None,
        )
        for record in (current.stable, current.canary):
            if record is not None:
                with contextlib.suppress(EmbeddingError):
                    # Loads the version's embedder before its first query; a failure here fails that
                    # query instead, with the same error and a 503.
                    await self.embeddings.warm(record)
        if previous is None:
            return
        served = {current.stable.version, *(r.version for r in (current.canary,) if r)}
        for record in (previous.stable, previous.canary):
            if record is not None and record.version not in served:
                await self.cache.drop_version(cache_version(record))
                # Kept long enough for Prometheus to scrape the last samples (and an analysis to read them).
                asyncio.get_running_loop().call_later(RETIRED_SERIES_SECONDS, self._forget_version, record.version)

    def _forget_version(self, version: str) -> None:
        if version not in self.active.served.versions:
            self.metrics.forget_version(version)


RETIRED_SERIES_SECONDS = 1800.0
"""How long the series of a version that left the split stay exported: well past a scrape and an analysis window."""


def _labels(retrieved: Retrieved) -> dict[str, str]:
    """The metric labels of a query: the version that answered and its role."""
    return {"kb_version": retrieved.record.version, "role": retrieved.role}


def shown(record: VersionRecord, chunks: Sequence[RetrievedChunk]) -> list[RetrievedChunk]:
    """`chunks` with the source each is shown by: relative to the build's source it came from.

    The store keeps where the build read a document (a path on the build's machine); clients, the
    answer cache and the LLM's prompt get its source-relative id, for versions built before this too.
    """
    sources = tuple(str(source) for source in (record.manifest or {}).get("sources") or ())
    return [replace(chunk, source=_shown_source(chunk.source, sources)) for chunk in chunks]


@functools.lru_cache(maxsize=4096)
def _shown_source(location: str, sources: tuple[str, ...]) -> str:
    # A version's chunks come from a few documents, asked for again and again: their ids are
    # worked out once (source_id parses paths, a twentieth of a query's CPU for 20 passages).
    return source_id(location, sources)


def cache_version(record: VersionRecord) -> str:
    """The version part of cache keys: knowledge base, version name and the row that holds it.

    The row id tells a version apart from a deleted one of the same name rebuilt later, whose
    answers a shared cache could otherwise still hold.
    """
    return f"{record.kb}/{record.version}#{record.id}"


def answer_to_json(answer: Answer) -> dict[str, Any]:
    """An answer as JSON-able data, for a cache shared between processes (see answer_from_json)."""
    return {
        "queryId": str(answer.query_id),
        "knowledgeBase": answer.knowledge_base,
        "kbVersion": answer.kb_version,
        "answer": answer.answer,
        "mode": answer.mode,
        "degradedReason": answer.degraded_reason,
        "chunks": [
            {
                "chunkId": chunk.chunk_id,
                "documentId": chunk.document_id,
                "source": chunk.source,
                "position": chunk.position,
                "headingPath": list(chunk.heading_path),
                "text": chunk.text,
                "score": chunk.score,
                "metadata": chunk.metadata,
            }
            for chunk in answer.chunks
        ],
        "inputTokens": answer.input_tokens,
        "outputTokens": answer.output_tokens,
        "costUsd": answer.cost_usd,
        "timingsMs": dict(answer.timings_ms),
        "role": answer.role,
        "stopReason": answer.stop_reason,
    }


def answer_from_json(data: Any) -> Answer:
    """The answer `answer_to_json` wrote; raises KeyError, TypeError or ValueError on anything else."""
    return Answer(
        query_id=uuid.UUID(data["queryId"]),
        knowledge_base=str(data["knowledgeBase"]),
        kb_version=str(data["kbVersion"]),
        answer=data["answer"],
        mode=data["mode"],
        degraded_reason=data["degradedReason"],
        chunks=tuple(
            RetrievedChunk(
                chunk_id=int(chunk["chunkId"]),
                document_id=str(chunk["documentId"]),
                source=str(chunk["source"]),
                position=int(chunk["position"]),
                heading_path=tuple(chunk["headingPath"]),
                text=str(chunk["text"]),
                score=float(chunk["score"]),
                metadata=dict(chunk["metadata"]),
            )
            for chunk in data["chunks"]
        ),
        input_tokens=int(data["inputTokens"]),
        output_tokens=int(data["outputTokens"]),
        cost_usd=None if data["costUsd"] is None else float(data["costUsd"]),
        timings_ms={str(stage): float(ms) for stage, ms in data["timingsMs"].items()},
        # Entries written before progressive delivery carry no role; a cache hit sets the current one anyway.
        role="canary" if data.get("role") == "canary" else "stable",
        stop_reason=data.get("stopReason"),
    )


_UNTRACED = Tracing.disabled().begin()
"""A trace that records nothing, for retrievals called without one."""


def _generated(span: Span, generation: Generation) -> None:
    span.set_attributes(
        {
            "gen_ai.response.model": generation.model,
            "gen_ai.usage.input_tokens": generation.usage.input_tokens,
            "gen_ai.usage.output_tokens": generation.usage.output_tokens,
            "gen_ai.response.finish_reasons": [generation.stop_reason or "unknown"],
        }
    )


def _outcome(answer: Answer) -> dict[str, Any]:
    """The root span's attributes once a query is answered."""
    return {
        "ragops.query_id": str(answer.query_id),
        "ragops.mode": answer.mode,
        "ragops.degraded_reason": answer.degraded_reason,
        "ragops.citations": len(answer.chunks),
        "gen_ai.usage.input_tokens": answer.input_tokens,
        "gen_ai.usage.output_tokens": answer.output_tokens,
        "ragops.cost_usd": answer.cost_usd,
    }


def _conversation_digest(question: Question) -> str:
    turns = [[turn.role, turn.content] for turn in question.history]
    return hashlib.sha256(json.dumps([question.instructions, turns]).encode()).hexdigest()


def _join(first: str | None, second: str) -> str:
    return f"{first}; {second}" if first else second


def passages(chunks: Sequence[RetrievedChunk]) -> list[dict[str, Any]]:
    return [
        {
            "id": chunk.chunk_id,
            "documentId": chunk.document_id,
            "source": chunk.source,
            "headingPath": list(chunk.heading_path),
            "score": chunk.score,
            "text": chunk.text,
        }
        for chunk in chunks
    ]
