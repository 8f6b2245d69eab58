"""The job queue: asynchronous and batch queries, in PostgreSQL, worked by the runtime replicas.

A job is one submission of one or more queries; each query is an item, the unit that is claimed,
answered, retried and completed. The queue is `ragops.job_items` itself, claimed with
`FOR UPDATE SKIP LOCKED`: no broker, and replicas never block each other on a claimed row.

Exactly once. A claim sets `claimed_by` (a worker id unique to one process) and increments
`attempts`; the pair is the claim's fencing token. Every later write about the item (renew,
retry, complete, fail, release) is conditional on `claimed_by`, `attempts` and `state = 'running'`,
so a worker whose claim was lost (its lease expired and another worker claimed the item) changes
nothing. Completion writes the item's result and the job's counters in one statement.

Visibility timeout. `available_at` is when a queued item may next be attempted and, while it
runs, when its lease expires; a worker renews the lease of the items it works on. An item whose
lease expired (its worker was killed, or lost the database) is claimable again like a queued one.

Privacy. The query text is kept only until the item is finished, then cleared: as in the answer
log, nothing kept for retention needs it. Finished jobs are purged by retention.

This module issues SQL and nothing else: no clock but the database's, no answering, no HTTP.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

ItemState = Literal["queued", "running", "done", "failed"]

JOBS_DDL = [
    "CREATE SCHEMA IF NOT EXISTS ragops",
    """CREATE TABLE IF NOT EXISTS ragops.jobs (
        id uuid PRIMARY KEY,
        queue text NOT NULL,
        client_id text NOT NULL,
        total integer NOT NULL CHECK (total > 0),
        done integer NOT NULL DEFAULT 0,
        failed integer NOT NULL DEFAULT 0,
        created_at timestamptz NOT NULL DEFAULT now(),
        finished_at timestamptz,
        CHECK (done + failed <= total))""",
    "CREATE INDEX IF NOT EXISTS jobs_finished ON ragops.jobs (queue, finished_at) WHERE finished_at IS NOT NULL",
    """CREATE TABLE IF NOT EXISTS ragops.job_items (
        job_id uuid NOT NULL REFERENCES ragops.jobs(id) ON DELETE CASCADE,
        position integer NOT NULL,
        queue text NOT NULL,
        query text,
        top_k integer,
        filters jsonb NOT NULL DEFAULT '{}',
        state text NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'running', 'done', 'failed')),
        attempts integer NOT NULL DEFAULT 0,
        available_at timestamptz NOT NULL DEFAULT now(),
        claimed_by text,
        completed_by text,
        kb_version text,
        result jsonb,
        last_error text,
        started_at timestamptz,
        finished_at timestamptz,
        PRIMARY KEY (job_id, position),
        CHECK ((state IN ('done', 'failed')) = (finished_at IS NOT NULL)))""",
    # The claim's index: only unfinished items, in the order they become available.
    """CREATE INDEX IF NOT EXISTS job_items_available ON ragops.job_items (queue, available_at)
        WHERE state IN ('queued', 'running')""",
]


@dataclass(frozen=True)
class NewItem:
    query: str
    top_k: int | None
    filters: Mapping[str, Any]


@dataclass(frozen=True)
class ClaimedItem:
    job_id: uuid.UUID
    position: int
    query: str
    top_k: int | None
    filters: Mapping[str, Any]
    attempts: int
    """The attempt this claim is, counting from 1; with the worker id, the claim's fencing token."""
    client_id: str
    """Who submitted the job: answered by the version that client is assigned to during a rollout."""
    reclaimed: bool
    """True when the item was running under an expired lease: a worker was lost while working on it."""

    @property
    def key(self) -> tuple[uuid.UUID, int]:
        return (self.job_id, self.position)


@dataclass(frozen=True)
class Finished:
    """An item's completion was recorded; `job_seconds` is set when it was the job's last item."""

    job_seconds: float | None


@dataclass(frozen=True)
class ItemStatus:
    position: int
    state: ItemState
    attempts: int
    kb_version: str | None
    result: dict[str, Any] | None
    error: str | None
    finished_at: datetime | None


@dataclass(frozen=True)
class JobStatus:
    id: uuid.UUID
    total: int
    done: int
    failed: int
    created_at: datetime
    finished_at: datetime | None
    expires_at: datetime | None
    items: tuple[ItemStatus, ...]


async def ensure_jobs_schema(connection: psycopg.AsyncConnection[Any]) -> None:
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock(hashtext('ragops.jobs'))")
        for statement in JOBS_DDL:
            await connection.execute(statement)


