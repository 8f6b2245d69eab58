"""Benchmark: what a new knowledge-base version costs when 1 % of its documents changed.

Measured in one run on the embedded PostgreSQL + pgvector, with the built-in hashing embedder:

- full: a first build of the whole corpus (ingest, chunk, embed, COPY, HNSW + GIN index, manifest);
- incremental: a new version with 1 % of the documents edited, on ragops' shared chunk table
  (median of three, each editing a different 1 %);
- per-version table: the alternative layout's floor, i.e. copying every row (embeddings already
  computed, so no embedding cost at all) into a fresh table and building its HNSW index, which
  is what a table per version must do for every version.

It also times filtered retrieval on the shared table (the membership filter) against the same
query on the per-version table (no filter). Ratios are against the full build of this run.
Writes bench/results/kb_incremental.json and prints a table.

    .venv/bin/python bench/kb_incremental.py [--chunks 100000] [--dimensions 384]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from psycopg import sql

from ragops_runtime.embedding import HashingEmbedder
from ragops_runtime.kb.build import BuildRequest, ChunkingSettings, EmbeddingSettings, build_version
from ragops_runtime.store import KnowledgeStore
from ragops_runtime.store.embedded import start_embedded
from ragops_runtime.store.identifiers import SCHEMA

CHUNKS_PER_DOCUMENT = 10
WORDS = (
    "cluster replica backup restore index vector query latency shard storage tenant region quota policy "
    "rollout canary gateway token budget metric alert dashboard incident runbook pager schedule upgrade "
    "version archive retention snapshot network ingress service secret config volume node pod"
).split()


def write_corpus(path: Path, documents: int, *, edited: set[int], edition: int) -> None:
    """JSONL records whose sections each make one chunk at the benchmark's chunk size."""
    rng = np.random.default_rng(7)
    with path.open("w") as out:
        for number in range(documents):
            sections = []
            for section in range(CHUNKS_PER_DOCUMENT):
                words = rng.choice(WORDS, size=40)
                sections.append(f"## Part {section}\n\nDocument {number} part {section}: " + " ".join(words) + ".")
            if number in edited:
                sections[-1] += f" Revised in edition {edition} for document {number}."
            text = f"# Document {number}\n\n" + "\n\n".join(sections)
            out.write(json.dumps({"id": f"doc-{number:06d}", "text": text}) + "\n")


def request(corpus: Path, version: str, dimensions: int) -> BuildRequest:
    return BuildRequest(
        knowledge_base="bench",
        version=version,
        sources=(str(corpus),),
        chunking=ChunkingSettings(strategy="recursive", size=128, overlap=0),
        embedding=EmbeddingSettings(provider="hashing", model="hashing-v1", dimensions=dimensions, batch_size=256),
    )


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
        await conn.execute("SET LOCAL maintenance_work_mem = '512MB'")
        await conn.execute(
            sql.SQL(
                "CREATE INDEX ON {t} USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)"
            ).format(t=target)
        )
    return time.perf_counter() - started


async def query_latencies(store: KnowledgeStore, version: str, dimensions: int, queries: int) -> dict[str, float]:
    record = await store.get_version("bench", version)
    assert record is not None
    embedder = HashingEmbedder(dimensions=dimensions)
    rng = np.random.default_rng(11)
    texts = [" ".join(rng.choice(WORDS, size=6)) for _ in range(queries)]
    vectors = [np.asarray(embedder.embed_one(text), dtype=np.float32) for text in texts]
    shared, alone = [], []
    target = sql.Identifier(SCHEMA, "bench_per_version")
    for vector in vectors:
        started = time.perf_counter()
        await store.vector_search(record, vector, 20)
        shared.append(time.perf_counter() - started)
        started = time.perf_counter()
        async with store.connection.transaction():
            await store.connection.execute("SET LOCAL hnsw.ef_search = 40")
            await store.connection.execute(
                sql.SQL("SELECT id FROM {t} ORDER BY embedding <=> %s LIMIT 20").format(t=target), (vector,)
            )
        alone.append(time.perf_counter() - started)
    return {
        "sharedTableMedianMs": statistics.median(shared) * 1000,
        "perVersionTableMedianMs": statistics.median(alone) * 1000,
    }


