"""Where the shards of a sharded build meet: their recorded parts and the version's publish lock.

A sharded build (kb/build.py, `build_shard`) runs as N processes, each embedding and storing a
disjoint share of one version's documents. A shard that has stored its chunks records its part
(the chunk ids, its documents' rows and what it cost); a retried shard replaces its part. Under
the version's publish lock, the shard that finds all N parts recorded builds the indexes and
completes the version with their union, and `clear` drops the parts. Parts are ordinary tables:
they name stored chunks and survive a restart of the server. Every row is keyed by the version
and the shard count, so a run with another count never mixes with this one.

This module issues SQL and nothing else: no reading of sources, no chunking, no embedding.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from psycopg.types.json import Jsonb

from .knowledge import KnowledgeStore, VersionRecord

_PARTS_DDL = """CREATE TABLE IF NOT EXISTS ragops.kb_build_parts (
    version_id integer NOT NULL REFERENCES ragops.kb_versions(id) ON DELETE CASCADE,
    shards integer NOT NULL,
    shard integer NOT NULL,
    part jsonb NOT NULL,
    chunk_ids bigint[] NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (version_id, shards, shard))"""
_PUBLISH_LOCK = int.from_bytes(b"rgpb", "big")
"""First key of the advisory lock a shard holds while it looks for every part (the second is the version's id)."""


@dataclass(frozen=True)
class Part:
    """One shard's share of the version: the chunk ids it stored and what it reports (JSON)."""

    shard: int
    chunk_ids: tuple[int, ...]
    report: dict[str, Any]


async def ensure_parts_table(store: KnowledgeStore) -> None:
    async with store.connection.transaction():
        await store.connection.execute("SELECT pg_advisory_xact_lock(hashtext('ragops.schema'))")
        await store.connection.execute(_PARTS_DDL)


async def record_part(
    store: KnowledgeStore,
    record: VersionRecord,
    shards: int,
    shard: int,
    chunk_ids: Iterable[int],
    report: Mapping[str, Any],
) -> None:
    """Records (or, for a retried shard, replaces) a shard's part of the version."""
    await store.connection.execute(
        """INSERT INTO ragops.kb_build_parts (version_id, shards, shard, part, chunk_ids) VALUES (%s, %s, %s, %s, %s)
           ON CONFLICT (version_id, shards, shard)
           DO UPDATE SET part = EXCLUDED.part, chunk_ids = EXCLUDED.chunk_ids, recorded_at = now()""",
        (record.id, shards, shard, Jsonb(dict(report)), sorted(set(chunk_ids))),
    )


async def recorded_parts(store: KnowledgeStore, record: VersionRecord, shards: int) -> list[Part]:
    cursor = await store.connection.execute(
        "SELECT shard, chunk_ids, part FROM ragops.kb_build_parts WHERE version_id = %s AND shards = %s ORDER BY shard",
        (record.id, shards),
    )
    return [Part(shard, tuple(chunk_ids), report) for shard, chunk_ids, report in await cursor.fetchall()]


@contextlib.asynccontextmanager
async def publishing(store: KnowledgeStore, record: VersionRecord) -> AsyncIterator[None]:
    """Holds the version's publish lock (a session advisory lock): one shard publishes, the others wait.

    A session lock, not a transaction's: publishing builds indexes and VACUUMs, outside any
    transaction. A shard that dies holding it releases it with its connection.
    """
    key = (_PUBLISH_LOCK, record.id)
    await store.connection.execute("SELECT pg_advisory_lock(%s, %s)", key)
    try:
        yield
    finally:
        await store.connection.execute("SELECT pg_advisory_unlock(%s, %s)", key)


async def clear_parts(store: KnowledgeStore, record: VersionRecord) -> None:
    """Drops the parts of every sharded run of the version (it is complete)."""
    await store.connection.execute("DELETE FROM ragops.kb_build_parts WHERE version_id = %s", (record.id,))
