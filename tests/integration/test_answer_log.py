"""The answer log's background writer on a real PostgreSQL: batches, a bounded queue, rows kept through an
outage with their own time, nothing lost silently."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from ragops_runtime.answer_log import AnswerLogWriter
from ragops_runtime.observability import DeploymentIdentity, RuntimeMetrics
from ragops_runtime.store import KnowledgeStore
from ragops_runtime.store.answers import AnswerRecord, ensure_answer_log

IDENTITY = DeploymentIdentity(namespace="shop", deployment="bot", pod="bot-0")


def record(version: str = "v1", kb: Any = "docs", at: datetime | None = None) -> AnswerRecord:
    return AnswerRecord(
        query_id=uuid.uuid4(),
        kb=kb,
        version=version,
        deployment="bot",
        query_digest="0" * 64,
        role="stable",
        document_ids=["a.md"],
        mode="retrieval_only",
        degraded_reason=None,
        latency_ms=3.5,
        input_tokens=0,
        output_tokens=0,
        cost_usd=0.0,
        at=at or datetime.now(UTC),
    )


def degraded(metrics: RuntimeMetrics, reason: str) -> float:
    labels = {"namespace": "shop", "deployment": "bot", "pod": "bot-0", "kb_version": "v1", "role": "stable"}
    value = metrics.registry.get_sample_value("ragops_degraded_total", {**labels, "reason": reason})
    return value or 0.0


async def prepared_pool(dsn: str) -> AsyncConnectionPool[Any]:
    async with await KnowledgeStore.connect(dsn) as store:
        await store.ensure_schema()
        await ensure_answer_log(store.connection)
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        dsn, min_size=1, max_size=2, kwargs={"autocommit": True}, open=False
    )
    await pool.open()
    return pool


def logged(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as connection:
        return [str(row[0]) for row in connection.execute("SELECT query_id FROM ragops.answer_log ORDER BY at")]


def logged_at(dsn: str) -> dict[str, datetime]:
    with psycopg.connect(dsn) as connection:
        return {str(row[0]): row[1] for row in connection.execute("SELECT query_id, at FROM ragops.answer_log")}


def test_records_are_written_in_the_background_with_their_own_time_and_flush_waits_for_them(pg_dsn: str) -> None:
    metrics = RuntimeMetrics(IDENTITY)
    answered = datetime.now(UTC) - timedelta(minutes=10)

    async def scenario() -> list[str]:
        pool = await prepared_pool(pg_dsn)
        writer = AnswerLogWriter(pool, metrics, wait_seconds=5, max_batch=7)
        writer.start()
        records = [record(at=answered) for _ in range(50)]
        for one in records:
            writer.submit(one)  # never awaits: the response path does not wait for the database
        assert await writer.flush()
        assert writer.pending == 0
        times = logged_at(pg_dsn)
        assert {str(one.query_id) for one in records} <= set(times)
        assert {times[str(one.query_id)] for one in records} == {answered}  # answered then, not written now
        await writer.aclose()
        await pool.close()
        return [str(one.query_id) for one in records]

    ids = asyncio.run(scenario())
    assert set(ids) <= set(logged(pg_dsn))
    assert degraded(metrics, "answer_log_dropped") == 0 and degraded(metrics, "answer_log_unavailable") == 0


def test_a_full_queue_drops_its_oldest_rows_and_counts_them_instead_of_blocking(pg_dsn: str) -> None:
    metrics = RuntimeMetrics(IDENTITY)
    records = [record() for _ in range(5)]

    async def scenario() -> None:
        pool = await prepared_pool(pg_dsn)
        writer = AnswerLogWriter(pool, metrics, wait_seconds=5, capacity=3)
        for one in records:  # not started yet: nothing drains the queue
            writer.submit(one)
        assert writer.pending == 3
        writer.start()
        assert await writer.flush()
        await writer.aclose()
        await pool.close()

    asyncio.run(scenario())
    written = set(logged(pg_dsn))
    assert {str(one.query_id) for one in records[2:]} <= written
    assert not {str(one.query_id) for one in records[:2]} & written
    assert degraded(metrics, "answer_log_dropped") == 2


def test_rows_wait_through_an_outage_and_are_written_when_the_database_is_back(pg_dsn: str) -> None:
    metrics = RuntimeMetrics(IDENTITY)
    during = [record(at=datetime.now(UTC) - timedelta(minutes=5)) for _ in range(3)]

    async def scenario() -> None:
        await (await prepared_pool(pg_dsn)).close()
        # The pool reaches a database that is not there yet: every connection attempt fails.
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            "host=127.0.0.1 port=9 dbname=none connect_timeout=1", min_size=0, max_size=1, open=False
        )
        await pool.open(wait=False)
        writer = AnswerLogWriter(pool, metrics, wait_seconds=0.5, retry_seconds=0.2)
        writer.start()
        for one in during:
            writer.submit(one)
        assert not await writer.flush()  # gives up waiting after the timeout; the rows stay queued
        assert writer.pending == 3
        # The database comes back: the writer's next try goes to a pool that reaches it.
        back: AsyncConnectionPool[Any] = AsyncConnectionPool(
            pg_dsn, min_size=1, max_size=1, kwargs={"autocommit": True}, open=False
        )
        await back.open()
        writer._pool = back
        await pool.close()
        for _ in range(50):
            if await writer.flush() and writer.pending == 0:
                break
        assert writer.pending == 0
        await writer.aclose()
        await back.close()

    asyncio.run(scenario())
    times = logged_at(pg_dsn)
    assert {times[str(one.query_id)] for one in during} == {one.at for one in during}
    assert degraded(metrics, "answer_log_unavailable") == 3  # deferred, counted once each
    assert degraded(metrics, "answer_log_dropped") == 0


def test_rows_still_unwritten_at_shutdown_are_counted_lost(pg_dsn: str) -> None:
    metrics = RuntimeMetrics(IDENTITY)

    async def scenario() -> None:
        # Nothing listens there: every connection attempt fails, as during a database outage.
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            "host=127.0.0.1 port=9 dbname=none connect_timeout=1", min_size=0, max_size=1, open=False
        )
        await pool.open(wait=False)
        writer = AnswerLogWriter(pool, metrics, wait_seconds=0.5)
        writer.start()
        writer.submit(record())
        writer.submit(record())
        assert not await writer.flush()
        assert writer.pending == 2
        await writer.aclose()
        assert writer.pending == 0
        await pool.close()

    asyncio.run(scenario())
    assert degraded(metrics, "answer_log_unavailable") == 2
    assert degraded(metrics, "answer_log_dropped") == 2


def test_a_row_the_database_refuses_is_dropped_alone_and_counted(pg_dsn: str) -> None:
    metrics = RuntimeMetrics(IDENTITY)
    good = [record(), record()]
    refused = record(kb=None)  # kb is NOT NULL: the database refuses the row, whatever the retries

    async def scenario() -> None:
        pool = await prepared_pool(pg_dsn)
        writer = AnswerLogWriter(pool, metrics, wait_seconds=5)
        for one in (good[0], refused, good[1]):  # one batch
            writer.submit(one)
        writer.submit(good[0])  # a row written twice (a retried batch) is written once
        writer.start()
        assert await writer.flush()
        fresh = record()
        writer.submit(fresh)
        assert await writer.flush()
        good.append(fresh)
        await writer.aclose()
        await pool.close()

    asyncio.run(scenario())
    written = logged(pg_dsn)
    assert {str(one.query_id) for one in good} <= set(written)
    assert str(refused.query_id) not in written
    assert degraded(metrics, "answer_log_dropped") == 1
    assert degraded(metrics, "answer_log_unavailable") == 0
