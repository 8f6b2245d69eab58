"""What a knowledge-base version holds, read straight from PostgreSQL, to compare two builds of it.

Two builds of the same sources and settings must hold the same version whichever way they got
there (from nothing, incrementally, resumed after a crash, in another database): the same chunks
with the same vectors, the same documents and the same manifest but for what the build cost.
Plain SQL on purpose (only the table names come from the store's naming rule): a bug in the
store's own readers must not hide behind the same bug here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from ragops_runtime.store import EmbeddingSpace
from ragops_runtime.store.identifiers import sanitized_name

COST_FIELDS = frozenset(
    {
        "buildSeconds",
        "createdAt",
        "embeddedChunks",
        "embeddingRequests",
        "reusedEmbeddings",
        "reusedExtractions",
        "reusedDocuments",
    }
)
"""Manifest fields that say what a build cost, not what it built."""


@dataclass(frozen=True)
class VersionContent:
    status: str
    chunks: dict[str, tuple[Any, ...]]
    """chunk key -> (document, position, headings, context, text, metadata, tokens, text digest, vector as text)."""
    documents: list[tuple[Any, ...]]
    """(document id, title, digest, chunks), sorted."""
    manifest: dict[str, Any]
    """The manifest without its COST_FIELDS."""


def version_content(dsn: str, kb: str, version: str) -> VersionContent:
    with psycopg.connect(dsn) as connection:
        found = connection.execute(
            "SELECT id, status, space, manifest FROM ragops.kb_versions WHERE kb = %s AND version = %s",
            (kb, version),
        ).fetchone()
        assert found is not None, f"{kb}/{version} is not in the store"
        version_id, status, space, manifest = found
        key = EmbeddingSpace.from_json(space).key
        chunks, members = (sanitized_name(kb, key, suffix=suffix) for suffix in ("_chunks", "_members"))
        rows = connection.execute(
            sql.SQL(
                "SELECT c.chunk_key, c.document_id, c.position, c.heading_path, c.context, c.text, c.metadata, "
                "c.token_count, c.text_digest, c.embedding::text FROM {members} m JOIN {chunks} c ON c.id = m.chunk_id "
                "WHERE m.version_id = %s"
            ).format(members=sql.Identifier("ragops", members), chunks=sql.Identifier("ragops", chunks)),
            (version_id,),
        ).fetchall()
        documents = connection.execute(
            "SELECT document_id, title, digest, chunks FROM ragops.kb_documents WHERE version_id = %s "
            "ORDER BY document_id",
            (version_id,),
        ).fetchall()
    return VersionContent(
        status=status,
        chunks={row[0]: tuple(row[1:]) for row in rows},
        documents=[tuple(row) for row in documents],
        manifest={key: value for key, value in (manifest or {}).items() if key not in COST_FIELDS},
    )
