"""Benchmark (issues 7 and 17): retrieval latency p50/p95 and queries/s at 1 and 16 clients over 100k chunks.

One database holds both sides: ragops' version (built by `build_version` with the default static
embedder, activated) and the peer's collection (the same chunk texts through `PGVector.add_texts`,
embedded by the same static embedder, plus the same HNSW index by hand; see bench/peers.py). Every
query is a distinct six-word question, top 20. The sides:

- langchain-postgres `similarity_search(text, k=20)` in-process, from 1 or 16 threads sharing a
  SQLAlchemy pool of 16 connections: the baseline of every ragops row (vector search only: the peer
  has no hybrid search);
- ragops' retrieval function in-process: query embedding + `retrieve(...)`, vector only and hybrid
  (vector + BM25, fused by RRF in one statement, the default), from 1 or 16 asyncio tasks on a pool
  of 16 configured as the runtime's;
- ragops `/v1/query` over HTTP (httpx, 1 or 16 concurrent clients) from a real `ragops serve`,
  retrieval-only (generation provider none), answer and query-vector caches off, returning all
  20 passages, pool of 16: vector only (`RAGOPS_HYBRID=false`, the peer's equivalent) and the
  default hybrid. The HTTP path includes what the product does per query besides retrieval:
  validation, rate limiting, metrics and the answer-log INSERT.

The synthetic corpus draws 40 words per chunk from a 45-word vocabulary, so every query word is in
most chunks: the worst case for the lexical half, whose cost is bounded per query term (the 400
postings of highest BM25 weight), not by how many chunks hold the word.

The client and the server share the machine's cores. Each pass is repeated (rounds interleave the
sides) and the table shows the median of the passes' p50, p95 and queries/s.

    .venv/bin/python -m bench.retrieval [--quick] [--chunks 100000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import numpy as np
from langchain_postgres import PGVector  # type: ignore[import-not-found,unused-ignore]
from psycopg_pool import AsyncConnectionPool

from bench import peers
from bench.common import (
    CHUNKS_PER_DOCUMENT,
    POOL,
    SERVE_SETTINGS,
    STATIC,
    TOP_K,
    LatencySummary,
    Postgres,
    Row,
    http_pass,
    load_average,
    machine,
    median_summary,
    print_rows,
    query_texts,
    result_document,
    runtime_replicas,
    summarize,
    write_corpus,
    write_result,
)
from bench.kb_build import ragops_build
from ragops_runtime.embedding import StaticEmbedder
from ragops_runtime.replica import configure_connection
from ragops_runtime.retrieval.hybrid import retrieve
from ragops_runtime.store import KnowledgeStore, VersionRecord

CONCURRENCY = (1, 16)
PEER = "langchain-postgres similarity_search (HNSW by hand)"
FUNCTION = "ragops retrieve() in-process, vector only"
FUNCTION_HYBRID = "ragops retrieve() in-process, hybrid (default)"
HTTP_VECTOR = "ragops /v1/query retrieval-only, vector only"
HTTP_HYBRID = "ragops /v1/query retrieval-only, hybrid (default)"


async def function_pass(
    pool: AsyncConnectionPool[Any], record: VersionRecord, queries: Sequence[str], concurrency: int, *, hybrid: bool
) -> LatencySummary:
    embedder = StaticEmbedder()
    latencies: list[float] = []
    pending = iter(queries)

    async def client_loop() -> None:
        for query in pending:
            started = time.perf_counter()
            vector = np.asarray(embedder.embed_one(query), dtype=np.float32)
            async with pool.connection() as connection:
                chunks = await retrieve(KnowledgeStore(connection), record, vector, query, top_k=TOP_K, hybrid=hybrid)
            latencies.append(time.perf_counter() - started)
            if len(chunks) != TOP_K:
                raise RuntimeError(f"retrieve returned {len(chunks)} chunks")

    started = time.perf_counter()
    await asyncio.gather(*(client_loop() for _ in range(concurrency)))
    return summarize(latencies, time.perf_counter() - started)


def peer_pass(store: PGVector, queries: Sequence[str], concurrency: int) -> LatencySummary:
    def one(query: str) -> float:
        started = time.perf_counter()
        documents = store.similarity_search(query, k=TOP_K)
        elapsed = time.perf_counter() - started
        if len(documents) != TOP_K:
            raise RuntimeError(f"similarity_search returned {len(documents)} documents")
        return elapsed

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as executor:
        latencies = list(executor.map(one, queries))
    return summarize(latencies, time.perf_counter() - started)


async def prepare(dsn: str, pg: Postgres, chunks: int) -> VersionRecord:
    corpus = pg.work / "corpus.jsonl"
    write_corpus(corpus, max(chunks // CHUNKS_PER_DOCUMENT, 1))
    seconds, stored = await ragops_build(dsn, corpus, STATIC)
    print(f"ragops: {len(stored.texts)} chunks built in {seconds:.1f}s", flush=True)
    async with await KnowledgeStore.connect(dsn) as store:
        await store.activate("bench", "v1", force=True, reason="benchmark")
        record = await store.get_version("bench", "v1")
    assert record is not None
    started = time.perf_counter()
    connection = peers.engine(dsn)
    peer = peers.open_store(connection, peers.StaticEmbeddings())
    await asyncio.to_thread(peers.add_all, peer, stored.texts, stored.metadatas)
    connection.dispose()
    await asyncio.to_thread(peers.create_hnsw_index, dsn)
    print(f"peer: same chunks added and indexed in {time.perf_counter() - started:.1f}s", flush=True)
    return record


def measure(pg: Postgres, chunks: int, rounds: int, queries_per_client: dict[int, int]) -> list[Row]:
    results: dict[tuple[str, int], list[LatencySummary]] = {}
    with pg.database() as dsn:
        record = asyncio.run(prepare(dsn, pg, chunks))
        peer_engine = peers.engine(dsn, pool_size=POOL)
        peer = peers.open_store(peer_engine, peers.StaticEmbeddings())
        log = pg.work / "runtime.log"
        vector_settings = {**SERVE_SETTINGS, "RAGOPS_HYBRID": "false"}
        hybrid_settings = {**SERVE_SETTINGS, "RAGOPS_HYBRID": "true"}
        with (
            runtime_replicas(dsn, 1, vector_settings, log) as (vector_url,),
            runtime_replicas(dsn, 1, hybrid_settings, log) as (hybrid_url,),
        ):

            async def in_process(queries: Sequence[str], concurrency: int, hybrid: bool) -> LatencySummary:
                pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
                    dsn, min_size=POOL, max_size=POOL, configure=configure_connection, kwargs={"autocommit": True}
                )
                async with pool:
                    await pool.wait()
                    return await function_pass(pool, record, queries, concurrency, hybrid=hybrid)

            sides: dict[str, Callable[[Sequence[str], int], LatencySummary]] = {
                PEER: lambda queries, concurrency: peer_pass(peer, queries, concurrency),
                FUNCTION: lambda queries, concurrency: asyncio.run(in_process(queries, concurrency, False)),
                FUNCTION_HYBRID: lambda queries, concurrency: asyncio.run(in_process(queries, concurrency, True)),
                HTTP_VECTOR: lambda queries, concurrency: asyncio.run(http_pass(vector_url, queries, concurrency)),
                HTTP_HYBRID: lambda queries, concurrency: asyncio.run(http_pass(hybrid_url, queries, concurrency)),
            }
            warm_up = query_texts(30, seed=3)
            for run in sides.values():
                run(warm_up, 1)
            seeds = itertools.count(100)
            for round_number in range(1, rounds + 1):
                for concurrency in CONCURRENCY:
                    queries = query_texts(queries_per_client[concurrency], seed=next(seeds))
                    for name, run in sides.items():
                        summary = run(queries, concurrency)
                        results.setdefault((name, concurrency), []).append(summary)
                        print(
                            f"round {round_number}, {concurrency} client(s), {name}: p50 {summary.p50_ms:.2f} ms, "
                            f"p95 {summary.p95_ms:.2f} ms, {summary.qps:.0f} q/s",
                            flush=True,
                        )
        peer_engine.dispose()

    size = f"{chunks // 1000}k chunks" if chunks % 1000 == 0 else f"{chunks} chunks"
    rows: list[Row] = []
    for concurrency in CONCURRENCY:
        clients = f"{concurrency} client" + ("s" if concurrency > 1 else "")
        for name in (PEER, FUNCTION, FUNCTION_HYBRID, HTTP_VECTOR, HTTP_HYBRID):
            if (name, concurrency) not in results:
                continue
            summary = median_summary(results[(name, concurrency)])
            for metric, value, unit in (
                ("p50", summary.p50_ms, "ms"),
                ("p95", summary.p95_ms, "ms"),
                ("throughput", summary.qps, "queries/s"),
            ):
                baseline = None if name == PEER else f"top-{TOP_K} over {size}, {clients}: {PEER}, {metric}"
                rows.append(
                    Row(f"top-{TOP_K} over {size}, {clients}: {name}, {metric}", value, unit, baseline, None, rounds)
                )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5 000 chunks, short passes; results to a temp directory")
    parser.add_argument("--chunks", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    args = parser.parse_args()
    chunks = args.chunks or (5_000 if args.quick else 100_000)
    rounds = args.rounds or (2 if args.quick else 3)
    queries = {1: 60, 16: 240} if args.quick else {1: 300, 16: 1200}
    load_before = load_average()
    started = datetime.now(UTC)
    with Postgres() as pg:
        rows = measure(pg, chunks, rounds, queries)
        document = result_document(
            "retrieval", machine(pg.version), rows, started, load=f"{load_before} -> {load_average()}"
        )
    print_rows(document)
    print(f"wrote {write_result(document, quick=args.quick)}")


if __name__ == "__main__":
    main()
