"""The job worker: each runtime replica claims job items from PostgreSQL and answers them.

One asyncio task per replica claims items (store/jobs.py), at most `concurrency` in flight, and
answers each through the query pipeline (service.py): the answer cache, the active version (or,
during a rollout, the version the submitting client is assigned to), every stage budget and
fallback apply as for POST /v1/query. The client's rate limit was charged
when the job was submitted, and the worker's own bound replaces the interactive concurrency
limit, so a batch never takes the slots of interactive queries nor is refused by them.

Between claims the same task renews the leases of the items in flight, refreshes the queue-depth
gauge and purges expired jobs. A replica that dies stops renewing; its items become claimable when
their leases expire, and the store's fencing (worker id + attempt) keeps a late completion by a
lost claim from being written. On a graceful stop the items in flight are returned to the queue
at once, their attempt not counted.

This module decides what to do with an outcome (policy.py says what it means); it issues no SQL
and serves no HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from ..observability.metrics import RuntimeMetrics
from ..protection.identity import ClientIdentity
from ..protection.limits import ConcurrencyLimiter, RateDecision, TokenBucketLimiter
from ..service import Answer, QueryService, QueryTooLong, Question, ServiceUnavailable
from ..settings import RuntimeSettings
from ..store.jobs import (
    ClaimedItem,
    claim_items,
    finish_item,
    purge_jobs,
    queue_depth,
    release_items,
    renew_leases,
    retry_item,
)
from .policy import generation_failure, retry_delay

log = logging.getLogger("ragops.runtime.jobs")

DEPTH_REFRESH_SECONDS = 2.0
PURGE_INTERVAL_SECONDS = 60.0


@dataclass(frozen=True)
class JobConfig:
    """The job settings of one replica, read once from `RuntimeSettings`."""

    queue: str
    concurrency: int
    max_queries: int
    max_body_bytes: int
    max_attempts: int
    retry_base_seconds: float
    retry_max_seconds: float
    lease: timedelta
    poll_seconds: float
    retention: timedelta
    database_timeout_seconds: float

    @classmethod
    def from_settings(cls, settings: RuntimeSettings) -> JobConfig:
        return cls(
            # The deployment's queue: replicas of other deployments sharing the database never take its items.
            queue=f"{settings.namespace}/{settings.deployment}/{settings.knowledge_base}",
            concurrency=settings.job_concurrency,
            max_queries=settings.job_max_queries,
            max_body_bytes=settings.job_max_body_bytes,
            max_attempts=settings.job_max_attempts,
            retry_base_seconds=settings.job_retry_base_seconds,
            retry_max_seconds=settings.job_retry_max_seconds,
            lease=timedelta(seconds=settings.job_lease_seconds),
            poll_seconds=settings.job_poll_seconds,
            retention=timedelta(seconds=settings.job_retention_seconds),
            database_timeout_seconds=settings.database_timeout_seconds,
        )


class _ChargedAtSubmission(TokenBucketLimiter):
    """Never refuses: a job's queries were charged to its client's bucket when the job was submitted."""

    def __init__(self) -> None:
        super().__init__(requests_per_minute=1)

    def check(self, client_id: str, now: float, cost: int = 1) -> RateDecision:
        return RateDecision(allowed=True, retry_after_seconds=0.0)


@dataclass(frozen=True)
class _Done:
    answer: Answer


@dataclass(frozen=True)
class _Transient:
    error: str
    not_before: float = 0.0


@dataclass(frozen=True)
class _Failed:
    error: str


Outcome = _Done | _Transient | _Failed


class JobWorker:
    """Works the job queue of one deployment from one replica; `start` and `stop` bracket its life."""

    def __init__(
        self,
        *,
        config: JobConfig,
        pool: AsyncConnectionPool[Any],
        service: QueryService,
        metrics: RuntimeMetrics,
        render: Callable[[Answer], Mapping[str, Any]],
        worker_id: str,
        rand: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        # Unique per process, not per pod: a restarted container keeps its pod name, and must not
        # be able to complete what its previous life claimed.
        self.worker_id = f"{worker_id}/{uuid.uuid4().hex[:12]}"
        self._pool = pool
        self._service = replace(
            service, limiter=_ChargedAtSubmission(), concurrency=ConcurrencyLimiter(max(1, config.concurrency))
        )
        self._metrics = metrics
        self._render = render
        self._rand = rand
        self._clock = clock
        self._in_flight: dict[tuple[uuid.UUID, int], tuple[ClaimedItem, asyncio.Task[None]]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._next_renewal = 0.0
        self._next_depth = 0.0
        self._next_purge = 0.0
        self._database_failures = 0

    # ---- life ---------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ragops-job-worker")

    def wake(self) -> None:
        """A job was just submitted here: claim now rather than at the next poll."""
        self._wake.set()

    async def stop(self) -> None:
        """Stops claiming, abandons the items in flight and hands them back to the queue."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        held = [item for item, _ in self._in_flight.values()]
        tasks = [task for _, task in self._in_flight.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if not held:
            return
        try:
            async with self._connection() as connection:
                released = await release_items(connection, held, worker=self.worker_id)
            log.info("job items returned to the queue", extra={"status": released})
        except (PoolTimeout, psycopg.Error):
            log.warning("job items not returned to the queue: database unavailable; their leases will expire")

    # ---- the loop -----------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                await self._maintain()
                claimed = await self._claim()
                self._database_failures = 0
            except (PoolTimeout, psycopg.Error) as error:
                self._database_failures += 1
                delay = retry_delay(self._database_failures, base=self.config.poll_seconds, cap=30, rand=self._rand)
                log.warning(f"job queue unavailable ({type(error).__name__}); retrying in {delay:.1f}s")
                await asyncio.sleep(delay)
                continue
            if claimed and len(self._in_flight) < self.config.concurrency:
                continue  # the queue may hold more
            await self._idle()

    async def _idle(self) -> None:
        """Waits for a local submission, a free slot, or the poll interval (and the lease renewal)."""
        wait = min(self.config.poll_seconds, self.config.lease.total_seconds() / 3)
        try:
            async with asyncio.timeout(wait):
                await self._wake.wait()
        except TimeoutError:
            pass
        self._wake.clear()

    async def _claim(self) -> int:
        free = self.config.concurrency - len(self._in_flight)
        if free <= 0:
            return 0
        async with self._connection() as connection:
            items = await claim_items(
                connection, queue=self.config.queue, worker=self.worker_id, limit=free, lease=self.config.lease
            )
        for item in items:
            if item.reclaimed:
                self._metrics.job_item_retried("lease_expired")
            task = asyncio.create_task(self._work(item), name=f"ragops-job-{item.job_id}-{item.position}")
            self._in_flight[item.key] = (item, task)
        return len(items)

    async def _maintain(self) -> None:
        now = self._clock()
        if self._in_flight and now >= self._next_renewal:
            held = [item for item, _ in self._in_flight.values()]
            async with self._connection() as connection:
                await renew_leases(connection, worker=self.worker_id, items=held, lease=self.config.lease)
            self._next_renewal = now + self.config.lease.total_seconds() / 3
        if now >= self._next_depth:
            async with self._connection() as connection:
                self._metrics.set_job_queue_depth(await queue_depth(connection, queue=self.config.queue))
            self._next_depth = now + DEPTH_REFRESH_SECONDS
        if now >= self._next_purge:
            async with self._connection() as connection:
                purged = await purge_jobs(connection, queue=self.config.queue, older_than=self.config.retention)
            if purged:
                log.info("expired jobs purged", extra={"status": purged})
            self._next_purge = now + min(PURGE_INTERVAL_SECONDS, self.config.retention.total_seconds())

    # ---- one item -----------------------------------------------------------------------------

    async def _work(self, item: ClaimedItem) -> None:
        try:
            outcome = await self._attempt(item)
            await self._record(item, outcome)
        except (PoolTimeout, psycopg.Error):
            # The outcome is lost, not the item: its lease expires and it is attempted again.
            log.warning("job item outcome not recorded: database unavailable")
        finally:
            self._in_flight.pop(item.key, None)
            self._wake.set()

    async def _attempt(self, item: ClaimedItem) -> Outcome:
        limit = self.config.max_attempts
        if item.attempts > limit:
            return _Failed(f"gave up after {limit} attempts: the replica working on it was lost each time")
        # The submitter's identity: during a rollout its job is answered by the version its
        # interactive queries get (the sticky assignment), never half by one and half by the other.
        # The stored key is the submitter's sticky key; its rate was charged when the job was submitted.
        submitter = ClientIdentity(trusted=item.client_id, label=item.client_id)
        question = Question(query=item.query, client=submitter, top_k=item.top_k, filters=dict(item.filters))
        try:
            answer = await self._service.answer(question)
        except ServiceUnavailable as error:
            return _Transient(f"{error.code}: {error}")
        except QueryTooLong as error:
            return _Failed(f"query_too_long: {error}")
        except Exception as error:
            log.exception("job query failed unexpectedly")
            return _Failed(f"internal_error: {type(error).__name__}")
        # The item completes only once its answer is in the answer log: a replica killed after
        # completing it would otherwise lose the log row.
        await self._service.answer_log.flush()
        failure = generation_failure(answer.generation_error)
        if failure is not None and item.attempts < limit:
            return _Transient(failure.message, not_before=failure.not_before)
        return _Done(answer)

    async def _record(self, item: ClaimedItem, outcome: Outcome) -> None:
        if isinstance(outcome, _Transient) and item.attempts < self.config.max_attempts:
            delay = retry_delay(
                item.attempts,
                base=self.config.retry_base_seconds,
                cap=self.config.retry_max_seconds,
                rand=self._rand,
                not_before=outcome.not_before,
            )
            async with self._connection() as connection:
                kept = await retry_item(
                    connection, item, worker=self.worker_id, error=outcome.error, delay=timedelta(seconds=delay)
                )
            if kept:
                self._metrics.job_item_retried("transient")
            return
        async with self._connection() as connection:
            if isinstance(outcome, _Done):
                finished = await finish_item(
                    connection,
                    item,
                    worker=self.worker_id,
                    state="done",
                    result=self._render(outcome.answer),
                    kb_version=outcome.answer.kb_version,
                )
            else:
                error = outcome.error
                if isinstance(outcome, _Transient):
                    error = f"{error} (attempt {item.attempts} of {self.config.max_attempts})"
                finished = await finish_item(connection, item, worker=self.worker_id, state="failed", error=error)
        if finished is None:
            log.warning("job item claim lost before completion; its new claim answers it")
            return
        self._metrics.job_item_finished("done" if isinstance(outcome, _Done) else "failed")
        if finished.job_seconds is not None:
            self._metrics.job_finished(finished.job_seconds)

    def _connection(self) -> contextlib.AbstractAsyncContextManager[psycopg.AsyncConnection[Any]]:
        return self._pool.connection(timeout=self.config.database_timeout_seconds)
