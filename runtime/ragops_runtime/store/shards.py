"""The scratch state of a sharded build: slice statistics, shard parts and the publish lock.

A sharded build (kb/build.py, `build_shard`) runs as N processes, each reading, embedding and
storing a disjoint slice of the sources into one version. They meet here, in three steps:

1. Slices. Boilerplate removal needs, per source, in how many documents each block appears
   (`cleaning.count_blocks`): every shard records the counts of its slice (one row per slice,
   the block counts beside it), and the blocks of the whole build are those whose summed count
   reaches the source's threshold: the sum is done here, in SQL, so no shard holds every count.
2. Parts. A shard that has stored its chunks records its part: the chunk ids, its documents, what
   it skipped, embedded and removed. A retried shard replaces its part.
3. Publish. Under an advisory lock on the version, whoever finds every part completes the
   version (kb/build.py); the scratch rows go with `clear`.

Slices and their counts are UNLOGGED: scratch, not written to the WAL (a large corpus has
millions of distinct blocks) and never shipped to replicas. A crash of the server empties them;
the shards still waiting count the missing slices again. Parts are ordinary tables: they name
stored chunks and survive a restart. Every row is keyed by the version and the shard count, so
a run with another count never mixes with this one.

This module issues SQL and nothing else: no reading of sources, no chunking, no embedding.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb

from .knowledge import KnowledgeStore, VersionRecord

SHARDS_DDL = [
    """CREATE UNLOGGED TABLE IF NOT EXISTS ragops.kb_build_slices (
        version_id integer NOT NULL REFERENCES ragops.kb_versions(id) ON DELETE CASCADE,
        shards integer NOT NULL,
        slice integer NOT NULL,
        documents jsonb NOT NULL,
        pages jsonb NOT NULL,
        PRIMARY KEY (version_id, shards, slice))""",
    """CREATE UNLOGGED TABLE IF NOT EXISTS ragops.kb_build_blocks (
        version_id integer NOT NULL REFERENCES ragops.kb_versions(id) ON DELETE CASCADE,
        shards integer NOT NULL,
        slice integer NOT NULL,
        source integer NOT NULL,
        block bigint NOT NULL,
        documents integer NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS kb_build_blocks_version ON ragops.kb_build_blocks (version_id, shards)",
    """CREATE TABLE IF NOT EXISTS ragops.kb_build_parts (
        version_id integer NOT NULL REFERENCES ragops.kb_versions(id) ON DELETE CASCADE,
        shards integer NOT NULL,
        shard integer NOT NULL,
        part jsonb NOT NULL,
        chunk_ids bigint[] NOT NULL,
        recorded_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (version_id, shards, shard))""",
]


@dataclass(frozen=True)
class SliceCounts:
    """What one slice held before boilerplate removal: documents and pages (non-JSONL) per source."""

    documents: dict[int, int]
    pages: dict[int, int]


@dataclass(frozen=True)
class Part:
    """One shard's share of the version: the chunk ids it stored and what it reports (JSON)."""

    shard: int
    chunk_ids: tuple[int, ...]
    report: dict[str, Any]


async def ensure_shards_schema(store: KnowledgeStore) -> None:
    async with store.connection.transaction():
        await store.connection.execute("SELECT pg_advisory_xact_lock(hashtext('ragops.schema'))")
        for statement in SHARDS_DDL:
            await store.connection.execute(statement)


