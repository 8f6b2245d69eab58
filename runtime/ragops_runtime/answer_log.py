"""Writes the answer log so that a short database outage loses no row.

An answer already given is never withheld because its log row cannot be written (while the
database is down the runtime still answers from its cache). The row waits instead, in a bounded
queue in memory, and a background task writes the queue, oldest first, as soon as the database
answers again; rows carry the time they were answered, not the time they were written. Only a
queue full (`capacity` rows: an outage long enough to fill it) or a process that dies before the
database returns loses rows, and each lost row is counted (`ragops_degraded_total{reason=
"answer_log_dropped"}`); each deferred one is counted as `answer_log_unavailable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from .observability.metrics import RuntimeMetrics
from .store.answers import AnswerRecord, log_answer

log = logging.getLogger("ragops.runtime")

DEFAULT_CAPACITY = 10_000
"""Rows kept while the database is down: minutes of a busy replica's cache hits, a few MiB."""


class AnswerLogWriter:
    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        metrics: RuntimeMetrics,
        *,
        wait_seconds: float,
        retry_seconds: float = 1.0,
        capacity: int = DEFAULT_CAPACITY,
    ) -> None:
        self._pool = pool
        self._metrics = metrics
        self._wait_seconds = wait_seconds
        self._retry_seconds = retry_seconds
        self._pending: deque[AnswerRecord] = deque()
        self._capacity = capacity
        self._queued = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        """Rows waiting for the database."""
        return len(self._pending)

    def start(self) -> None:
        self._task = asyncio.create_task(self._drain(), name="ragops-answer-log")

    async def write(self, record: AnswerRecord) -> None:
        """Writes `record` now, or queues it when the database cannot take it (or older rows wait)."""
        if not self._pending:
            try:
                async with self._pool.connection(timeout=self._wait_seconds) as connection:
                    await log_answer(connection, record)
                return
            except (PoolTimeout, psycopg.Error):
                pass
        self._keep(record)

    def _keep(self, record: AnswerRecord) -> None:
        self._metrics.degraded("answer_log_unavailable", kb_version=record.version, role=record.role)
        if len(self._pending) >= self._capacity:
            dropped = self._pending.popleft()
            self._metrics.degraded("answer_log_dropped", kb_version=dropped.version, role=dropped.role)
        self._pending.append(record)
        self._queued.set()

    async def _drain(self) -> None:
        while True:
            await self._queued.wait()
            try:
                await self._write_pending()
            except (PoolTimeout, psycopg.Error):
                await asyncio.sleep(self._retry_seconds)
                continue
            if not self._pending:
                self._queued.clear()
                log.info("answer log rows written after the database came back")

    async def _write_pending(self) -> None:
        async with self._pool.connection(timeout=self._wait_seconds) as connection:
            while self._pending:
                await log_answer(connection, self._pending[0])
                self._pending.popleft()

    async def aclose(self) -> None:
        """Stops the background writer after one last try; rows still waiting then are counted lost."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        with contextlib.suppress(PoolTimeout, psycopg.Error):
            await self._write_pending()
        for record in self._pending:
            self._metrics.degraded("answer_log_dropped", kb_version=record.version, role=record.role)
        if self._pending:
            log.warning(f"{len(self._pending)} answer log rows lost: the database was unavailable at shutdown")
        self._pending.clear()
