"""The HTTP face of the runtime: `create_app(settings)` builds the FastAPI app and its resources.

Routes translate between JSON and the query service; they decide nothing (see service.py).
Every error is a JSON body `{"error": {"code", "message"}}` with a meaningful status: 422 for a
bad query (naming the field or limit), 429 with Retry-After for the rate limit, 503 with
Retry-After when a dependency is down, never a 500 for a known failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import Annotated, Any, Literal

import psycopg
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from pydantic import ConfigDict, Field, create_model, field_validator, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .active import ActiveVersionWatcher
from .answer_log import AnswerLogWriter
from .generation.anthropic import AnthropicGenerator
from .generation.pricing import DEFAULT_PRICES, parse_price_table
from .jobs import JobConfig, JobWorker, job_request_model, jobs_router
from .kb.ingest import source_id
from .observability.metrics import DeploymentIdentity, RatersReading, RuntimeMetrics
from .observability.tracing import Tracing, TracingConfig
from .openai_api import CHAT_COMPLETIONS_PATH, CONVERSATION_FACTOR, chat_body_bytes, openai_router
from .protection.cache import AnswerCache, AnswerCacheBackend, MemoryAnswerCache
from .protection.identity import rater_digest
from .protection.limits import ConcurrencyLimiter, TokenBucketLimiter
from .protection.redis_cache import RedisAnswerCache
from .replica import ReadRouter, connection_pool
from .retrieval.reranker import HttpReranker
from .rollout import ServedSplit
from .rollout.probes import ProbeRunner
from .rollout.shadow import ShadowRunner
from .server import BodyLimit
from .service import (
    Answer,
    QueryEmbeddings,
    QueryService,
    QueryTooLong,
    Question,
    RateLimited,
    Retrieved,
    ServiceUnavailable,
    answer_from_json,
    answer_to_json,
    passages,
)
from .settings import RuntimeSettings
from .store import KnowledgeStore
from .store.answers import ensure_answer_log, purge_answers, raters_since, record_feedback, satisfaction
from .store.jobs import ensure_jobs_schema
from .wire import ErrorBody, Filters, TopK, WireModel, WireRequest, WireUUID, client_of, error, query_text_field

log = logging.getLogger("ragops.runtime")
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
Scalar = str | int | float | bool


# ---- wire models -------------------------------------------------------------------------------


class QueryRequest(WireRequest):
    query: str = Field(min_length=1, pattern=r"^[^\x00]*$", description="The question, in natural language.")
    top_k: TopK | None = Field(default=None, description="Candidates to retrieve (default from settings).")
    filters: Filters = Field(default_factory=dict)
    stream: bool = Field(default=False, description="Stream server-sent events: retrieval, deltas, done.")


def query_request_model(max_query_chars: int) -> type[QueryRequest]:
    """QueryRequest with this runtime's length limit in its schema, so the OpenAPI document is exact."""
    return create_model(
        "QueryRequest",
        __base__=QueryRequest,
        query=query_text_field(max_query_chars),
    )


class Citation(WireModel):
    id: int = Field(description="Chunk id.")
    document_id: str
    source: str
    heading_path: list[str]
    score: float
    text: str


class Usage(WireModel):
    input_tokens: int
    output_tokens: int


class QueryResponse(WireModel):
    query_id: uuid.UUID
    knowledge_base: str
    kb_version: str = Field(description="The knowledge-base version that answered (also in X-RagOps-KB-Version).")
    role: Literal["stable", "canary"] = Field(
        description="Whether that version answered as the stable version or as the canary of a rollout "
        "(also in X-RagOps-Role); citations come from that version only."
    )
    answer: str | None = Field(description="Generated answer citing [n] passages; null when retrieval-only.")
    mode: Literal["generated", "retrieval_only", "cached"]
    degraded: bool = Field(description="True when a dependency failed and a fallback answered.")
    degraded_reason: str | None
    citations: list[Citation]
    usage: Usage
    cost_usd: float | None = Field(description="Cost of this query in USD; null when the model has no price.")
    timings_ms: dict[str, float] = Field(
        description="Per-stage milliseconds: embed, retrieve, rerank, generate, total."
    )


