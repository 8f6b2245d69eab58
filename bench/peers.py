"""The peer measured against ragops: langchain-postgres `PGVector`, on the same server with the same vectors.

Only the benchmarks import this (the `bench` extra); the product never does.

What the peer does, and what is done for it to keep the comparison fair:

- Embeddings: ragops' own hashing embedder ("hashing-v1", the same dimensions) wrapped as a
  langchain `Embeddings`, so both sides compute identical vectors at identical cost.
- Writes: `add_texts` in batches of `ADD_BATCH` (one multi-row INSERT ... ON CONFLICT per call,
  through SQLAlchemy); one call for 100 000 texts would exceed PostgreSQL's 65 535 bind parameters.
  Each text carries its document id and position as metadata, as ragops stores them.
- Index: `PGVector` creates no vector index at all (only a GIN index on the metadata); its
  documentation leaves the HNSW index to the user. The benchmarks measure it both ways: as it
  comes (an exact scan), and with the HNSW index ragops builds, created by hand with the same
  m, ef_construction, operator class and maintenance_work_mem.
- Queries: `similarity_search(text, k)`, cosine distance; with the index, pgvector's default
  `hnsw.ef_search` (40) equals what ragops sets for top-20 (max(40, 2k)).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

# The `bench` extra; mypy also runs where it is not installed (`make test` syncs without it).
import sqlalchemy  # type: ignore[import-not-found,unused-ignore]
from langchain_core.embeddings import Embeddings  # type: ignore[import-not-found,unused-ignore]
from langchain_postgres import PGVector  # type: ignore[import-not-found,unused-ignore]
from langchain_postgres.vectorstores import DistanceStrategy  # type: ignore[import-not-found,unused-ignore]
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from bench.common import DIMENSIONS, HNSW_EF_CONSTRUCTION, HNSW_M, INDEX_BUILD_MEMORY
from ragops_runtime.embedding import HashingEmbedder, StaticEmbedder

ADD_BATCH = 1000
COLLECTION = "bench"


class HashingEmbeddings(Embeddings):  # type: ignore[misc,unused-ignore]
    """ragops' hashing embedder behind langchain's `Embeddings` interface."""

    def __init__(self, dimensions: int = DIMENSIONS) -> None:
        self._embedder = HashingEmbedder(dimensions=dimensions)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self._embedder.embed_one(text) for text in texts]

    def embed_query(self, text: str) -> list[float]:
        return self._embedder.embed_one(text)


class StaticEmbeddings(Embeddings):  # type: ignore[misc,unused-ignore]
    """ragops' default static embedder behind langchain's `Embeddings` interface."""

    def __init__(self) -> None:
        self._embedder = StaticEmbedder()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        vectors: list[list[float]] = self._embedder.embed_many(texts).tolist()
        return vectors

    def embed_query(self, text: str) -> list[float]:
        return self._embedder.embed_one(text)


def engine(dsn: str, *, pool_size: int = 5) -> sqlalchemy.Engine:
    """A SQLAlchemy engine (psycopg 3 driver) on the libpq DSN, e.g. the embedded server's socket."""
    params = conninfo_to_dict(dsn)
    url = sqlalchemy.URL.create(
        "postgresql+psycopg",
        username=str(params.get("user", "postgres")),
        password=str(params["password"]) if params.get("password") else None,
        database=str(params.get("dbname", "postgres")),
        query={"host": str(params["host"])} if "host" in params else {},
        port=int(str(params["port"])) if "port" in params else None,
    )
    return sqlalchemy.create_engine(url, pool_size=pool_size, max_overflow=0)


def open_store(connection: sqlalchemy.Engine, embeddings: Embeddings | None = None) -> PGVector:
    """PGVector on an engine: creates the extension, its two tables and the collection if missing.

    The embeddings default to ragops' hashing embedder at DIMENSIONS; any other must be the one ragops
    used for the same comparison.
    """
    embeddings = embeddings if embeddings is not None else HashingEmbeddings()
    return PGVector(
        embeddings,
        connection=connection,
        embedding_length=len(embeddings.embed_query("dimensions")),
        collection_name=COLLECTION,
        distance_strategy=DistanceStrategy.COSINE,
    )


def add_all(store: PGVector, texts: Sequence[str], metadatas: Sequence[dict[str, Any]]) -> None:
    for start in range(0, len(texts), ADD_BATCH):
        store.add_texts(list(texts[start : start + ADD_BATCH]), metadatas=list(metadatas[start : start + ADD_BATCH]))


def create_hnsw_index(dsn: str) -> None:
    """The index ragops builds, on the peer's embedding table (PGVector offers no option for it)."""
    with psycopg.connect(dsn, autocommit=True) as connection, connection.transaction():
        connection.execute(sql.SQL("SET LOCAL maintenance_work_mem = {}").format(sql.Literal(INDEX_BUILD_MEMORY)))
        connection.execute(
            sql.SQL(
                "CREATE INDEX langchain_pg_embedding_hnsw ON langchain_pg_embedding "
                "USING hnsw (embedding vector_cosine_ops) WITH (m = {m}, ef_construction = {ef})"
            ).format(m=sql.Literal(HNSW_M), ef=sql.Literal(HNSW_EF_CONSTRUCTION))
        )


def drop_hnsw_index(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute("DROP INDEX IF EXISTS langchain_pg_embedding_hnsw")