async def enqueue_job(
    connection: psycopg.AsyncConnection[Any], *, job_id: uuid.UUID, queue: str, client_id: str, items: Sequence[NewItem]
) -> datetime:
    """Stores a job and its items, all queued, in one transaction; returns the job's creation time."""
    if not items:
        raise ValueError("a job needs at least one query")
    async with connection.transaction():
        cursor = await connection.execute(
            "INSERT INTO ragops.jobs (id, queue, client_id, total) VALUES (%s, %s, %s, %s) RETURNING created_at",
            (job_id, queue, client_id, len(items)),
        )
        row = await cursor.fetchone()
        assert row is not None
        await connection.execute(
            """INSERT INTO ragops.job_items (job_id, position, queue, query, top_k, filters)
               SELECT %s, ordinality - 1, %s, query, top_k, filters
               FROM unnest(%s::text[], %s::integer[], %s::jsonb[]) WITH ORDINALITY AS i(query, top_k, filters)""",
            (
                job_id,
                queue,
                [item.query for item in items],
                [item.top_k for item in items],
                [Jsonb(dict(item.filters)) for item in items],
            ),
        )
    created: datetime = row[0]
    return created


async def claim_items(
    connection: psycopg.AsyncConnection[Any], *, queue: str, worker: str, limit: int, lease: timedelta
) -> list[ClaimedItem]:
    """Claims up to `limit` available items of `queue` for `worker`, oldest first, each with a lease.

    Available: queued and due, or running under an expired lease. Rows other workers are claiming
    right now are skipped, not waited for.
    """
    if limit < 1:
        return []
    cursor = await connection.execute(
        """WITH picked AS (
               SELECT job_id, position, state AS previous_state
               FROM ragops.job_items
               WHERE queue = %(queue)s AND state IN ('queued', 'running') AND available_at <= now()
               ORDER BY available_at
               LIMIT %(limit)s
               FOR UPDATE SKIP LOCKED)
           UPDATE ragops.job_items AS i
           SET state = 'running', claimed_by = %(worker)s, attempts = i.attempts + 1,
               available_at = now() + %(lease)s, started_at = coalesce(i.started_at, now())
           FROM picked, ragops.jobs j
           WHERE i.job_id = picked.job_id AND i.position = picked.position AND j.id = i.job_id
           RETURNING i.job_id, i.position, i.query, i.top_k, i.filters, i.attempts, j.client_id,
                     picked.previous_state = 'running' AS reclaimed""",
        {"queue": queue, "worker": worker, "limit": limit, "lease": lease},
    )
    return [
        ClaimedItem(
            job_id=row[0],
            position=row[1],
            query=row[2],
            top_k=row[3],
            filters=row[4],
            attempts=row[5],
            client_id=row[6],
            reclaimed=row[7],
        )
        for row in await cursor.fetchall()
    ]


async def renew_leases(
    connection: psycopg.AsyncConnection[Any], *, worker: str, items: Sequence[ClaimedItem], lease: timedelta
) -> int:
    """Extends the lease of those of `items` this worker still holds; returns how many it holds."""
    if not items:
        return 0
    cursor = await connection.execute(
        """UPDATE ragops.job_items AS i SET available_at = now() + %s
           FROM unnest(%s::uuid[], %s::integer[], %s::integer[]) AS held(job_id, position, attempts)
           WHERE i.job_id = held.job_id AND i.position = held.position AND i.attempts = held.attempts
             AND i.claimed_by = %s AND i.state = 'running'""",
        (
            lease,
            [item.job_id for item in items],
            [item.position for item in items],
            [item.attempts for item in items],
            worker,
        ),
    )
    return cursor.rowcount


_HELD = "job_id = %(job)s AND position = %(position)s AND claimed_by = %(worker)s AND attempts = %(attempt)s"


async def finish_item(
    connection: psycopg.AsyncConnection[Any],
    item: ClaimedItem,
    *,
    worker: str,
    state: Literal["done", "failed"],
    result: Mapping[str, Any] | None = None,
    kb_version: str | None = None,
    error: str | None = None,
) -> Finished | None:
    """Records the item's outcome, once; None when this worker's claim was lost (nothing is written).

    The item and its job's counters change in one statement; the job's row lock orders concurrent
    completions, so exactly one of them sees the last item finish and stamps `finished_at`.
    """
    cursor = await connection.execute(
        f"""WITH item AS (
                UPDATE ragops.job_items
                SET state = %(state)s, result = %(result)s, kb_version = %(version)s, last_error = %(error)s,
                    completed_by = claimed_by, finished_at = now(), query = NULL
                WHERE {_HELD} AND state = 'running'
                RETURNING job_id)
            UPDATE ragops.jobs AS j
            SET done = j.done + (%(state)s = 'done')::integer,
                failed = j.failed + (%(state)s = 'failed')::integer,
                finished_at = CASE WHEN j.done + j.failed + 1 = j.total THEN now() END
            FROM item
            WHERE j.id = item.job_id
            RETURNING extract(epoch FROM j.finished_at - j.created_at)""",
        {
            "state": state,
            "result": Jsonb(dict(result)) if result is not None else None,
            "version": kb_version,
            "error": error,
            "job": item.job_id,
            "position": item.position,
            "worker": worker,
            "attempt": item.attempts,
        },
    )
    row = await cursor.fetchone()
    if row is None:
        return None
    return Finished(job_seconds=float(row[0]) if row[0] is not None else None)


