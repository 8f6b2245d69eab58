"""Benchmark (issue 7, item 2): what a new knowledge-base version costs when 1 % of its documents changed.

Measured in one run on the embedded PostgreSQL + pgvector, with the built-in hashing embedder:

- full: a first build of the whole corpus (ingest, chunk, embed, COPY, HNSW + GIN index, manifest);
- incremental: a new version with 1 % of the documents edited, on ragops' shared chunk table
  (median of three, each editing a different 1 %): wall time, texts embedded and embedding requests;
- per-version table: the alternative layout's floor, i.e. copying every row (embeddings already
  computed, so no embedding cost at all) into a fresh table and building its HNSW index, which
  is what a table per version must do for every version.

It also times filtered retrieval on the shared table (the membership filter) against the same
query on the per-version table (no filter). Ratios are against the full build of this run.
Writes bench/results/kb_incremental.json (format: bench/common.py).

    .venv/bin/python -m bench.kb_incremental [--quick] [--chunks 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import numpy as np
from psycopg import sql

from bench.common import (
    CHUNKS_PER_DOCUMENT,
    DIMENSIONS,
    HNSW_EF_CONSTRUCTION,
    HNSW_M,
    INDEX_BUILD_MEMORY,
    TOP_K,
    Postgres,
    Row,
    build_request,
    load_average,
    machine,
    median,
    print_rows,
    query_texts,
    result_document,
    write_corpus,
    write_result,
)
from ragops_runtime.embedding import HashingEmbedder
from ragops_runtime.kb.build import build_version
from ragops_runtime.store import KnowledgeStore
from ragops_runtime.store.identifiers import SCHEMA

EDITIONS = (2, 3, 4)


async def per_version_table_seconds(store: KnowledgeStore, chunk_table: str) -> float:
    """COPY-equivalent of every row into a fresh table plus its HNSW index: the alternative's floor."""
    source = sql.Identifier(SCHEMA, chunk_table)
    target = sql.Identifier(SCHEMA, "bench_per_version")
    conn = store.connection
    await conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(target))
    started = time.perf_counter()
    await conn.execute(
        sql.SQL("CREATE TABLE {t} AS SELECT id, document_id, text, embedding FROM {s}").format(t=target, s=source)
    )
    async with conn.transaction():
        await conn.execute(sql.SQL("SET LOCAL maintenance_work_mem = {}").format(sql.Literal(INDEX_BUILD_MEMORY)))
        await conn.execute(
            sql.SQL(
                "CREATE INDEX ON {t} USING hnsw (embedding vector_cosine_ops) WITH (m = {m}, ef_construction = {ef})"
            ).format(t=target, m=sql.Literal(HNSW_M), ef=sql.Literal(HNSW_EF_CONSTRUCTION))
        )
    return time.perf_counter() - started


async def query_latencies(store: KnowledgeStore, version: str, queries: int) -> tuple[float, float]:
    """Median seconds of a top-k query: on the shared table with its membership filter, and on a table alone."""
    record = await store.get_version("bench", version)
    assert record is not None
    embedder = HashingEmbedder(dimensions=DIMENSIONS)
    vectors = [np.asarray(embedder.embed_one(text), dtype=np.float32) for text in query_texts(queries)]
    shared, alone = [], []
    target = sql.Identifier(SCHEMA, "bench_per_version")
    for vector in vectors:
        started = time.perf_counter()
        await store.vector_search(record, vector, TOP_K)
        shared.append(time.perf_counter() - started)
        started = time.perf_counter()
        async with store.connection.transaction():
            await store.connection.execute("SET LOCAL hnsw.ef_search = 40")
            await store.connection.execute(
                sql.SQL("SELECT id FROM {t} ORDER BY embedding <=> %s LIMIT %s").format(t=target), (vector, TOP_K)
            )
        alone.append(time.perf_counter() - started)
    return median(shared), median(alone)


async def measure(pg: Postgres, chunks: int) -> list[Row]:
    documents = max(chunks // CHUNKS_PER_DOCUMENT, 100)
    with pg.database() as dsn:
        async with await KnowledgeStore.connect(dsn) as store:
            corpus = pg.work / "v1.jsonl"
            write_corpus(corpus, documents)
            started = time.perf_counter()
            full = await build_version(store, build_request(corpus, "v1"))
            full_seconds = time.perf_counter() - started
            print(f"full build: {full.manifest['chunks']} chunks in {full_seconds:.1f}s", flush=True)

            seconds, embedded, requests = [], [], []
            for edition in EDITIONS:
                changed = set(range(edition, documents, 100))  # 1 % of the documents, different each time
                corpus = pg.work / f"v{edition}.jsonl"
                write_corpus(corpus, documents, edited=changed, edition=edition)
                started = time.perf_counter()
                report = await build_version(store, build_request(corpus, f"v{edition}"))
                seconds.append(time.perf_counter() - started)
                embedded.append(report.manifest["embeddedChunks"])
                requests.append(report.embedding_requests)
                print(
                    f"1% rebuild v{edition}: {embedded[-1]} chunks embedded in {seconds[-1]:.1f}s",
                    flush=True,
                )

            alternative = await per_version_table_seconds(store, full.record.chunk_table)
            print(f"per-version table (copy + HNSW, no embedding): {alternative:.1f}s", flush=True)
            shared_query, alone_query = await query_latencies(store, f"v{EDITIONS[-1]}", queries=200)

    size = f"{full.manifest['chunks'] // 1000}k chunks"
    full_name = f"{size}: full build, wall"
    query_alone = f"{size}: top-{TOP_K} query, a table of its own (median of 200)"
    repeats = len(EDITIONS)
    return [
        Row(full_name, full_seconds, "s"),
        Row(f"{size}, 1 % of documents changed: new version, wall", median(seconds), "s", full_name, None, repeats),
        Row(f"{size}: full build, texts embedded", full.manifest["embeddedChunks"], "texts"),
        Row(
            f"{size}, 1 % changed: texts embedded",
            median(embedded),
            "texts",
            f"{size}: full build, texts embedded",
            None,
            repeats,
        ),
        Row(f"{size}: full build, embedding requests", full.embedding_requests, "requests"),
        Row(
            f"{size}, 1 % changed: embedding requests",
            median(requests),
            "requests",
            f"{size}: full build, embedding requests",
            None,
            repeats,
        ),
        Row(f"{size}: a table per version instead, copy + HNSW only (no embedding)", alternative, "s", full_name),
        Row(query_alone, alone_query * 1000, "ms", repeats=200),
        Row(
            f"{size}: top-{TOP_K} query, shared table with membership filter (median of 200)",
            shared_query * 1000,
            "ms",
            query_alone,
            None,
            200,
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5 000 chunks; results to a temp directory")
    parser.add_argument("--chunks", type=int, default=None)
    args = parser.parse_args()
    chunks = args.chunks or (5_000 if args.quick else 100_000)
    load_before = load_average()
    started = datetime.now(UTC)
    with Postgres() as pg:
        rows = asyncio.run(measure(pg, chunks))
        document: dict[str, Any] = result_document(
            "kb_incremental", machine(pg.version), rows, started, load=f"{load_before} -> {load_average()}"
        )
    print_rows(document)
    print(f"wrote {write_result(document, quick=args.quick)}")


if __name__ == "__main__":
    main()
