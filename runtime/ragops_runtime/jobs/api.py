"""POST /v1/jobs and GET /v1/jobs/{id}: asynchronous and batch queries over HTTP.

Submission is admitted whole or refused whole, before anything is stored: the body size (413),
the number of queries and each query's length (422, naming the query and the limit), then the
client's rate limit, charged one token per query (429 with Retry-After, the wait until the whole
batch fits). An admitted job is stored and answered 202 with its id at once; the replicas' workers
answer it (worker.py). Routes translate; the store and the worker decide.

The error body is the runtime's one shape (wire.py). This module must not import app.py, which mounts it.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

import psycopg
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from psycopg_pool import PoolTimeout
from pydantic import Field, create_model

from ..service import QueryService
from ..store.jobs import JobStatus, NewItem, enqueue_job, job_status
from ..wire import ErrorBody, Filters, TopK, WireModel, WireRequest, client_of, error, query_text_field
from .worker import JobConfig, JobWorker


class JobQuery(WireRequest):
    query: str = Field(min_length=1, pattern=r"^[^\x00]*$", description="The question, in natural language.")
    top_k: TopK | None = Field(default=None, description="Candidates to retrieve (default from settings).")
    filters: Filters = Field(default_factory=dict)


class JobRequest(WireRequest):
    queries: list[JobQuery] = Field(min_length=1, description="The queries, answered independently.")


def job_request_model(max_query_chars: int, max_queries: int) -> type[JobRequest]:
    """JobRequest with this runtime's limits in its schema, so the OpenAPI document is exact."""
    query_model = create_model(
        "JobQuery",
        __base__=JobQuery,
        query=query_text_field(max_query_chars),
    )
    queries_type: Any = list[query_model]
    return create_model(
        "JobRequest",
        __base__=JobRequest,
        queries=(
            queries_type,
            Field(
                min_length=1,
                max_length=max_queries,
                description=f"The queries, answered independently; at most {max_queries}.",
            ),
        ),
    )


class JobAccepted(WireModel):
    job_id: uuid.UUID
    state: Literal["queued"]
    total: int = Field(description="Number of queries in the job.")
    status_url: str = Field(description="Where progress and results are: GET it until state is finished.")


class JobItemStatus(WireModel):
    position: int = Field(description="Index of the query in the submitted list.")
    state: Literal["queued", "running", "done", "failed"]
    attempts: int = Field(description="Attempts started so far (transient failures and lost replicas retry).")
    kb_version: str | None = Field(description="The knowledge-base version that answered.")
    result: dict[str, Any] | None = Field(
        description="When done: the answer, shaped exactly like a POST /v1/query response (QueryResponse)."
    )
    error: str | None = Field(description="When failed: why; while queued after a failure: the last failure.")
    finished_at: datetime | None


class JobStatusResponse(WireModel):
    job_id: uuid.UUID
    state: Literal["queued", "running", "finished"]
    total: int
    done: int = Field(description="Queries answered.")
    failed: int = Field(description="Queries that could not be answered within the attempt limit.")
    created_at: datetime
    finished_at: datetime | None
    expires_at: datetime | None = Field(description="When a finished job is purged; GET answers 404 from then on.")
    items: list[JobItemStatus]


def _view(job: JobStatus) -> JobStatusResponse:
    if job.finished_at is not None:
        state: Literal["queued", "running", "finished"] = "finished"
    elif any(item.attempts > 0 for item in job.items):
        state = "running"
    else:
        state = "queued"
    return JobStatusResponse(
        job_id=job.id,
        state=state,
        total=job.total,
        done=job.done,
        failed=job.failed,
        created_at=job.created_at,
        finished_at=job.finished_at,
        expires_at=job.expires_at,
        items=[
            JobItemStatus(
                position=item.position,
                state=item.state,
                attempts=item.attempts,
                kb_version=item.kb_version,
                result=item.result,
                error=item.error,
                finished_at=item.finished_at,
            )
            for item in job.items
        ],
    )