async def retry_item(
    connection: psycopg.AsyncConnection[Any], item: ClaimedItem, *, worker: str, error: str, delay: timedelta
) -> bool:
    """Puts the item back in the queue, due after `delay`; False when this worker's claim was lost."""
    cursor = await connection.execute(
        f"""UPDATE ragops.job_items
            SET state = 'queued', claimed_by = NULL, last_error = %(error)s, available_at = now() + %(delay)s
            WHERE {_HELD} AND state = 'running'""",
        {
            "error": error,
            "delay": delay,
            "job": item.job_id,
            "position": item.position,
            "worker": worker,
            "attempt": item.attempts,
        },
    )
    return cursor.rowcount == 1


async def release_items(connection: psycopg.AsyncConnection[Any], items: Sequence[ClaimedItem], *, worker: str) -> int:
    """Returns items a stopping worker holds to the queue at once, without counting the attempt."""
    if not items:
        return 0
    cursor = await connection.execute(
        """UPDATE ragops.job_items AS i
           SET state = 'queued', claimed_by = NULL, attempts = i.attempts - 1, available_at = now()
           FROM unnest(%s::uuid[], %s::integer[], %s::integer[]) AS held(job_id, position, attempts)
           WHERE i.job_id = held.job_id AND i.position = held.position AND i.attempts = held.attempts
             AND i.claimed_by = %s AND i.state = 'running'""",
        (
            [item.job_id for item in items],
            [item.position for item in items],
            [item.attempts for item in items],
            worker,
        ),
    )
    return cursor.rowcount


async def job_status(
    connection: psycopg.AsyncConnection[Any], job_id: uuid.UUID, *, queue: str, retention: timedelta
) -> JobStatus | None:
    """The job with its items; None when unknown in `queue` or finished longer than `retention` ago.

    An expired job is hidden even before the purge deletes it, so expiry does not depend on when
    the purge last ran.
    """
    async with connection.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(
            """SELECT id, total, done, failed, created_at, finished_at, finished_at + %s AS expires_at
               FROM ragops.jobs
               WHERE id = %s AND queue = %s AND (finished_at IS NULL OR finished_at > now() - %s)""",
            (retention, job_id, queue, retention),
        )
        job = await cursor.fetchone()
        if job is None:
            return None
        await cursor.execute(
            """SELECT position, state, attempts, kb_version, result, last_error, finished_at
               FROM ragops.job_items WHERE job_id = %s ORDER BY position""",
            (job_id,),
        )
        items = tuple(
            ItemStatus(
                position=row["position"],
                state=row["state"],
                attempts=row["attempts"],
                kb_version=row["kb_version"],
                result=row["result"],
                error=row["last_error"],
                finished_at=row["finished_at"],
            )
            for row in await cursor.fetchall()
        )
    return JobStatus(
        id=job["id"],
        total=job["total"],
        done=job["done"],
        failed=job["failed"],
        created_at=job["created_at"],
        finished_at=job["finished_at"],
        expires_at=job["expires_at"],
        items=items,
    )


async def queue_depth(connection: psycopg.AsyncConnection[Any], *, queue: str) -> dict[str, int]:
    """Unfinished items of `queue` by state: {"queued": n, "running": m}."""
    cursor = await connection.execute(
        """SELECT state, count(*) FROM ragops.job_items
           WHERE queue = %s AND state IN ('queued', 'running') GROUP BY state""",
        (queue,),
    )
    depth = {"queued": 0, "running": 0}
    for state, count in await cursor.fetchall():
        depth[state] = int(count)
    return depth


async def purge_jobs(connection: psycopg.AsyncConnection[Any], *, queue: str, older_than: timedelta) -> int:
    """Deletes the jobs of `queue` (their items cascade) that finished more than `older_than` ago."""
    cursor = await connection.execute(
        "DELETE FROM ragops.jobs WHERE queue = %s AND finished_at < now() - %s", (queue, older_than)
    )
    return cursor.rowcount