async def record_slice(
    store: KnowledgeStore,
    record: VersionRecord,
    shards: int,
    slice_number: int,
    counts: SliceCounts,
    blocks: Mapping[int, Mapping[int, int]],
) -> bool:
    """Records a slice's counts and its block counts (source -> block -> documents) once.

    Several shards may count one slice (a waiting shard counts a slow peer's); the first record
    wins and the others change nothing. Returns whether this call recorded it.
    """
    connection = store.connection
    async with connection.transaction():
        await connection.execute(
            "SELECT pg_advisory_xact_lock(hashtext('ragops.build-slice'), hashtext(%s))",
            (f"{record.id}/{shards}/{slice_number}",),
        )
        cursor = await connection.execute(
            "SELECT 1 FROM ragops.kb_build_slices WHERE version_id = %s AND shards = %s AND slice = %s",
            (record.id, shards, slice_number),
        )
        if await cursor.fetchone() is not None:
            return False
        async with (
            connection.cursor() as copying,
            copying.copy(
                "COPY ragops.kb_build_blocks (version_id, shards, slice, source, block, documents) "
                "FROM STDIN WITH (FORMAT BINARY)"
            ) as copy,
        ):
            copy.set_types(["int4", "int4", "int4", "int4", "int8", "int4"])
            for source, counted in blocks.items():
                for block, documents in counted.items():
                    await copy.write_row((record.id, shards, slice_number, source, block, documents))
        await connection.execute(
            "INSERT INTO ragops.kb_build_slices (version_id, shards, slice, documents, pages) "
            "VALUES (%s, %s, %s, %s, %s)",
            (record.id, shards, slice_number, Jsonb(_keyed(counts.documents)), Jsonb(_keyed(counts.pages))),
        )
    return True


async def recorded_slices(store: KnowledgeStore, record: VersionRecord, shards: int) -> dict[int, SliceCounts]:
    cursor = await store.connection.execute(
        "SELECT slice, documents, pages FROM ragops.kb_build_slices WHERE version_id = %s AND shards = %s",
        (record.id, shards),
    )
    return {
        slice_number: SliceCounts(_unkeyed(documents), _unkeyed(pages))
        for slice_number, documents, pages in await cursor.fetchall()
    }


async def repeated_blocks(
    store: KnowledgeStore, record: VersionRecord, shards: int, thresholds: Mapping[int, int]
) -> dict[int, frozenset[int]]:
    """Per source, the blocks whose count summed over every slice reaches the source's threshold."""
    if not thresholds:
        return {}
    sources = sorted(thresholds)
    cursor = await store.connection.execute(
        """SELECT b.source, b.block
           FROM ragops.kb_build_blocks b
           JOIN unnest(%s::int[], %s::int[]) AS t(source, threshold) ON t.source = b.source
           WHERE b.version_id = %s AND b.shards = %s
           GROUP BY b.source, b.block, t.threshold
           HAVING sum(b.documents) >= t.threshold""",
        (sources, [thresholds[source] for source in sources], record.id, shards),
    )
    found: dict[int, set[int]] = {}
    for source, block in await cursor.fetchall():
        found.setdefault(source, set()).add(block)
    return {source: frozenset(blocks) for source, blocks in found.items()}


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


async def parts(store: KnowledgeStore, record: VersionRecord, shards: int) -> list[Part]:
    cursor = await store.connection.execute(
        "SELECT shard, chunk_ids, part FROM ragops.kb_build_parts WHERE version_id = %s AND shards = %s ORDER BY shard",
        (record.id, shards),
    )
    return [Part(shard, tuple(chunk_ids), report) for shard, chunk_ids, report in await cursor.fetchall()]


@contextlib.asynccontextmanager
async def publishing(store: KnowledgeStore, record: VersionRecord) -> AsyncIterator[None]:
    """Holds the version's publish lock (a session advisory lock): one shard publishes, the others wait."""
    key = (record.id,)
    await store.connection.execute("SELECT pg_advisory_lock(hashtext('ragops.publish'), %s)", key)
    try:
        yield
    finally:
        await store.connection.execute("SELECT pg_advisory_unlock(hashtext('ragops.publish'), %s)", key)


async def clear(store: KnowledgeStore, record: VersionRecord) -> None:
    """Drops the scratch rows of every sharded run of the version (it is complete)."""
    for table in ("kb_build_blocks", "kb_build_slices", "kb_build_parts"):
        await store.connection.execute(
            sql.SQL("DELETE FROM {} WHERE version_id = %s").format(sql.Identifier("ragops", table)), (record.id,)
        )


def _keyed(counts: Mapping[int, int]) -> dict[str, int]:
    return {str(source): count for source, count in counts.items()}


def _unkeyed(counts: Mapping[str, int]) -> dict[int, int]:
    return {int(source): int(count) for source, count in counts.items()}


def summed(counts: Sequence[Mapping[int, int]]) -> dict[int, int]:
    total: dict[int, int] = {}
    for counted in counts:
        for source, count in counted.items():
            total[source] = total.get(source, 0) + count
    return total
