"""Where a query's chunks are read: a streaming replica that holds the version, else the primary.

With `RAGOPS_READ_ONLY_DSN` (a CloudNativePG `-ro` Service) the chunks are read on a replica, while
the activation pointer, the traffic split and every write (answer log, feedback, jobs, probe lock)
stay on the primary, `RAGOPS_DSN`. The pointer lives on the primary and moves the moment a version
is activated there, possibly before a replica has replayed that version. The rule: a connection
to a replica reads a version's chunks only once its server holds the version complete
(`KnowledgeStore.holds`); until then the query reads the same version on the primary. The
progressive-delivery split obeys it too: a canary (or a shadow or probe on the candidate) goes
through `read` with the candidate's record like any other query.

Why the version's row and not an LSN: a `-ro` Service spreads connections over every replica, each
at its own replay point, so the check belongs to each connection's server, not to the deployment.
`complete_version` commits the membership, the documents and status `built` in one transaction,
and a hot standby shows whole transactions only, so the row is exact; it needs nothing recorded
at build time (an LSN would need the completion's LSN written after its own commit) and is cached
per pooled connection and version, so it costs one small query per connection and version.

Why the primary and not the old version while a replica lags: the pointer decides which version
answers, never the replica a connection happened to reach. Otherwise consecutive queries of one
client could flip between versions (and a canary's sticky assignment with them) until every
replica caught up. The cost is load on the primary for as long as the lag lasts, bounded by the
pool size of each runtime replica.

A replica that cannot be reached (refused, timed out, or no free pooled connection within the
database wait) degrades reads to the primary, never to a 503: the primary holds every version and
answers correctly; the replica is capacity, not correctness. Its pool is closed, a background
check connects every `REPLICA_RETRY_SECONDS`, and a fresh pool takes reads again once it answers.
`ragops_replica_up`, `ragops_replica_reads_total{outcome}`, and `reads` in /readyz and /v1/info
show which is used and why. When the primary cannot take the reads either, its pool times out
and the query gets the usual 503 `database_unavailable`.

This module issues no SQL of its own beyond `SELECT 1`: the version check and the search settings are the store's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import select
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import psycopg
from pgvector.psycopg import register_vector_async
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from .errors import first_line
from .observability.metrics import RuntimeMetrics
from .store import KnowledgeStore, VersionRecord
from .store.knowledge import prepare_search_session

log = logging.getLogger("ragops.replica")
T = TypeVar("T")

REPLICA_RETRY_SECONDS = 2.0
"""How often an unreachable replica is tried again; reads stay on the primary in between."""


POOL_RECONNECT_SECONDS = 10.0

IDLE_CHECK_SECONDS = 30.0
"""A pooled connection unused for longer than this is checked with a round trip before it is lent."""


class CheckoutCheck:
    """The pool's check of a connection it is about to lend: a round trip only when one is needed.

    psycopg's `check_connection` sends an empty query on every checkout: a round trip per query,
    about 7 % of a busy runtime's CPU. Most connections come back to the pool a few milliseconds
    before they are lent again, and a connection the server ended in between can be told without a
    round trip: PostgreSQL sends a terminating connection's client a FATAL message and closes the
    socket (a restart, a failover, `pg_terminate_backend`, idle_session_timeout), so an idle
    connection with something to read is checked, as is one unused for `idle_seconds` (a
    connection that a firewall dropped in silence shows nothing) and one lent for the first time.
    A connection that fails the check is discarded and the pool lends another; a failure that no
    check foresaw still reaches the query's error path (503 `database_unavailable`, Retry-After).
    """

    def __init__(self, idle_seconds: float = IDLE_CHECK_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self._idle = idle_seconds
        self._clock = clock
        self._lent: weakref.WeakKeyDictionary[psycopg.AsyncConnection[Any], float] = weakref.WeakKeyDictionary()

    async def __call__(self, connection: psycopg.AsyncConnection[Any]) -> None:
        now = self._clock()
        lent = self._lent.get(connection)
        self._lent[connection] = now
        if connection.closed or connection.broken:
            raise psycopg.OperationalError("the connection is closed")
        if lent is None or now - lent > self._idle or _has_input(connection):
            await AsyncConnectionPool.check_connection(connection)


def _has_input(connection: psycopg.AsyncConnection[Any]) -> bool:
    """Whether the server sent an idle connection anything (a FATAL message, or the socket's end)."""
    poller = select.poll()
    poller.register(connection.fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)
    return bool(poller.poll(0))


async def configure_connection(connection: psycopg.AsyncConnection[Any]) -> None:
    """A new pooled connection: pgvector's types, and the search settings for its session."""
    await register_vector_async(connection)
    await prepare_search_session(connection)


def connection_pool(dsn: str, size: int) -> AsyncConnectionPool[Any]:
    """A pool of autocommit connections with pgvector's types, checked at checkout when needed (not opened)."""
    return AsyncConnectionPool(
        dsn,
        min_size=1,
        max_size=size,
        open=False,
        configure=configure_connection,
        kwargs={"autocommit": True},
        check=CheckoutCheck(),
        # psycopg retries a lost connection with a doubling backoff for reconnect_timeout (5 min by
        # default): after a long outage the next try could come minutes after the database is
        # back. Giving up sooner lets the next request open a connection at once.
        reconnect_timeout=POOL_RECONNECT_SECONDS,
    )


class ReadRouter:
    """Runs each chunk read on the replica when it holds the version, otherwise on the primary."""

    def __init__(
        self,
        primary: AsyncConnectionPool[Any],
        *,
        replica_dsn: str | None,
        pool_size: int,
        wait_seconds: float,
        metrics: RuntimeMetrics,
        retry_seconds: float = REPLICA_RETRY_SECONDS,
    ) -> None:
        self._primary = primary
        self._dsn = replica_dsn
        self._pool_size = pool_size
        self._wait = wait_seconds
        self._metrics = metrics
        self._retry = retry_seconds
        self._replica: AsyncConnectionPool[Any] | None = None
        self._problem: str | None = None
        self._recovery: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()
        # Versions each pooled replica connection has shown complete. A connection keeps its server
        # for life and a replica never un-replays, so a positive answer never goes stale.
        self._held: weakref.WeakKeyDictionary[psycopg.AsyncConnection[Any], set[int]] = weakref.WeakKeyDictionary()

    @property
    def configured(self) -> bool:
        return self._dsn is not None

    @property
    def reads(self) -> str:
        """Where reads go, for /readyz and /v1/info: `primary`, `replica`, or the primary and why."""
        if self._dsn is None:
            return "primary"
        if self._replica is not None:
            return "replica"
        return f"primary: the read-only replica is unavailable ({self._problem})"

    async def start(self) -> None:
        """Opens the replica's pool if it answers now; otherwise reads start on the primary."""
        if self._dsn is None:
            return
        self._metrics.prepare_replica()
        problem = await self._probe()
        if problem is None:
            await self._open()
        else:
            self._down(problem)

    async def aclose(self) -> None:
        if self._recovery is not None:
            self._recovery.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._recovery
        if self._replica is not None:
            await self._replica.close()
            self._replica = None
        for task in list(self._closing):
            with contextlib.suppress(Exception):
                await task

    async def read(self, record: VersionRecord, work: Callable[[KnowledgeStore], Awaitable[T]]) -> T:
        """`work` on a store holding `record`: a replica connection that has replayed it, or the primary.

        Raises PoolTimeout or psycopg.OperationalError only when the primary cannot serve the read.
        """
        if self._dsn is None:
            return await self._on_primary(work)
        replica = self._replica
        if replica is None:
            self._metrics.replica_read("unavailable")
            return await self._on_primary(work)
        try:
            async with replica.connection(timeout=self._wait) as connection:
                store = KnowledgeStore(connection)
                if await self._holds(connection, store, record):
                    result = await work(store)
                    self._metrics.replica_read("replica")
                    return result
            outcome = "lag"
        except psycopg.errors.SerializationFailure:
            # A hot standby cancels a read whose snapshot conflicts with replay (40001): the
            # primary answers this one, the replica stays in use.
            outcome = "conflict"
        except (PoolTimeout, psycopg.OperationalError) as error:
            self._down(first_line(error), replica)
            outcome = "unavailable"
        self._metrics.replica_read(outcome)
        return await self._on_primary(work)

    async def check(self) -> str | None:
        """Why no read can be served now, or None: for readiness (the replica, else the primary)."""
        replica = self._replica
        if replica is not None:
            try:
                async with replica.connection(timeout=self._wait) as connection:
                    await connection.execute("SELECT 1")
                return None
            except (PoolTimeout, psycopg.Error) as error:
                self._down(first_line(error), replica)
        try:
            async with self._primary.connection(timeout=self._wait) as connection:
                await connection.execute("SELECT 1")
        except (PoolTimeout, psycopg.Error) as error:
            return f"database unreachable: {type(error).__name__}"
        return None

    async def _on_primary(self, work: Callable[[KnowledgeStore], Awaitable[T]]) -> T:
        async with self._primary.connection(timeout=self._wait) as connection:
            return await work(KnowledgeStore(connection))

    async def _holds(
        self, connection: psycopg.AsyncConnection[Any], store: KnowledgeStore, record: VersionRecord
    ) -> bool:
        held = self._held.setdefault(connection, set())
        if record.id in held:
            return True
        if not await store.holds(record):
            return False
        held.add(record.id)
        return True

    def _down(self, problem: str, pool: AsyncConnectionPool[Any] | None = None) -> None:
        """Moves reads to the primary; closes the failed pool (a fresh one reconnects without backoff)."""
        self._problem = problem
        self._metrics.set_replica_up(False)
        if pool is not None and pool is self._replica:
            self._replica = None
            log.warning("read-only replica unavailable, reading from the primary: %s", problem)
            closing = asyncio.create_task(pool.close(timeout=self._wait), name="ragops-replica-pool-close")
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)
        if self._recovery is None or self._recovery.done():
            self._recovery = asyncio.create_task(self._recover(), name="ragops-replica-recovery")

    async def _recover(self) -> None:
        while True:
            await asyncio.sleep(self._retry)
            problem = await self._probe()
            if problem is None:
                await self._open()
                log.info("read-only replica reachable again: reading chunks there")
                return
            self._problem = problem

    async def _probe(self) -> str | None:
        """None when a new connection to the replica answers within the database wait, else why not."""
        assert self._dsn is not None
        try:
            async with asyncio.timeout(self._wait):
                connection = await psycopg.AsyncConnection.connect(self._dsn, autocommit=True)
                async with connection:
                    await connection.execute("SELECT 1")
        except TimeoutError:
            return f"no answer within {self._wait:g} s"
        except (OSError, psycopg.Error) as error:
            return first_line(error)
        return None

    async def _open(self) -> None:
        assert self._dsn is not None
        pool = connection_pool(self._dsn, self._pool_size)
        await pool.open(wait=False)
        self._replica = pool
        self._problem = None
        self._metrics.set_replica_up(True)