def _feedback_schema(schema: dict[str, Any]) -> None:
    # Absent, not null: each rating field is given or left out, and exactly one is given.
    for name in ("rating", "thumbs"):
        options = schema["properties"][name].pop("anyOf")
        schema["properties"][name].update(next(option for option in options if option.get("type") != "null"))
        schema["properties"][name].pop("default", None)
    schema["oneOf"] = [{"required": ["rating"]}, {"required": ["thumbs"]}]


class FeedbackRequest(WireRequest):
    """A rating of one answer: exactly one of `rating` and `thumbs`."""

    model_config = ConfigDict(json_schema_extra=_feedback_schema)

    query_id: WireUUID = Field(description="The queryId of the answer being rated.")
    rating: float | None = Field(default=None, ge=0, le=1, description="Satisfaction from 0 (useless) to 1 (perfect).")
    thumbs: Literal["up", "down"] | None = Field(default=None, description="Shorthand for rating 1 (up) or 0 (down).")

    @field_validator("rating", "thumbs", mode="before")
    @classmethod
    def _given(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("Input should not be null (leave the field out instead)")
        return value

    @model_validator(mode="after")
    def _one_rating(self) -> FeedbackRequest:
        if (self.rating is None) == (self.thumbs is None):
            raise ValueError("give exactly one of rating and thumbs")
        return self

    @property
    def score(self) -> float:
        if self.rating is not None:
            # Rounded to a rating's precision: a subnormal like 1e-310 is valid JSON and within [0, 1],
            # but PostgreSQL's `real` column refuses it (underflow).
            return round(self.rating, 6)
        return 1.0 if self.thumbs == "up" else 0.0


def response_json(answer: Answer) -> dict[str, Any]:
    """An answer as the JSON of QueryResponse, built directly: validating a model of the answer
    and dumping it again (20 passages each time) cost a tenth of a retrieval-only query's CPU."""
    return {
        "queryId": str(answer.query_id),
        "knowledgeBase": answer.knowledge_base,
        "kbVersion": answer.kb_version,
        "role": answer.role,
        "answer": answer.answer,
        "mode": answer.mode,
        "degraded": answer.degraded,
        "degradedReason": answer.degraded_reason,
        "citations": [{**passage, "score": float(passage["score"])} for passage in passages(answer.chunks)],
        "usage": {"inputTokens": answer.input_tokens, "outputTokens": answer.output_tokens},
        "costUsd": None if answer.cost_usd is None else float(answer.cost_usd),
        "timingsMs": {stage: float(ms) for stage, ms in answer.timings_ms.items()},
    }


def served_headers(kb_version: str, role: str) -> dict[str, str]:
    """The version and role that answered, for clients and proxies that read headers, not bodies."""
    return {"X-RagOps-KB-Version": kb_version, "X-RagOps-Role": role}


# ---- logging -----------------------------------------------------------------------------------


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line with the request id; only explicit fields, so no secret slips in."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "requestId": request_id.get(),
        }
        for key in ("kb", "version", "previous", "status", "path", "method", "durationMs", "mode", "queryId"):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class RequestContext:
    """Each request's id (the client's X-Request-Id or a new one, echoed back) and its access log line.

    Plain ASGI rather than `@app.middleware("http")`: Starlette's BaseHTTPMiddleware runs every
    request in a task and a response stream of its own, a measurable share of a busy runtime's CPU.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((value for name, value in scope["headers"] if name == b"x-request-id"), None)
        token = request_id.set(given.decode("latin-1") if given else uuid.uuid4().hex)
        started = time.perf_counter()
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(n, v) for n, v in message.get("headers", []) if n.lower() != b"x-request-id"]
                message["headers"] = [*headers, (b"x-request-id", request_id.get().encode("latin-1"))]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
            log.info(
                "request",
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "durationMs": round((time.perf_counter() - started) * 1000, 2),
                },
            )
        finally:
            request_id.reset(token)


def configure_logging(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLogFormatter())
    root = logging.getLogger("ragops")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


# ---- the app -----------------------------------------------------------------------------------


def create_app(settings: RuntimeSettings, *, dsn: str) -> FastAPI:
    """The runtime app. `dsn` is resolved by the caller (a DSN secret or the embedded server)."""
    identity = DeploymentIdentity(namespace=settings.namespace, deployment=settings.deployment, pod=settings.pod)
    metrics = RuntimeMetrics(identity)
    prices = parse_price_table(settings.price_table) if settings.price_table else dict(DEFAULT_PRICES)
    job_config = JobConfig.from_settings(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Schema first: fails fast with a clear message on a DSN without pgvector.
        async with await KnowledgeStore.connect(dsn) as bootstrap:
            await ensure_answer_log(bootstrap.connection)
            await ensure_jobs_schema(bootstrap.connection)
        pool = connection_pool(dsn, settings.pool_size)
        await pool.open(wait=False)
        reads = ReadRouter(
            pool,
            replica_dsn=settings.read_only_dsn.get_secret_value() if settings.read_only_dsn else None,
            pool_size=settings.pool_size,
            wait_seconds=settings.database_timeout_seconds,
            metrics=metrics,
        )
        await reads.start()
        generator = None
        if settings.generation_enabled:
            assert settings.anthropic_api_key is not None
            generator = AnthropicGenerator(
                api_key=settings.anthropic_api_key.get_secret_value(),
                model=settings.generation_model,
                max_tokens=settings.generation_max_tokens,
                timeout_seconds=settings.generation_timeout_seconds,
                base_url=settings.anthropic_base_url,
            )
        reranker = None
        if settings.reranker_provider == "http" and settings.reranker_endpoint:
            reranker = HttpReranker(
                endpoint=settings.reranker_endpoint,
                model=settings.reranker_model,
                timeout_ms=settings.reranker_timeout_ms,
            )
        embeddings = QueryEmbeddings(
            api_key=settings.embedding_api_key.get_secret_value() if settings.embedding_api_key else None,
            cache_size=settings.query_embedding_cache_size,
        )
        service_holder: list[QueryService] = []
        probes_holder: list[ProbeRunner] = []
        cache = _answer_cache(settings, metrics)
        tracing = Tracing.from_config(_tracing_config(settings), knowledge_base=settings.knowledge_base)

        async def on_change(previous: ServedSplit | None, current: ServedSplit) -> None:
            if service_holder:
                await service_holder[0].on_change(previous, current)
            for runner in probes_holder:
                runner.split_changed()

        watcher = ActiveVersionWatcher(
            dsn, settings.knowledge_base, poll_seconds=settings.version_poll_seconds, on_change=on_change
        )
        answer_log = AnswerLogWriter(pool, metrics, wait_seconds=settings.database_timeout_seconds)
        answer_log.start()
        service = QueryService(
            knowledge_base=settings.knowledge_base,
            deployment=settings.deployment,
            pool=pool,
            reads=reads,
            metrics=metrics,
            limiter=TokenBucketLimiter(requests_per_minute=settings.requests_per_minute_per_client),
            concurrency=ConcurrencyLimiter(settings.max_concurrent_requests),
            cache=cache,
            embeddings=embeddings,
            generator=generator,
            reranker=reranker,
            prices=prices,
            top_k=settings.top_k,
            rerank_top_k=settings.rerank_top_k,
            hybrid=settings.hybrid,
            fusion=settings.fusion,
            max_query_chars=settings.max_query_chars,
            retrieval_timeout_seconds=settings.retrieval_timeout_ms / 1000,
            database_timeout_seconds=settings.database_timeout_seconds,
            active=watcher,
            answer_log=answer_log,
            tracing=tracing,
        )
        service.shadow = ShadowRunner(
            search=service.search_as("shadow"), metrics=metrics, max_in_flight=settings.shadow_max_concurrency
        )
        probes = ProbeRunner(
            dsn=dsn,
            scope=f"{settings.namespace}/{settings.deployment}/{settings.knowledge_base}",
            served=lambda: watcher.served,
            search=service.search_as("probe"),
            metrics=metrics,
        )
        probes_holder.append(probes)
        service_holder.append(service)
        await watcher.start()
        probes.start()
        app.state.service = service
        app.state.watcher = watcher
        app.state.probes = probes
        app.state.pool = pool
        jobs = JobWorker(
            config=job_config,
            pool=pool,
            service=service,
            metrics=metrics,
            render=response_json,
            worker_id=settings.pod,
        )
        app.state.jobs = jobs
        jobs.start()
        retention = asyncio.create_task(
            _enforce_retention(
                pool, timedelta(days=settings.answer_log_retention_days), settings.database_timeout_seconds
            ),
            name="ragops-answer-log-retention",
        )
        try:
            yield
        finally:
            retention.cancel()
            await jobs.stop()
            await probes.stop()
            await service.shadow.aclose()
            await answer_log.aclose()
            await watcher.stop()
            await embeddings.aclose()
            await cache.aclose()
            if generator is not None:
                await generator.aclose()
            if reranker is not None:
                await reranker.aclose()
            await reads.aclose()
            await pool.close()
            # Flushes queued spans, bounded by the exporter's timeout, off the event loop.
            await asyncio.to_thread(tracing.shutdown)

    app = FastAPI(
        title="ragops runtime",
        version="v1",
        description="Retrieval-augmented answers over a gated knowledge-base version.",
        lifespan=lifespan,
        responses={503: {"model": ErrorBody, "description": "A dependency is unavailable; see Retry-After."}},
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.raters = RatersReading()

    # Added before the request context, so the context (request id, log line) wraps its refusals.
    app.add_middleware(
        BodyLimit,
        default=(
            settings.max_body_bytes,
            f"room for the longest query, RAGOPS_MAX_QUERY_CHARS={settings.max_query_chars}",
        ),
        limits={
            "/v1/jobs": (job_config.max_body_bytes, f"RAGOPS_JOB_MAX_BODY_BYTES={job_config.max_body_bytes}"),
            # A conversation: the question and earlier turns up to CONVERSATION_FACTOR times its limit.
            CHAT_COMPLETIONS_PATH: (
                chat_body_bytes(settings.max_query_chars),
                f"room for the longest conversation, {CONVERSATION_FACTOR + 1} x "
                f"RAGOPS_MAX_QUERY_CHARS={settings.max_query_chars}",
            ),
        },
        openai_paths=frozenset({CHAT_COMPLETIONS_PATH}),
    )
    app.add_middleware(RequestContext)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = exc.errors()
        unparsable = [item for item in problems if item["type"] == "json_invalid"]
        if unparsable:
            reason = unparsable[0].get("ctx", {}).get("error", "JSON decode error")
            return error(
                400, "invalid_json", f"body: not valid JSON ({reason}, at character {unparsable[0]['loc'][-1]})"
            )
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type and not _is_json(media_type) and any(tuple(item["loc"]) == ("body",) for item in problems):
            # FastAPI reads a body of another type as bytes and reports a missing object: say why
            # (`curl -d` sends application/x-www-form-urlencoded unless told otherwise).
            return error(
                422,
                "invalid_request",
                f"body: send JSON with Content-Type: application/json (this request's was {media_type})",
            )
        return error(
            422,
            "invalid_request",
            "; ".join(
                f"{'.'.join(str(part) for part in _field_path(item['loc'])) or 'body'}: {item['msg']}"
                for item in problems
            ),
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        """Errors raised by the framework (unknown path, wrong method, undecodable body), in the one shape."""
        if exc.status_code == 400:
            # FastAPI's answer to a body it could not decode (e.g. not UTF-8).
            return error(400, "invalid_json", "body: not valid JSON (not UTF-8, or unreadable)")
        response = error(exc.status_code, HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_"), str(exc.detail))
        response.headers.update(exc.headers or {})
        return response

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        """A bug: logged with its traceback by the server; the client gets the shape, not a stack."""
        return error(500, "internal_error", f"unexpected error (request id {request_id.get()})")

    app.include_router(_query_router(query_request_model(settings.max_query_chars)))
    app.include_router(_operations_router())
    app.include_router(openai_router(settings, client_of))
    app.include_router(jobs_router(job_config, job_request_model(settings.max_query_chars, job_config.max_queries)))
    return app


def _is_json(media_type: str) -> bool:
    return media_type == "application/json" or media_type.endswith("+json")


def _field_path(loc: Sequence[Any]) -> Sequence[Any]:
    """A validation error's location without where the value came from (body, path, query, header)."""
    return loc[1:] if loc and loc[0] in ("body", "path", "query", "header", "cookie") else loc