async def run(chunks: int, dimensions: int) -> dict[str, Any]:
    documents = max(chunks // CHUNKS_PER_DOCUMENT, 100)
    work = Path(tempfile.mkdtemp(prefix="ragops-bench-"))
    work.chmod(0o755)  # noqa: ASYNC240 - one-time set-up before any concurrent work
    server = start_embedded(work)
    try:
        async with await KnowledgeStore.connect(server.get_uri()) as store:
            corpus = work / "v1.jsonl"
            write_corpus(corpus, documents, edited=set(), edition=1)
            started = time.perf_counter()
            full = await build_version(store, request(corpus, "v1", dimensions))
            full_seconds = time.perf_counter() - started
            print(f"full build: {full.manifest['chunks']} chunks in {full_seconds:.1f}s", flush=True)

            incremental = []
            for edition in (2, 3, 4):
                changed = set(range(edition, documents, 100))  # 1 % of the documents, different each time
                corpus = work / f"v{edition}.jsonl"
                write_corpus(corpus, documents, edited=changed, edition=edition)
                started = time.perf_counter()
                report = await build_version(store, request(corpus, f"v{edition}", dimensions))
                seconds = time.perf_counter() - started
                incremental.append(
                    {
                        "seconds": seconds,
                        "embeddedChunks": report.manifest["embeddedChunks"],
                        "embeddingRequests": report.embedding_requests,
                        "changedDocuments": len(changed),
                    }
                )
                print(
                    f"1% rebuild v{edition}: {report.manifest['embeddedChunks']} chunks embedded in {seconds:.1f}s",
                    flush=True,
                )

            alternative = await per_version_table_seconds(store, full.record.chunk_table)
            print(f"per-version table (copy + HNSW, no embedding): {alternative:.1f}s", flush=True)
            latencies = await query_latencies(store, "v4", dimensions, queries=200)
    finally:
        server.cleanup()
        shutil.rmtree(work, ignore_errors=True)

    median_seconds = statistics.median(i["seconds"] for i in incremental)
    median_embedded = statistics.median(i["embeddedChunks"] for i in incremental)
    return {
        "benchmark": "kb_incremental",
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": __import__("os").cpu_count(),
        },
        "chunks": full.manifest["chunks"],
        "documents": documents,
        "dimensions": dimensions,
        "fullBuildSeconds": full_seconds,
        "fullEmbeddedChunks": full.manifest["embeddedChunks"],
        "incremental": incremental,
        "incrementalMedianSeconds": median_seconds,
        "perVersionTableSeconds": alternative,
        "ratios": {
            "incrementalEmbeddingsVsFull": median_embedded / full.manifest["embeddedChunks"],
            "incrementalWallVsFull": median_seconds / full_seconds,
            "perVersionTableWallVsFull": alternative / full_seconds,
        },
        "retrieval": latencies,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--dimensions", type=int, default=384)
    args = parser.parse_args()
    result = asyncio.run(run(args.chunks, args.dimensions))
    out = Path(__file__).parent / "results" / "kb_incremental.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    ratios = result["ratios"]
    print()
    print(f"| {result['chunks']} chunks, {args.dimensions} dims | seconds | ratio to full build |")
    print("|---|---|---|")
    print(f"| full build | {result['fullBuildSeconds']:.1f} | 1.00 |")
    print(
        f"| 1 % changed, shared table (median of 3) | {result['incrementalMedianSeconds']:.1f} | "
        f"{ratios['incrementalWallVsFull']:.3f} (embeddings {ratios['incrementalEmbeddingsVsFull']:.4f}) |"
    )
    print(
        f"| per-version table floor (copy + HNSW) | {result['perVersionTableSeconds']:.1f} | "
        f"{ratios['perVersionTableWallVsFull']:.3f} |"
    )
    lat = result["retrieval"]
    print(f"| top-20 query, shared table with membership filter | {lat['sharedTableMedianMs']:.2f} ms median | |")
    print(f"| top-20 query, per-version table | {lat['perVersionTableMedianMs']:.2f} ms median | |")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
