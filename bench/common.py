"""What every benchmark shares: the result format, the statistics, the database and the corpus.

The result format (bench/results/<name>.json), also written by benchmarks outside this module:

    {"benchmark": str,
     "machine": {"cpu": str, "cores": int, "memory_gb": float, "python": str, "postgres": str},
     "ran_at": iso8601,
     "rows": [{"measure": str, "value": float, "unit": str, "baseline": str | null,
               "ratio": float | null, "repeats": int}],
     "load": str (optional: the 1-minute load average before and after the run)}

A row's `baseline` names another row of the same result, measured in the same run, and its `ratio`
is value / baseline's value, whatever the unit: below 1 is faster for times and slower for rates.
Values are medians over `repeats`. `--quick` results go to a temporary directory, never to
bench/results, so the README table only ever shows a full run.

The statistics and the result assembly are pure; the database and corpus helpers do I/O.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from ragops_runtime.kb.build import BuildRequest, ChunkingSettings, EmbeddingSettings, IndexSettings
from ragops_runtime.store.embedded import start_embedded

RESULTS_DIR = Path(__file__).parent / "results"
QUICK_RESULTS_DIR = Path(tempfile.gettempdir()) / "ragops-bench-quick"

DIMENSIONS = 384
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 64
INDEX_BUILD_MEMORY = "512MB"  # what ragops' store sets for its own index builds; every side gets the same
TOP_K = 20

# ---- results (pure) ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    measure: str
    value: float
    unit: str
    baseline: str | None = None
    ratio: float | None = None
    repeats: int = 1

    def to_json(self) -> dict[str, Any]:
        return {
            "measure": self.measure,
            "value": self.value,
            "unit": self.unit,
            "baseline": self.baseline,
            "ratio": self.ratio,
            "repeats": self.repeats,
        }


def with_ratios(rows: Sequence[Row]) -> list[Row]:
    """Fills each row's ratio from the row its `baseline` names; an unknown baseline is an error."""
    values = {row.measure: row.value for row in rows}
    filled = []
    for row in rows:
        if row.baseline is None:
            filled.append(row)
            continue
        if row.baseline not in values:
            raise ValueError(f"row {row.measure!r} names baseline {row.baseline!r}, which is not a row of this result")
        base = values[row.baseline]
        ratio = row.value / base if base else None
        filled.append(Row(row.measure, row.value, row.unit, row.baseline, ratio, row.repeats))
    return filled


def result_document(
    benchmark: str, machine: dict[str, Any], rows: Sequence[Row], ran_at: datetime, load: str | None = None
) -> dict[str, Any]:
    document: dict[str, Any] = {
        "benchmark": benchmark,
        "machine": machine,
        "ran_at": ran_at.isoformat(timespec="seconds"),
        "rows": [row.to_json() for row in with_ratios(rows)],
    }
    if load is not None:
        document["load"] = load
    return document