def _answer_cache(settings: RuntimeSettings, metrics: RuntimeMetrics) -> AnswerCacheBackend[Answer]:
    if settings.cache_backend == "redis":
        assert settings.cache_redis_url is not None  # the settings validator requires it
        return RedisAnswerCache(
            url=settings.cache_redis_url.get_secret_value(),
            scope=f"{settings.namespace}/{settings.deployment}/{settings.knowledge_base}",
            ttl_seconds=settings.cache_ttl_seconds,
            encode=answer_to_json,
            decode=answer_from_json,
            timeout_seconds=settings.cache_redis_timeout_ms / 1000,
            on_error=metrics.cache_error,
        )
    memory = AnswerCache[Answer](ttl_seconds=settings.cache_ttl_seconds, max_entries=settings.cache_max_entries)
    return MemoryAnswerCache(memory, time.monotonic)


def _tracing_config(settings: RuntimeSettings) -> TracingConfig:
    return TracingConfig(
        endpoint=settings.otlp_endpoint,
        sampling_ratio=settings.trace_sampling_ratio,
        namespace=settings.namespace,
        deployment=settings.deployment,
        pod=settings.pod,
    )


def _cache_status(cache: AnswerCacheBackend[Answer]) -> str:
    """`memory`, `redis`, `disabled`, or `redis unavailable (...): answering without the cache`."""
    if not cache.enabled:
        return "disabled"
    if cache.problem is not None:
        return f"{cache.backend} unavailable ({cache.problem}): answering without the cache"
    return cache.backend


