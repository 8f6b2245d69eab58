"""The answer log: one row per answered query (cached ones too), with user feedback; the satisfaction signal's source.

Rows keep what SLOs and drift detection need (version and role, mode, latency, cost, retrieved
documents) and a digest of the query, not its text: queries can carry personal data, and nothing
here needs them. Ratings are rows of `answer_feedback`, at most one per (answer, rater): a rater
is a digest of the caller's trusted identity (protection/identity.py), so one client cannot
rate an answer twice, whatever it puts in its headers. Old rows (and their ratings) are purged by
retention. Part of the store: the only SQL on the log.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
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
ANSWER_FEEDBACK_DDL = [
    """CREATE TABLE ragops.answer_feedback (
        query_id uuid NOT NULL REFERENCES ragops.answer_log (query_id) ON DELETE CASCADE,
        rater text NOT NULL,
        rating real NOT NULL CHECK (rating BETWEEN 0 AND 1),
        at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (query_id, rater))""",
    "CREATE INDEX answer_feedback_at ON ragops.answer_feedback (at)",
    # Ratings stored before raters were told apart (one per answer, in answer_log.feedback, a
    # column kept for replicas of older releases during an upgrade) count as one unknown rater.
    """INSERT INTO ragops.answer_feedback (query_id, rater, rating, at)
       SELECT query_id, 'legacy', feedback, coalesce(feedback_at, at) FROM ragops.answer_log
       WHERE feedback IS NOT NULL""",
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
    at: datetime
    """When the query was answered (a row written after an outage keeps its time)."""


async def ensure_answer_log(connection: psycopg.AsyncConnection[Any]) -> None:
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock(hashtext('ragops.answer_log'))")
        for statement in ANSWER_LOG_DDL:
            await connection.execute(statement)
        await add_missing_columns(connection, ANSWER_LOG_MIGRATIONS)
        cursor = await connection.execute("SELECT to_regclass('ragops.answer_feedback')")
        row = await cursor.fetchone()
        if row is None or row[0] is None:
            for statement in ANSWER_FEEDBACK_DDL:
                await connection.execute(statement)


async def log_answers(connection: psycopg.AsyncConnection[Any], records: Sequence[AnswerRecord]) -> None:
    """Inserts a batch of records: one pipelined round trip and one commit."""
    if not records:
        return
    async with connection.transaction(), connection.cursor() as cursor:
        await cursor.executemany(
            """INSERT INTO ragops.answer_log (query_id, at, kb, version, role, deployment, query_digest, document_ids,
                   mode, degraded_reason, latency_ms, input_tokens, output_tokens, cost_usd)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (query_id) DO NOTHING""",
            [
                (
                    record.query_id,
                    record.at,
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
                )
                for record in records
            ],
        )


@dataclass(frozen=True)
class RatedAnswer:
    """The answer a rating was for: the version and role that answered it earn the rating."""

    version: str
    role: str
    stored: bool
    """False when this rater had rated the answer already: the first rating stands."""


async def record_feedback(
    connection: psycopg.AsyncConnection[Any], query_id: uuid.UUID, rater: str, rating: float
) -> RatedAnswer | None:
    """Stores `rater`'s rating in [0, 1] of an answered query, unless it rated it before; None for an unknown query."""
    cursor = await connection.execute(
        """WITH answer AS (SELECT query_id, version, role FROM ragops.answer_log WHERE query_id = %(query)s),
                stored AS (
                    INSERT INTO ragops.answer_feedback (query_id, rater, rating)
                    SELECT query_id, %(rater)s, %(rating)s FROM answer
                    ON CONFLICT (query_id, rater) DO NOTHING
                    RETURNING query_id)
           SELECT version, role, EXISTS (SELECT FROM stored) FROM answer""",
        {"query": query_id, "rater": rater, "rating": rating},
    )
    row = await cursor.fetchone()
    return RatedAnswer(version=row[0], role=row[1], stored=row[2]) if row else None


@dataclass(frozen=True)
class Satisfaction:
    """Ratings of a knowledge base's answers given since some time."""

    mean: float | None
    """None when nothing was rated."""
    rated_answers: int
    raters: int


async def satisfaction(connection: psycopg.AsyncConnection[Any], kb: str, since: datetime) -> Satisfaction:
    """Mean rating, rated answers and distinct raters of `kb`'s ratings given since `since`."""
    cursor = await connection.execute(
        """SELECT avg(f.rating), count(DISTINCT f.query_id), count(DISTINCT f.rater)
           FROM ragops.answer_feedback f JOIN ragops.answer_log l USING (query_id)
           WHERE l.kb = %s AND f.at >= %s""",
        (kb, since),
    )
    row = await cursor.fetchone()
    assert row is not None  # an aggregate without GROUP BY always returns one row
    return Satisfaction(None if row[0] is None else float(row[0]), int(row[1]), int(row[2]))


async def raters_since(
    connection: psycopg.AsyncConnection[Any], kb: str, deployment: str, since: datetime
) -> dict[tuple[str, str], int]:
    """Distinct raters per (version, role) of `deployment`'s answers of `kb`, counting ratings given since `since`."""
    cursor = await connection.execute(
        """SELECT l.version, l.role, count(DISTINCT f.rater)
           FROM ragops.answer_feedback f JOIN ragops.answer_log l USING (query_id)
           WHERE l.kb = %s AND l.deployment = %s AND f.at >= %s
           GROUP BY l.version, l.role""",
        (kb, deployment, since),
    )
    return {(version, role): int(count) for version, role, count in await cursor.fetchall()}


async def purge_answers(connection: psycopg.AsyncConnection[Any], older_than: timedelta) -> int:
    cursor = await connection.execute("DELETE FROM ragops.answer_log WHERE at < now() - %s", (older_than,))
    return cursor.rowcount


@dataclass(frozen=True)
class LoggedUsage:
    """What the answer log says a knowledge base used between `first_at` and `last_at`."""

    answers: int
    generated: int
    cached: int
    """Answers served from the answer cache: no embedding, retrieval, rerank or generation."""
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
        """SELECT count(*), count(*) FILTER (WHERE mode = 'generated'), count(*) FILTER (WHERE mode = 'cached'),
                  count(*) FILTER (WHERE cardinality(document_ids) > 0 AND mode <> 'cached'),
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
        cached=int(row[2]),
        with_passages=int(row[3]),
        input_tokens=int(row[4]),
        output_tokens=int(row[5]),
        recorded_cost_usd=float(row[6]),
        first_at=row[7],
        last_at=row[8],
    )
