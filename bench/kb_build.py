"""Benchmark (issue 7, item 1): index build throughput in chunks/s, ragops against a peer and a floor.

For each size (10k and 100k chunks, 384 dimensions, the hashing embedder), each repeat measures
three sides, each in a fresh database on the same embedded PostgreSQL + pgvector:

- ragops: `build_version` of a JSONL corpus: ingest, chunk, embed, COPY, HNSW + full-text GIN
  index, manifest; i.e. all of `ragops kb build`, including the ingest and chunking the others skip.
- langchain-postgres: `PGVector.add_texts` of exactly the chunk texts ragops produced (read back
  from ragops' table), embedded by the same embedder; as it comes (no vector index, see
  bench/peers.py) and with the same HNSW index created by hand afterwards.
- floor: the same texts and the vectors already computed (no embedding at all), COPY'd in binary
  into a bare table, then the same HNSW index: no store can do less for the same index.

Rows are medians over the repeats; ragops' ratio is against the floor, the peer's against ragops.

    .venv/bin/python -m bench.kb_build [--quick] [--sizes 10000 100000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import psycopg
from pgvector.psycopg import register_vector  # type: ignore[import-untyped,unused-ignore]
from psycopg import sql

from bench import peers
from bench.common import (
    CHUNKS_PER_DOCUMENT,
    DIMENSIONS,
    HASHING,
    Postgres,
    Row,
    build_request,
    create_hnsw_index,
    load_average,
    machine,
    median,
    print_rows,
    result_document,
    write_corpus,
    write_result,
)
from ragops_runtime.kb.build import EmbeddingSettings, build_version
from ragops_runtime.store import KnowledgeStore
from ragops_runtime.store.identifiers import SCHEMA


@dataclass(frozen=True)
class Chunks:
    """What ragops stored, in id order: the input of the peer and the floor."""

    texts: list[str]
    metadatas: list[dict[str, Any]]
    vectors: list[np.ndarray]


def as_array(vector: Any) -> np.ndarray:
    """A stored embedding as float32: pgvector 0.4+ loads a `Vector`, older versions a numpy array."""
    return np.asarray(vector.to_numpy() if hasattr(vector, "to_numpy") else vector, dtype=np.float32)


async def ragops_build(dsn: str, corpus_path: Any, embedding: EmbeddingSettings = HASHING) -> tuple[float, Chunks]:
    async with await KnowledgeStore.connect(dsn) as store:
        started = time.perf_counter()
        report = await build_version(store, build_request(corpus_path, "v1", embedding=embedding))
        seconds = time.perf_counter() - started
        cursor = await store.connection.execute(
            sql.SQL("SELECT document_id, position, text, embedding FROM {} ORDER BY id").format(
                sql.Identifier(SCHEMA, report.record.chunk_table)
            )
        )
        rows = await cursor.fetchall()
    return seconds, Chunks(
        texts=[row[2] for row in rows],
        metadatas=[{"document_id": row[0], "position": row[1]} for row in rows],
        vectors=[as_array(row[3]) for row in rows],
    )


def peer_build(dsn: str, chunks: Chunks) -> tuple[float, float]:
    """Seconds for add_texts of every chunk, then seconds for the HNSW index on top."""
    connection = peers.engine(dsn)
    started = time.perf_counter()
    peers.add_all(peers.open_store(connection), chunks.texts, chunks.metadatas)
    added = time.perf_counter() - started
    connection.dispose()
    started = time.perf_counter()
    peers.create_hnsw_index(dsn)
    return added, time.perf_counter() - started


def floor_build(dsn: str, chunks: Chunks) -> float:
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute("CREATE EXTENSION IF NOT EXISTS vector")
        register_vector(connection)
        connection.execute(
            sql.SQL("CREATE TABLE floor (id bigint, text text, embedding vector({}))").format(sql.Literal(DIMENSIONS))
        )
        started = time.perf_counter()
        with (
            connection.cursor() as cursor,
            cursor.copy("COPY floor (id, text, embedding) FROM STDIN (FORMAT BINARY)") as copy,
        ):
            copy.set_types(["int8", "text", "vector"])
            for number, (text, vector) in enumerate(zip(chunks.texts, chunks.vectors, strict=True)):
                copy.write_row((number, text, vector))
        create_hnsw_index(connection, "floor", "vector_cosine_ops")
        return time.perf_counter() - started


def label(size: int) -> str:
    return f"{size // 1000}k" if size % 1000 == 0 else str(size)


def measure_size(pg: Postgres, size: int, repeats: int) -> list[Row]:
    corpus = pg.work / f"corpus-{size}.jsonl"
    write_corpus(corpus, max(size // CHUNKS_PER_DOCUMENT, 1))
    ragops_s, peer_s, peer_index_s, floor_s = [], [], [], []
    count = 0
    for repeat in range(1, repeats + 1):
        with pg.database() as dsn:
            seconds, chunks = asyncio.run(ragops_build(dsn, corpus))
        count = len(chunks.texts)
        ragops_s.append(seconds)
        with pg.database() as dsn:
            added, indexed = peer_build(dsn, chunks)
        peer_s.append(added)
        peer_index_s.append(added + indexed)
        with pg.database() as dsn:
            floor_s.append(floor_build(dsn, chunks))
        print(
            f"{label(size)} #{repeat}: ragops {seconds:.1f}s, peer {added:.1f}s + index {indexed:.1f}s, "
            f"floor {floor_s[-1]:.1f}s ({count} chunks)",
            flush=True,
        )
    name = f"build {label(size)} chunks"
    floor = f"{name}: floor, binary COPY of ready vectors + HNSW"
    ragops = f"{name}: ragops kb build (ingest, chunk, embed, COPY, HNSW + GIN)"
    return [
        Row(floor, count / median(floor_s), "chunks/s", repeats=repeats),
        Row(ragops, count / median(ragops_s), "chunks/s", baseline=floor, repeats=repeats),
        Row(
            f"{name}: langchain-postgres add_texts, no vector index",
            count / median(peer_s),
            "chunks/s",
            baseline=ragops,
            repeats=repeats,
        ),
        Row(
            f"{name}: langchain-postgres add_texts + the same HNSW by hand",
            count / median(peer_index_s),
            "chunks/s",
            baseline=ragops,
            repeats=repeats,
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 000 chunks, 2 repeats; results to a temp directory")
    parser.add_argument("--sizes", type=int, nargs="+", default=None)
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    sizes = args.sizes or ([2_000] if args.quick else [10_000, 100_000])
    repeats = args.repeats or (2 if args.quick else 3)
    load_before = load_average()
    started = datetime.now(UTC)
    with Postgres() as pg:
        rows = [row for size in sizes for row in measure_size(pg, size, repeats)]
        document = result_document(
            "kb_build", machine(pg.version), rows, started, load=f"{load_before} -> {load_average()}"
        )
    print_rows(document)
    print(f"wrote {write_result(document, quick=args.quick)}")


if __name__ == "__main__":
    main()