RETENTION_INTERVAL_SECONDS = 3600
READINESS_BUDGET_SECONDS = 1.0
"""How long /readyz (and the raters gauge at a scrape) waits for the database: well inside the
kubelet's 2 s probe timeout (the operator's builders/runtime.py), so the probe reads the reason."""


async def _enforce_retention(pool: AsyncConnectionPool[Any], keep: timedelta, wait_seconds: float) -> None:
    """Deletes answer-log rows older than `keep`, at start-up and then hourly, for as long as the app runs."""
    while True:
        try:
            async with pool.connection(timeout=wait_seconds) as connection:
                deleted = await purge_answers(connection, keep)
            if deleted:
                log.info("answer log retention", extra={"status": deleted})
        except (PoolTimeout, psycopg.Error):
            log.warning("answer log retention skipped: database unavailable")
        await asyncio.sleep(RETENTION_INTERVAL_SECONDS)


async def get_service(request: Request) -> QueryService:
    # async: FastAPI runs a plain `def` dependency in a worker thread, a hand-off per request.
    service: QueryService = request.app.state.service
    return service


ServiceDep = Annotated[QueryService, Depends(get_service)]


def _query_router(request_model: type[QueryRequest]) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["query"])

    async def query(body: QueryRequest, request: Request, service: ServiceDep) -> Response:
        """Answer a question from the active knowledge-base version, with citations."""
        question = Question(query=body.query, client=client_of(request), top_k=body.top_k, filters=body.filters)
        try:
            if body.stream:
                head, events = await service.stream(question)
                version, role = (
                    (head.record.version, head.role) if isinstance(head, Retrieved) else (head.kb_version, head.role)
                )
                return StreamingResponse(
                    _sse(events),
                    media_type="text/event-stream",
                    headers={"Cache-Control": "no-cache", **served_headers(version, role)},
                )
            answer = await service.answer(question)
        except QueryTooLong as exc:
            return error(422, "query_too_long", f"query: {exc} (RAGOPS_MAX_QUERY_CHARS={exc.limit})")
        except RateLimited as exc:
            return error(429, "rate_limited", str(exc), retry_after=exc.retry_after)
        except ServiceUnavailable as exc:
            return error(503, exc.code, str(exc), retry_after=exc.retry_after)
        return JSONResponse(
            response_json(answer),
            headers=served_headers(answer.kb_version, answer.role),
        )

    # The body type is this runtime's model (with its length limit), chosen when the app is built.
    query.__annotations__["body"] = request_model
    router.post(
        "/query",
        response_model=QueryResponse,
        responses={
            200: {"content": {"text/event-stream": {}}, "description": "JSON, or events when stream is true."},
            400: {"model": ErrorBody, "description": "The body is not JSON (or not UTF-8)."},
            413: {"model": ErrorBody, "description": "The body is over its limit (room for the longest query)."},
            422: {"model": ErrorBody, "description": "Invalid query (e.g. longer than the limit)."},
            429: {"model": ErrorBody, "description": "Rate limit exceeded; see Retry-After."},
        },
    )(query)

    @router.post(
        "/feedback",
        status_code=204,
        responses={
            400: {"model": ErrorBody, "description": "The body is not JSON (or not UTF-8)."},
            404: {"model": ErrorBody, "description": "No answered query has this id."},
            409: {"model": ErrorBody, "description": "This client has rated this answer already."},
            413: {"model": ErrorBody, "description": "The body is over its limit."},
            422: {"model": ErrorBody},
            503: {"model": ErrorBody},
        },
    )
    async def feedback(body: FeedbackRequest, request: Request, service: ServiceDep) -> Response:
        """Rate an answer (0..1 or thumbs); feeds the satisfaction SLO and drift detection.

        One rating per answer and rater (the caller's trusted identity, not X-Client-Id): a repeat is
        refused with 409 and the first rating stands. The rating counts for the version and role that
        answered the query, whatever is served now.
        """
        rater = rater_digest(client_of(request))
        # The rated answer's row may still be in the writer's queue: while it cannot be written, the
        # rating cannot be either (503 to retry, never a 404 for an answer that was given).
        if not await service.answer_log.flush():
            return error(503, "database_unavailable", "the database is unavailable; retry shortly", retry_after=2)
        try:
            async with service.pool.connection(timeout=service.database_timeout_seconds) as connection:
                rated = await record_feedback(connection, body.query_id, rater, body.score)
        except (PoolTimeout, psycopg.OperationalError):
            return error(503, "database_unavailable", "the database is unavailable; retry shortly", retry_after=2)
        if rated is None:
            return error(404, "unknown_query", f"no answered query has id {body.query_id}")
        if not rated.stored:
            return error(409, "already_rated", f"this client has rated query {body.query_id} already")
        service.metrics.feedback(body.score, kb_version=rated.version, role=rated.role)
        request.app.state.raters.drop()
        return Response(status_code=204)

    @router.get("/info")
    async def info(request: Request, service: ServiceDep) -> dict[str, Any]:
        """The served knowledge base, its active version, that version's manifest and the traffic split."""
        record = service.active.current
        settings: RuntimeSettings = request.app.state.settings
        rated: dict[str, Any] = {}
        with contextlib.suppress(PoolTimeout, psycopg.Error):
            async with service.pool.connection(timeout=service.database_timeout_seconds) as connection:
                day = await satisfaction(connection, settings.knowledge_base, datetime.now(UTC) - timedelta(hours=24))
                rated = {"satisfaction24h": day.mean, "ratedAnswers24h": day.rated_answers, "raters24h": day.raters}
        return {
            "knowledgeBase": settings.knowledge_base,
            "activeVersion": record.version if record else None,
            "manifest": public_manifest(record.manifest) if record and record.manifest else None,
            "generation": (
                "enabled"
                if settings.generation_enabled
                else "disabled: no Anthropic API key, answering retrieval-only"
                if settings.generation_provider == "anthropic"
                else "disabled by configuration"
            ),
            "model": settings.generation_model if settings.generation_enabled else None,
            "hybrid": settings.hybrid,
            "reranker": settings.reranker_provider,
            "cache": _cache_status(service.cache),
            "reads": service.reads.reads,
            "traffic": _traffic(service.active.served, request.app.state.probes),
            **rated,
        }

    return router