def median(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("median of nothing")
    return float(statistics.median(values))


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear between closest ranks (numpy's default method)."""
    if not values:
        raise ValueError("percentile of nothing")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True)
class LatencySummary:
    p50_ms: float
    p95_ms: float
    qps: float


def summarize(latencies_seconds: Sequence[float], wall_seconds: float) -> LatencySummary:
    """p50/p95 of per-request latencies and the throughput of the whole pass."""
    return LatencySummary(
        p50_ms=percentile(latencies_seconds, 50) * 1000,
        p95_ms=percentile(latencies_seconds, 95) * 1000,
        qps=len(latencies_seconds) / wall_seconds,
    )


def median_summary(summaries: Sequence[LatencySummary]) -> LatencySummary:
    return LatencySummary(
        p50_ms=median([s.p50_ms for s in summaries]),
        p95_ms=median([s.p95_ms for s in summaries]),
        qps=median([s.qps for s in summaries]),
    )


# ---- the machine and the output ------------------------------------------------------------------


def machine(postgres: str) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    memory_gb = 0.0
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                memory_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
                break
    return {
        "cpu": cpu,
        "cores": os.cpu_count() or 1,
        "memory_gb": memory_gb,
        "python": platform.python_version(),
        "postgres": postgres,
    }


def load_average() -> str:
    return f"{os.getloadavg()[0]:.2f}"


def write_result(document: dict[str, Any], *, quick: bool) -> Path:
    directory = QUICK_RESULTS_DIR if quick else RESULTS_DIR
    directory.mkdir(parents=True, exist_ok=True)
    out = directory / f"{document['benchmark']}.json"
    out.write_text(json.dumps(document, indent=2) + "\n")
    return out


def print_rows(document: dict[str, Any]) -> None:
    print(f"\n{document['benchmark']} ({document['machine']['cpu']}, load {document.get('load', '?')})")
    for row in document["rows"]:
        ratio = f"  x{row['ratio']:.3g} of {row['baseline']}" if row["ratio"] is not None else ""
        print(f"  {row['measure']}: {row['value']:,.4g} {row['unit']}{ratio}")


# ---- the database --------------------------------------------------------------------------------


class Postgres:
    """One embedded PostgreSQL + pgvector for a benchmark run; a fresh database per measurement."""

    def __init__(self) -> None:
        self._work = Path(tempfile.mkdtemp(prefix="ragops-bench-"))
        # As root, pgserver runs the server as a user of its own, which must reach the directory.
        self._work.chmod(0o755)
        self._server = start_embedded(self._work)
        self.admin_dsn: str = self._server.get_uri()
        with psycopg.connect(self.admin_dsn, autocommit=True) as admin:
            server = admin.execute("SELECT current_setting('server_version')").fetchone()
            vector = admin.execute(
                "SELECT default_version FROM pg_available_extensions WHERE name = 'vector'"
            ).fetchone()
        self.version = f"PostgreSQL {server[0] if server else '?'} + pgvector {vector[0] if vector else '?'} (embedded)"

    @property
    def work(self) -> Path:
        return self._work

    @contextmanager
    def database(self, prefix: str = "bench") -> Iterator[str]:
        """A new empty database on the server (its DSN), dropped afterwards."""
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(self.admin_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield make_conninfo(self.admin_dsn, dbname=name)
        finally:
            with psycopg.connect(self.admin_dsn, autocommit=True) as admin:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def close(self) -> None:
        self._server.cleanup()
        shutil.rmtree(self._work, ignore_errors=True)

    def __enter__(self) -> Postgres:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def create_hnsw_index(
    connection: psycopg.Connection[Any], table: str, opclass: str, *, memory: str = INDEX_BUILD_MEMORY
) -> None:
    """ragops' HNSW index (m, ef_construction) on `table.embedding`, built with `memory` of maintenance_work_mem."""
    with connection.transaction():
        connection.execute(sql.SQL("SET LOCAL maintenance_work_mem = {}").format(sql.Literal(memory)))
        connection.execute(
            sql.SQL(
                "CREATE INDEX {name} ON {table} USING hnsw (embedding {ops}) WITH (m = {m}, ef_construction = {ef})"
            ).format(
                name=sql.Identifier(f"{table}_hnsw"),
                table=sql.Identifier(table),
                ops=sql.SQL(opclass),
                m=sql.Literal(HNSW_M),
                ef=sql.Literal(HNSW_EF_CONSTRUCTION),
            )
        )


# ---- the corpus ----------------------------------------------------------------------------------

CHUNKS_PER_DOCUMENT = 10
CHUNK_SIZE = 128  # tokens; each generated section fits one chunk
WORDS = (
    "cluster replica backup restore index vector query latency shard storage tenant region quota policy "
    "rollout canary gateway token budget metric alert dashboard incident runbook pager schedule upgrade "
    "version archive retention snapshot network ingress service secret config volume node pod"
).split()


def write_corpus(path: Path, documents: int, *, edited: set[int] | None = None, edition: int = 1) -> None:
    """JSONL records of CHUNKS_PER_DOCUMENT sections, each one chunk; `edited` documents get a changed last section."""
    edited = edited or set()
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


HASHING = EmbeddingSettings(provider="hashing", model="hashing-v1", dimensions=DIMENSIONS, batch_size=256)
STATIC = EmbeddingSettings(batch_size=256)
"""The default embedder (static, 256 dimensions), what the retrieval benchmark measures."""


def build_request(
    corpus: Path, version: str, *, knowledge_base: str = "bench", embedding: EmbeddingSettings = HASHING
) -> BuildRequest:
    return BuildRequest(
        knowledge_base=knowledge_base,
        version=version,
        sources=(str(corpus),),
        chunking=ChunkingSettings(strategy="recursive", size=CHUNK_SIZE, overlap=0),
        embedding=embedding,
        index=IndexSettings(distance="cosine", m=HNSW_M, ef_construction=HNSW_EF_CONSTRUCTION),
    )


def query_texts(count: int, *, seed: int = 11) -> list[str]:
    """`count` distinct six-word questions over the corpus vocabulary (distinct: no cache can answer)."""
    rng = np.random.default_rng(seed)
    seen: dict[str, None] = {}
    while len(seen) < count:
        seen.setdefault(" ".join(rng.choice(WORDS, size=6)), None)
    return list(seen)


# ---- runtime replicas ----------------------------------------------------------------------------

POOL = 16
SERVE_SETTINGS = {
    "RAGOPS_TOP_K": str(TOP_K),
    "RAGOPS_RERANK_TOP_K": str(TOP_K),
    "RAGOPS_CACHE_TTL_SECONDS": "0",
    "RAGOPS_QUERY_EMBEDDING_CACHE_SIZE": "0",
    "RAGOPS_REQUESTS_PER_MINUTE_PER_CLIENT": "1000000",
    "RAGOPS_POOL_SIZE": str(POOL),
}
"""A retrieval-only `ragops serve` for speed runs: every query distinct and answered in full, caches off."""


async def http_pass(url: str, queries: Sequence[str], concurrency: int) -> LatencySummary:
    """Each of `queries` once through `/v1/query` of a retrieval-only runtime, from `concurrency` clients."""
    latencies: list[float] = []
    pending = iter(queries)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:

        async def client_loop(number: int) -> None:
            for query in pending:
                started = time.perf_counter()
                response = await client.post(
                    "/v1/query", json={"query": query, "topK": TOP_K}, headers={"X-Client-Id": f"bench-{number}"}
                )
                latencies.append(time.perf_counter() - started)
                if response.status_code != 200:
                    raise RuntimeError(f"{url}/v1/query answered {response.status_code}: {response.text[:300]}")
                body = response.json()
                if body["mode"] != "retrieval_only" or len(body["citations"]) != TOP_K:
                    raise RuntimeError(f"unexpected answer: mode {body['mode']}, {len(body['citations'])} citations")

        started = time.perf_counter()
        await asyncio.gather(*(client_loop(number) for number in range(concurrency)))
        return summarize(latencies, time.perf_counter() - started)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@dataclass(frozen=True)
class Replica:
    """One `ragops serve` process and the URL it answers on."""

    url: str
    process: subprocess.Popen[bytes]


@contextmanager
def runtime_replicas(dsn: str, count: int, settings: dict[str, str], log_path: Path) -> Iterator[list[str]]:
    """`count` real `ragops serve` processes on `dsn` (knowledge base "bench", retrieval-only); their URLs.

    Yields once every replica's /readyz answers 200; stops them (SIGTERM, then SIGKILL) afterwards.
    """
    with runtime_processes(dsn, count, settings, log_path) as replicas:
        yield [replica.url for replica in replicas]


@contextmanager
def runtime_processes(dsn: str, count: int, settings: dict[str, str], log_path: Path) -> Iterator[list[Replica]]:
    """As `runtime_replicas`, with each replica's process (a test may kill one)."""
    ragops = Path(sys.executable).parent / "ragops"
    env = {key: value for key, value in os.environ.items() if not key.startswith("RAGOPS_")}
    env.update(
        {
            "RAGOPS_DSN": dsn,
            "RAGOPS_HOST": "127.0.0.1",
            "RAGOPS_KNOWLEDGE_BASE": "bench",
            "RAGOPS_GENERATION_PROVIDER": "none",
            **settings,
        }
    )
    ports = [free_port() for _ in range(count)]
    processes: list[subprocess.Popen[bytes]] = []
    with log_path.open("ab") as log:
        try:
            for number, port in enumerate(ports):
                processes.append(
                    subprocess.Popen(
                        [str(ragops), "serve", "--port", str(port)],
                        env={**env, "RAGOPS_POD": f"bench-{number}"},
                        stdout=log,
                        stderr=log,
                    )
                )
            urls = [f"http://127.0.0.1:{port}" for port in ports]
            deadline = time.monotonic() + 120
            for process, url in zip(processes, urls, strict=True):
                while True:
                    if process.poll() is not None:
                        raise RuntimeError(f"ragops serve exited with {process.returncode}; see {log_path}")
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"ragops serve at {url} was not ready in 120 s; see {log_path}")
                    try:
                        if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    time.sleep(0.1)
            yield [Replica(url, process) for url, process in zip(urls, processes, strict=True)]
        finally:
            for process in processes:
                if process.poll() is None:
                    process.terminate()
            for process in processes:
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
