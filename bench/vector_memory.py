"""Benchmark (issue 18, item 6): bytes per million vectors, `vector` against `halfvec`, and what half precision costs.

For N vectors (1M by default) of D dimensions (256, the default static model's), each storage type
in a fresh database on the embedded PostgreSQL + pgvector:

- the table: `id bigint, embedding vector(D)` or `halfvec(D)`, loaded by binary COPY;
  `pg_total_relation_size` (heap, TOAST, free space and visibility maps);
- the HNSW index (m 16, ef_construction 64, cosine: ragops' defaults), `pg_relation_size`, and
  the seconds it took to build (maintenance_work_mem large enough for the graph, so both types
  build in memory: the comparison is of storage, not of spilling);
- recall@10 of 200 held-out queries against the exact top 10 (float32, numpy) at ef_search 40,
  what the runtime sets for top 20, and single-connection query latency p50/p95.

The vectors are a mixture of 2,000 Gaussian clusters on the unit sphere: real embeddings cluster,
and uniformly random vectors, HNSW's worst case, resemble no corpus. Sizes do not depend on the
distribution; recall does, and is measured here on these clusters only, not on real text.
The ratios of halfvec against vector are measured in the same run.

    .venv/bin/python -m bench.vector_memory [--quick] [--vectors 1000000] [--dimensions 256]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import psycopg
from pgvector import HalfVector, Vector  # type: ignore[import-untyped,unused-ignore]
from pgvector.psycopg import register_vector  # type: ignore[import-untyped,unused-ignore]
from psycopg import sql

from bench.common import (
    Postgres,
    Row,
    create_hnsw_index,
    load_average,
    machine,
    percentile,
    print_rows,
    result_document,
    write_result,
)

TYPES = ("vector", "halfvec")
CLUSTERS = 2_000
QUERIES = 200
K = 10
EF_SEARCH = 40
BUILD_MEMORY = "4GB"
LOAD_BATCH = 50_000


def clustered_vectors(count: int, dimensions: int, *, seed: int) -> np.ndarray:
    """`count` unit vectors around CLUSTERS random centres (noise comparable to the spread of a topic)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((CLUSTERS, dimensions)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.empty((count, dimensions), dtype=np.float32)
    for start in range(0, count, LOAD_BATCH):
        stop = min(start + LOAD_BATCH, count)
        picked = centres[rng.integers(0, CLUSTERS, stop - start)]
        noise = rng.standard_normal((stop - start, dimensions)).astype(np.float32) * (0.6 / np.sqrt(dimensions))
        block = picked + noise
        out[start:stop] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def exact_top_k(vectors: np.ndarray, queries: np.ndarray, k: int) -> list[set[int]]:
    """Ids (row numbers) of each query's k nearest by cosine, over float32."""
    best = np.full((len(queries), k), -np.inf, dtype=np.float32)
    ids = np.zeros((len(queries), k), dtype=np.int64)
    for start in range(0, len(vectors), LOAD_BATCH):
        scores = queries @ vectors[start : start + LOAD_BATCH].T
        merged = np.concatenate([best, scores], axis=1)
        merged_ids = np.concatenate(
            [ids, np.broadcast_to(np.arange(start, start + scores.shape[1]), scores.shape)], axis=1
        )
        order = np.argsort(-merged, axis=1)[:, :k]
        best = np.take_along_axis(merged, order, axis=1)
        ids = np.take_along_axis(merged_ids, order, axis=1)
    return [set(row.tolist()) for row in ids]


@dataclass(frozen=True)
class Measured:
    table_bytes: int
    index_bytes: int
    build_seconds: float
    recall: float
    latencies: list[float]


def batches(vectors: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    for start in range(0, len(vectors), LOAD_BATCH):
        yield start, vectors[start : start + LOAD_BATCH]


def measure(dsn: str, kind: str, vectors: np.ndarray, queries: np.ndarray, truth: list[set[int]]) -> Measured:
    dimensions = vectors.shape[1]
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute("CREATE EXTENSION IF NOT EXISTS vector")
        register_vector(connection)
        column = sql.SQL("{}({})").format(sql.SQL(kind), sql.Literal(dimensions))
        connection.execute(sql.SQL("CREATE TABLE items (id bigint NOT NULL, embedding {} NOT NULL)").format(column))
        wrap = Vector if kind == "vector" else HalfVector
        with connection.cursor() as cursor:
            for start, block in batches(vectors):
                with cursor.copy("COPY items (id, embedding) FROM STDIN (FORMAT BINARY)") as copy:
                    copy.set_types(["int8", kind])
                    for offset, vector in enumerate(block):
                        copy.write_row((start + offset, wrap(vector)))
        connection.execute("VACUUM ANALYZE items")
        started = time.perf_counter()
        create_hnsw_index(connection, "items", f"{kind}_cosine_ops", memory=BUILD_MEMORY)
        build_seconds = time.perf_counter() - started
        sizes = connection.execute(
            "SELECT pg_total_relation_size('items'::regclass) - pg_indexes_size('items'::regclass), "
            "pg_relation_size('items_hnsw'::regclass)"
        ).fetchone()
        assert sizes is not None
        connection.execute(sql.SQL("SET hnsw.ef_search = {}").format(sql.Literal(EF_SEARCH)))
        query = sql.SQL("SELECT id FROM items ORDER BY embedding <=> %s LIMIT %s")
        hits = 0
        latencies = []
        for vector, expected in zip(queries, truth, strict=True):
            begun = time.perf_counter()
            found = {row[0] for row in connection.execute(query, (wrap(vector), K)).fetchall()}
            latencies.append(time.perf_counter() - begun)
            hits += len(found & expected)
    return Measured(int(sizes[0]), int(sizes[1]), build_seconds, hits / (K * len(queries)), latencies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="50 000 vectors; results to a temp directory")
    parser.add_argument("--vectors", type=int, default=None)
    parser.add_argument("--dimensions", type=int, default=256)
    args = parser.parse_args()
    count = args.vectors or (50_000 if args.quick else 1_000_000)
    dimensions = args.dimensions
    load_before = load_average()
    ran_at = datetime.now(UTC)
    everything = clustered_vectors(count + QUERIES, dimensions, seed=5)
    vectors, queries = everything[:count], everything[count:]
    truth = exact_top_k(vectors, queries, K)
    label = f"{count / 1e6:g}M" if count >= 1_000_000 else f"{count // 1000}k"
    prefix = f"{label} x {dimensions}-d"
    measured: dict[str, Measured] = {}
    with Postgres() as pg:
        for kind in TYPES:
            with pg.database() as dsn:
                measured[kind] = measure(dsn, kind, vectors, queries, truth)
            m = measured[kind]
            print(
                f"{kind}: table {m.table_bytes / 2**20:.0f} MiB, index {m.index_bytes / 2**20:.0f} MiB, "
                f"build {m.build_seconds:.0f}s, recall@{K} {m.recall:.3f}",
                flush=True,
            )
        document_machine = machine(pg.version)
    per_million = 1_000_000 / count
    rows: list[Row] = []
    for kind in TYPES:
        m = measured[kind]
        for what, value, unit, repeats in (
            ("table MiB per million vectors", m.table_bytes / 2**20 * per_million, "MiB", 1),
            ("HNSW index MiB per million vectors", m.index_bytes / 2**20 * per_million, "MiB", 1),
            ("table + index MiB per million vectors", (m.table_bytes + m.index_bytes) / 2**20 * per_million, "MiB", 1),
            ("HNSW build", m.build_seconds, "s", 1),
            (f"recall@{K} at ef_search {EF_SEARCH}", m.recall, "", 1),
            ("query p50", percentile(m.latencies, 50) * 1000, "ms", QUERIES),
            ("query p95", percentile(m.latencies, 95) * 1000, "ms", QUERIES),
        ):
            baseline = None if kind == "vector" else f"{prefix}: vector {what}"
            rows.append(Row(f"{prefix}: {kind} {what}", value, unit, baseline=baseline, repeats=repeats))
    document = result_document(
        "vector_memory", document_machine, rows, ran_at, load=f"{load_before} -> {load_average()}"
    )
    print_rows(document)
    print(f"wrote {write_result(document, quick=args.quick)}")


if __name__ == "__main__":
    main()