def public_manifest(manifest: dict[str, Any]) -> dict[str, Any]:
    """A version's manifest as clients see it: sources and skipped files by their source-relative ids."""
    sources = [str(source) for source in manifest.get("sources") or []]
    return {
        **manifest,
        "sources": [source_id(source, [source]) for source in sources],
        "skipped": [
            {**skipped, "source": source_id(str(skipped.get("source", "")), sources)}
            for skipped in manifest.get("skipped") or []
        ],
    }


def _traffic(served: ServedSplit, probes: ProbeRunner) -> dict[str, Any] | None:
    """The split this replica applies (null when every query goes to the active version)."""
    if served.canary is None:
        return None
    return {
        "stableVersion": served.stable.version if served.stable else None,
        "canaryVersion": served.canary.version,
        "canaryWeight": served.canary_weight,
        "shadowPercent": served.shadow_percent,
        "splitId": served.split_id,
        "probes": (
            {
                "queries": len(served.probe.queries),
                "perMinute": served.probe.per_minute,
                "runningHere": probes.running_here,
            }
            if served.probe
            else None
        ),
    }


def _operations_router() -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        """The process is alive (it does not look at dependencies: a restart would not help them)."""
        return {"status": "ok"}

    @router.get("/readyz", responses={503: {"model": ErrorBody}})
    async def readyz(request: Request) -> Response:
        """Ready when chunks can be read (the replica, else the primary) and an active version is loaded.

        Otherwise 503 with why. With a replica, a primary that is down does not make the replica's
        readers unready: they keep answering from the split they hold while the primary fails over.
        """
        service: QueryService = request.app.state.service
        budget = min(service.database_timeout_seconds, READINESS_BUDGET_SECONDS)
        try:
            async with asyncio.timeout(budget):
                problem = await service.reads.check()
        except TimeoutError:
            problem = f"database unreachable within {budget:g}s"
        if problem is not None:
            return error(503, "database_unavailable", problem)
        record = service.active.current
        if record is None:
            return error(503, "no_active_version", service.active.problem or "no active version")
        # An unreachable shared cache never makes a replica unready: it answers without the cache.
        return JSONResponse(
            {
                "status": "ready",
                "activeVersion": record.version,
                "cache": _cache_status(service.cache),
                "reads": service.reads.reads,
                "traffic": _traffic(service.active.served, request.app.state.probes),
            }
        )

    @router.get("/metrics", response_class=Response)
    async def metrics(request: Request) -> Response:
        """Prometheus metrics of this replica."""
        service: QueryService = request.app.state.service
        service.metrics.set_raters(await _raters(service, request.app.state.settings, request.app.state.raters))
        body, content_type = request.app.state.metrics.render()
        return Response(content=body, media_type=content_type)

    return router


