"""The runtime's pool checks a connection at checkout only when it needs to, and never lends a dead one.

`CheckoutCheck` (replica.py) replaced psycopg's round trip on every checkout. These tests hold it
to what the round trip guaranteed, on a real PostgreSQL: connections the server ended (terminated
backends, a restart of the whole server) are replaced before a query gets them, so the queries
that follow are answered; and a connection lent again a moment after its last use costs no
message to the server (a libpq protocol trace shows none).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from ragops_runtime.replica import CheckoutCheck, connection_pool
from tests.integration.test_faults import EmbeddedPostgres
from tests.integration.test_runtime import ask, publish, runtime

POOL_SIZE = 4


async def _lend_all(pool: AsyncConnectionPool[Any], count: int) -> set[int]:
    """Borrows `count` connections at once (so the pool holds that many) and returns their backends' pids."""
    async with contextlib.AsyncExitStack() as stack:
        connections = [await stack.enter_async_context(pool.connection(timeout=10)) for _ in range(count)]
        return {connection.info.backend_pid for connection in connections}


def test_connections_whose_backends_were_terminated_are_replaced_before_a_query_gets_them(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as setup:
        setup.execute("CREATE EXTENSION IF NOT EXISTS vector")  # the pool registers pgvector's types

    async def scenario() -> None:
        pool = connection_pool(pg_dsn, POOL_SIZE)
        await pool.open(wait=True)
        try:
            before = await _lend_all(pool, POOL_SIZE)
            assert len(before) == POOL_SIZE
            async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as admin:
                await admin.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", (list(before),))
            await asyncio.sleep(0.5)  # the backends' FATAL messages reach the sockets
            for _ in range(2 * POOL_SIZE):
                async with pool.connection(timeout=10) as connection:
                    assert connection.info.backend_pid not in before
                    assert await (await connection.execute("SELECT 1")).fetchone() == (1,)
        finally:
            await pool.close()

    asyncio.run(scenario())


def test_a_connection_lent_again_soon_costs_no_round_trip_and_an_idle_one_is_checked(
    pg_dsn: str, tmp_path: Path
) -> None:
    now = [0.0]
    check = CheckoutCheck(idle_seconds=30, clock=lambda: now[0])

    def messages_sent(trace: Path) -> list[str]:
        # libpq's trace: one line per message, "<timestamp>\tF\t<length>\t<Type> ..." for the frontend's.
        return [line.split("\t")[3].split(" ")[0] for line in trace.read_text().splitlines() if "\tF\t" in line]

    async def scenario() -> None:
        async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as connection:
            await check(connection)  # lent for the first time: checked
            trace = tmp_path / "libpq.trace"
            with trace.open("w") as out:
                connection.pgconn.trace(out.fileno())
                now[0] = 1.0
                await check(connection)  # lent again a second later
                out.flush()
                assert messages_sent(trace) == []
                now[0] = 40.0
                await check(connection)  # idle for longer than idle_seconds
                out.flush()
                assert messages_sent(trace) == ["Query"]
                connection.pgconn.untrace()

    asyncio.run(scenario())


@pytest.mark.postgres
def test_queries_right_after_a_postgresql_restart_are_answered() -> None:
    database = EmbeddedPostgres()
    try:
        asyncio.run(publish(database.dsn, "v1"))
        with runtime(
            database.dsn, cache_ttl_seconds=0, requests_per_minute_per_client=100_000, pool_size=POOL_SIZE
        ) as client:
            asyncio.run(_lend_all_through(client, POOL_SIZE))
            database.stop()
            database.start()
            started = time.monotonic()
            statuses = [ask(client, f"How do I charge the battery? ({number})").status_code for number in range(8)]
            assert statuses == [200] * 8, statuses
            assert time.monotonic() - started < 30
    finally:
        database.remove()


async def _lend_all_through(client: Any, count: int) -> None:
    """`count` queries at once, so that the runtime's pool opens `count` connections."""
    await asyncio.gather(*(asyncio.to_thread(ask, client, f"warm {number}") for number in range(count)))
