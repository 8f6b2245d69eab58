"""The answer log: one row per answered query, with user feedback; the satisfaction signal's source.

Rows keep what SLOs and drift detection need (version and role, mode, latency, cost, retrieved
documents, feedback) and a digest of the query, not its text: queries can carry personal data, and nothing
here needs them. Old rows are purged by retention. Part of the store: the only SQL on the log.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg

from .migrations import ColumnMigration, add_missing_columns

ANSWER_LOG_DDL = [
    """CREATE TABLE IF NOT EXISTS ragops.answer_log (
        query_id uuid PRIMARY KEY,
        at timestamptz NOT NULL DEFAULT now(),
        kb text NOT NULL,
        version text NOT NULL,
        deployment text NOT NULL,
        query_digest text NOT NULL,
        document_ids text[] NOT NULL,
        mode text NOT NULL,
        degraded_reason text,
        latency_ms real NOT NULL,
        input_tokens integer NOT NULL DEFAULT 0,
        output_tokens integer NOT NULL DEFAULT 0,
        cost_usd real,
        feedback real CHECK (feedback BETWEEN 0 AND 1),
        feedback_at timestamptz)""",
    "CREATE INDEX IF NOT EXISTS answer_log_kb_at ON ragops.answer_log (kb, at)",
]
ANSWER_LOG_MIGRATIONS: tuple[ColumnMigration, ...] = (
    # Progressive delivery: whether the version answered as stable or as a canary, so a rating is
    # attributed to the version and role that earned it. Rows of older releases read 'stable'.
    ("answer_log", "role", "text NOT NULL DEFAULT 'stable'"),
)


@dataclass(frozen=True)
class AnswerRecord:
    query_id: uuid.UUID
    kb: str
    version: str
    deployment: str
    query_digest: str
    role: str
    document_ids: list[str]
    mode: str
    degraded_reason: str | None
    latency_ms: float
    input_tokens: int
    output_tokens: int
    cost_usd: float | None


async def ensure_answer_log(connection: psycopg.AsyncConnection[Any]) -> None:
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock(hashtext('ragops.answer_log'))")
        for statement in ANSWER_LOG_DDL:
            await connection.execute(statement)
        await add_missing_columns(connection, ANSWER_LOG_MIGRATIONS)


async def log_answer(connection: psycopg.AsyncConnection[Any], record: AnswerRecord) -> None:
    await connection.execute(
        """INSERT INTO ragops.answer_log (query_id, kb, version, role, deployment, query_digest, document_ids, mode,
               degraded_reason, latency_ms, input_tokens, output_tokens, cost_usd)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
        (
            record.query_id,
            record.kb,
            record.version,
            record.role,
            record.deployment,
            record.query_digest,
            record.document_ids,
            record.mode,
            record.degraded_reason,
            record.latency_ms,
            record.input_tokens,
            record.output_tokens,
            record.cost_usd,
        ),
    )


@dataclass(frozen=True)
class RatedAnswer:
    """The answer a rating was stored for: the version and role that answered it earn the rating."""

    version: str
    role: str


async def record_feedback(
    connection: psycopg.AsyncConnection[Any], query_id: uuid.UUID, rating: float
) -> RatedAnswer | None:
    """Stores a rating in [0, 1] for an answered query; None when the query id is unknown."""
    cursor = await connection.execute(
        "UPDATE ragops.answer_log SET feedback = %s, feedback_at = now() WHERE query_id = %s RETURNING version, role",
        (rating, query_id),
    )
    row = await cursor.fetchone()
    return RatedAnswer(version=row[0], role=row[1]) if row else None


async def satisfaction(connection: psycopg.AsyncConnection[Any], kb: str, since: datetime) -> tuple[float | None, int]:
    """Mean rating and number of rated answers of `kb` since `since` (None when nothing was rated)."""
    cursor = await connection.execute(
        "SELECT avg(feedback), count(feedback) FROM ragops.answer_log WHERE kb = %s AND at >= %s", (kb, since)
    )
    row = await cursor.fetchone()
    if row is None or row[1] == 0:
        return None, 0
    return float(row[0]), int(row[1])


async def purge_answers(connection: psycopg.AsyncConnection[Any], older_than: timedelta) -> int:
    cursor = await connection.execute("DELETE FROM ragops.answer_log WHERE at < now() - %s", (older_than,))
    return cursor.rowcount


@dataclass(frozen=True)
class LoggedUsage:
    """What the answer log says a knowledge base used between `first_at` and `last_at`."""

    answers: int
    generated: int
    with_passages: int
    input_tokens: int
    output_tokens: int
    recorded_cost_usd: float
    first_at: datetime | None
    last_at: datetime | None


async def usage_since(
    connection: psycopg.AsyncConnection[Any], kb: str, since: datetime, deployment: str | None = None
) -> LoggedUsage:
    """Sums of the answer log of `kb` (and `deployment`, when given) since `since`: the cost estimator's input."""
    cursor = await connection.execute(
        """SELECT count(*), count(*) FILTER (WHERE mode = 'generated'),
                  count(*) FILTER (WHERE cardinality(document_ids) > 0),
                  coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0),
                  coalesce(sum(cost_usd), 0), min(at), max(at)
           FROM ragops.answer_log
           WHERE kb = %s AND at >= %s AND (%s::text IS NULL OR deployment = %s)""",
        (kb, since, deployment, deployment),
    )
    row = await cursor.fetchone()
    assert row is not None  # an aggregate without GROUP BY always returns one row
    return LoggedUsage(
        answers=int(row[0]),
        generated=int(row[1]),
        with_passages=int(row[2]),
        input_tokens=int(row[3]),
        output_tokens=int(row[4]),
        recorded_cost_usd=float(row[5]),
        first_at=row[6],
        last_at=row[7],
    )
