"""The answer log's writer: answered queries are logged in batches by a background task, off the response path.

A query's answer never waits for its own INSERT (a pool connection and a round trip, about as long
as the vector search itself under load), and is never withheld because its row cannot be written
(while the database is down the runtime still answers from its cache). `submit` only appends to a
bounded queue in memory and returns; one task per replica writes whatever has accumulated, oldest
first, in one pipelined batch. Rows carry the time they were answered, not the time they were
written. Nothing is lost silently:

- a batch the database cannot take (down, or no connection within the database timeout) stays
  queued and is retried every second at most (at once when someone waits in `flush`), so recovery
  does not wait on a long backoff; each row whose first write failed is counted once as
  `ragops_degraded_total{reason="answer_log_unavailable"}` (deferred, not lost);
- a full queue (`capacity` rows: an outage long enough to fill it) drops its oldest row, a row the
  database refuses (not an outage: retrying cannot help) is dropped alone, and rows still queued
  when the replica stops after one last try are dropped; each is counted as `answer_log_dropped`;
- `flush()` waits (at most the database timeout) until everything submitted before it is written
  or dropped: feedback on a query must find its row, and a job item is completed only once its
  answer is logged.

What it must not do: decide what is logged (service.py does) or hold SQL (store/answers.py does).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import deque
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from .observability.metrics import RuntimeMetrics
from .store.answers import AnswerRecord, log_answers

log = logging.getLogger("ragops.runtime")

DEFAULT_CAPACITY = 10_000
"""Rows kept while the database is slow or away: minutes of a busy replica's cache hits, a few MiB."""
MAX_BATCH = 500

_AWAY = (PoolTimeout, psycopg.OperationalError, psycopg.InterfaceError)
"""Errors that say the database cannot take rows now (the rows are fine: keep them and retry)."""


@dataclass
class _Queued:
    seq: int
    record: AnswerRecord
    deferred: bool = False


class AnswerLogWriter:
    """A bounded queue of answer-log rows and the task that writes them in batches."""

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        metrics: RuntimeMetrics,
        *,
        wait_seconds: float,
        retry_seconds: float = 1.0,
        capacity: int = DEFAULT_CAPACITY,
        max_batch: int = MAX_BATCH,
    ) -> None:
        self._pool = pool
        self._metrics = metrics
        self._wait_seconds = wait_seconds
        self._retry_seconds = retry_seconds
        self._capacity = capacity
        self._max_batch = max_batch
        self._pending: deque[_Queued] = deque()
        self._in_flight: list[_Queued] = []
        self._submitted = 0
        self._changed = asyncio.Condition()
        self._wake = asyncio.Event()
        self._hurry = asyncio.Event()  # set by flush: a retry waiting out its delay tries at once
        self._task: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        """Rows not written yet (queued or being written)."""
        return len(self._pending) + len(self._in_flight)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="ragops-answer-log")

    def submit(self, record: AnswerRecord) -> None:
        """Queues one row; never waits. A full queue drops its oldest row, counted."""
        if self.pending >= self._capacity:
            if self._pending:
                self._dropped(self._pending.popleft())
            else:  # everything held is being written right now: the new row is the one left out
                self._metrics.degraded("answer_log_dropped", kb_version=record.version, role=record.role)
                return
        self._pending.append(_Queued(self._submitted, record))
        self._submitted += 1
        self._wake.set()

    def _oldest_unsettled(self) -> float:
        if self._in_flight:
            return self._in_flight[0].seq
        if self._pending:
            return self._pending[0].seq
        return math.inf

    async def flush(self) -> bool:
        """Waits (at most the database timeout) until every row submitted before the call is written
        or dropped; False when the time ran out."""
        target = self._submitted
        if self._oldest_unsettled() >= target:
            return True
        self._wake.set()
        self._hurry.set()
        try:
            async with asyncio.timeout(self._wait_seconds), self._changed:
                await self._changed.wait_for(lambda: self._oldest_unsettled() >= target or self._task is None)
        except TimeoutError:
            return False
        return True

    async def aclose(self) -> None:
        """Writes what is left (within the database timeout), then stops; rows still unwritten are counted lost."""
        await self.flush()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._requeue()
        if self._pending:
            with contextlib.suppress(*_AWAY, psycopg.Error):
                await self._write_batch()
        lost = len(self._pending)
        while self._pending:
            self._dropped(self._pending.popleft())
        if lost:
            log.warning(f"{lost} answer log rows lost: the database was unavailable at shutdown")
        async with self._changed:
            self._changed.notify_all()

    def _requeue(self) -> None:
        """Puts an unwritten batch back at the head of the queue, oldest first."""
        self._pending.extendleft(reversed(self._in_flight))
        self._in_flight = []
        while len(self._pending) > self._capacity:
            self._dropped(self._pending.popleft())

    async def _write_batch(self) -> None:
        """Writes the oldest rows in one batch; raises (rows requeued) when the database cannot take them."""
        count = min(len(self._pending), self._max_batch)
        self._in_flight = [self._pending.popleft() for _ in range(count)]
        try:
            async with self._pool.connection(timeout=self._wait_seconds) as connection:
                try:
                    await log_answers(connection, [queued.record for queued in self._in_flight])
                except psycopg.Error as error:
                    if isinstance(error, _AWAY):
                        raise
                    # A row was refused (not an outage): write them one by one, dropping only the refused.
                    log.error(f"answer log refused a batch of {count} rows, writing them one by one: {error}")
                    for queued in list(self._in_flight):
                        try:
                            await log_answers(connection, [queued.record])
                        except psycopg.Error as row_error:
                            if isinstance(row_error, _AWAY):
                                raise
                            self._dropped(queued)
                        self._in_flight.remove(queued)
        except BaseException as error:
            for queued in self._in_flight if isinstance(error, _AWAY) else ():
                if not queued.deferred:
                    queued.deferred = True
                    self._metrics.degraded(
                        "answer_log_unavailable", kb_version=queued.record.version, role=queued.record.role
                    )
            self._requeue()
            raise
        self._in_flight = []

    async def _run(self) -> None:
        failures = 0
        while True:
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                await self._write_batch()
            except _AWAY as error:
                failures += 1
                if failures == 1:
                    log.warning(f"answer log rows wait for the database: {error}")
                async with self._changed:
                    self._changed.notify_all()
                self._hurry.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._hurry.wait(), min(0.1 * 2**failures, self._retry_seconds))
                continue
            if failures:
                log.info("answer log rows written after the database came back")
            failures = 0
            async with self._changed:
                self._changed.notify_all()

    def _dropped(self, queued: _Queued) -> None:
        self._metrics.degraded("answer_log_dropped", kb_version=queued.record.version, role=queued.record.role)