async def _raters(
    service: QueryService, settings: RuntimeSettings, reading: RatersReading
) -> dict[tuple[str, str], int] | None:
    """Distinct raters per (version, role) in the feedback window, zero for the versions served; None if unknown."""
    counts = reading.fresh(time.monotonic())
    if counts is None:
        since = datetime.now(UTC) - timedelta(seconds=settings.feedback_window_seconds)
        budget = min(service.database_timeout_seconds, READINESS_BUDGET_SECONDS)
        try:
            async with asyncio.timeout(budget), service.pool.connection(timeout=budget) as connection:
                counts = await raters_since(connection, settings.knowledge_base, settings.deployment, since)
        except (TimeoutError, PoolTimeout, psycopg.Error):
            return None
        reading.store(counts, time.monotonic())
    served = service.active.served
    for role, record in (("stable", served.stable), ("canary", served.canary)):
        if record is not None:
            counts.setdefault((record.version, role), 0)
    return counts


async def _sse(events: AsyncIterator[tuple[str, Any]]) -> AsyncIterator[bytes]:
    async for kind, payload in events:
        if kind == "retrieval":
            data: Any
            if isinstance(payload, Retrieved):
                data = {
                    "queryId": str(payload.query_id),
                    "kbVersion": payload.record.version,
                    "role": payload.role,
                    "citations": passages(payload.chunks),
                }
            else:
                data = {
                    "queryId": str(payload.query_id),
                    "kbVersion": payload.kb_version,
                    "role": payload.role,
                    "citations": passages(payload.chunks),
                }
        elif kind == "delta":
            data = {"text": payload}
        else:
            data = response_json(payload)
        yield f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()