def jobs_router(config: JobConfig, request_model: type[JobRequest]) -> APIRouter:
    # The body limit (413, RAGOPS_JOB_MAX_BODY_BYTES) is applied before routing (server.BodyLimit).
    router = APIRouter(prefix="/v1", tags=["jobs"])

    async def submit(body: JobRequest, request: Request) -> Response:
        """Queue one or many queries; answers 202 with the job id at once. GET the job for results."""
        service: QueryService = request.app.state.service
        worker: JobWorker = request.app.state.jobs
        client = client_of(request)
        count = len(body.queries)
        if count > service.limiter.capacity:
            return error(
                422,
                "job_over_rate_limit",
                f"queries: {count} queries can never fit the per-client limit of {service.limiter.capacity} "
                f"(RAGOPS_REQUESTS_PER_MINUTE_PER_CLIENT); split the job",
            )
        decision = service.limiter.check(client.trusted, service.clock(), cost=count)
        if not decision.allowed:
            service.metrics.rate_limited()
            return error(
                429,
                "rate_limited",
                f"rate limit exceeded: the job's {count} queries fit after {decision.retry_after_seconds:.1f}s",
                retry_after=decision.retry_after_seconds,
            )
        job_id = uuid.uuid4()
        try:
            async with service.pool.connection(timeout=service.database_timeout_seconds) as connection:
                await enqueue_job(
                    connection,
                    job_id=job_id,
                    queue=config.queue,
                    client_id=client.sticky_key,
                    items=[NewItem(query=q.query, top_k=q.top_k, filters=q.filters) for q in body.queries],
                )
        except (PoolTimeout, psycopg.OperationalError):
            return error(503, "database_unavailable", "the database is unavailable; retry shortly", retry_after=2)
        worker.wake()
        location = f"/v1/jobs/{job_id}"
        accepted = JobAccepted(job_id=job_id, state="queued", total=count, status_url=location)
        return JSONResponse(
            accepted.model_dump(mode="json", by_alias=True), status_code=202, headers={"Location": location}
        )

    # The body type is this runtime's model (with its limits), chosen when the app is built.
    submit.__annotations__["body"] = request_model
    router.post(
        "/jobs",
        status_code=202,
        response_model=JobAccepted,
        responses={
            400: {"model": ErrorBody, "description": "The body is not JSON (or not UTF-8)."},
            413: {"model": ErrorBody, "description": "The body is over RAGOPS_JOB_MAX_BODY_BYTES."},
            422: {"model": ErrorBody, "description": "Invalid job (too many queries, a query too long, ...)."},
            429: {
                "model": ErrorBody,
                "description": "The client's rate limit cannot take the job now; see Retry-After.",
            },
            503: {"model": ErrorBody, "description": "The database is unavailable; see Retry-After."},
        },
    )(submit)

    @router.get(
        "/jobs/{job_id}",
        response_model=JobStatusResponse,
        responses={
            404: {"model": ErrorBody, "description": "Unknown job, or finished longer ago than the retention."},
            422: {"model": ErrorBody, "description": "The id is not a UUID."},
            503: {"model": ErrorBody, "description": "The database is unavailable; see Retry-After."},
        },
    )
    async def status(job_id: uuid.UUID, request: Request) -> Response:
        """Progress and results of a job: its state, counts, and each query's state, attempts and answer."""
        service: QueryService = request.app.state.service
        try:
            async with service.pool.connection(timeout=service.database_timeout_seconds) as connection:
                job = await job_status(connection, job_id, queue=config.queue, retention=config.retention)
        except (PoolTimeout, psycopg.OperationalError):
            return error(503, "database_unavailable", "the database is unavailable; retry shortly", retry_after=2)
        if job is None:
            return error(
                404,
                "unknown_job",
                f"no job {job_id} here: it was never submitted to this deployment, or it finished more than "
                f"{config.retention.total_seconds():.0f}s ago and expired (RAGOPS_JOB_RETENTION_SECONDS)",
            )
        return JSONResponse(_view(job).model_dump(mode="json", by_alias=True))

    return router
