"""Benchmark (issue 17, speed): CPU time per `/v1/query`, this tree against a baseline commit, in the same run.

Wall time on a machine that several sessions share says more about the other sessions than about
the code; the CPU time a query costs does not depend on who else runs. Two real `ragops serve`
processes, retrieval-only on the default hybrid path, serve the same activated version of one
database: one runs this tree's code, the other the baseline's (`--baseline`, default `main`; its
`operator/` and `runtime/` taken with `git archive`, first on the server's PYTHONPATH). For each
pass of distinct six-word questions (top 20, caches off, 1 or 16 clients):

- runtime CPU: the time the `ragops serve` process ran on a CPU (/proc/<pid>/schedstat), per query;
- PostgreSQL CPU: the same for the whole embedded cluster (the postmaster and all its
  children), per query. Only one side runs at a time, so the cluster's time is that side's.

The clients (httpx, in this process) are not counted. Rounds alternate which side goes first;
the table shows medians over rounds and the ratio new / old (below 1: the new code is cheaper).
A further pass scrapes `/metrics` of each side (Prometheus does, every 15 to 30 s per replica)
and reports the CPU per scrape the same way.

    .venv/bin/python -m bench.query_cpu [--quick] [--chunks 100000] [--rounds 3] [--baseline main]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import httpx

from bench.common import (
    CHUNKS_PER_DOCUMENT,
    SERVE_SETTINGS,
    STATIC,
    Postgres,
    Row,
    build_request,
    http_pass,
    load_average,
    machine,
    median,
    print_rows,
    query_texts,
    result_document,
    runtime_processes,
    write_corpus,
    write_result,
)
from ragops_runtime.kb.build import build_version
from ragops_runtime.store import KnowledgeStore

REPOSITORY = Path(__file__).resolve().parent.parent
CONCURRENCY = (1, 16)
SETTINGS = {**SERVE_SETTINGS, "RAGOPS_RETRIEVAL_TIMEOUT_MS": "60000"}
"""A CPU measurement has no latency budget: on a machine loaded by others, a query past the default
2 s would end the run with a 503 (it did, at load 19)."""
NEW = "this tree"
OLD = "baseline"


# ---- CPU time of processes ----------------------------------------------------------------------


def process_cpu_seconds(pid: int) -> float:
    """Time one process has run on a CPU so far, in nanoseconds' precision (/proc/<pid>/schedstat).

    /proc/<pid>/stat's user and system times count in clock ticks (10 ms), coarse for a query.
    """
    with open(f"/proc/{pid}/schedstat") as schedstat:
        return int(schedstat.read().split()[0]) / 1e9


def cluster_cpu_seconds(postmaster: int) -> float:
    """CPU time so far of a PostgreSQL cluster: the postmaster and every process it forked."""
    total = process_cpu_seconds(postmaster)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            if parent == postmaster:
                total += process_cpu_seconds(int(entry.name))
        except (FileNotFoundError, ProcessLookupError):
            continue  # exited since the directory was listed
    return total


def postmaster_pid(pg: Postgres) -> int:
    return int((pg.work / "pgdata" / "postmaster.pid").read_text().split()[0])


@dataclass(frozen=True)
class CpuCost:
    """CPU milliseconds per operation of one pass: the runtime process, PostgreSQL, and the wall time."""

    runtime_ms: float
    postgres_ms: float
    wall_ms: float

    @property
    def total_ms(self) -> float:
        return self.runtime_ms + self.postgres_ms


def measured(runtime_pid: int, postmaster: int, operations: int, run: Callable[[], None]) -> CpuCost:
    runtime_before, postgres_before = process_cpu_seconds(runtime_pid), cluster_cpu_seconds(postmaster)
    started = time.perf_counter()
    run()
    wall = time.perf_counter() - started
    runtime_after, postgres_after = process_cpu_seconds(runtime_pid), cluster_cpu_seconds(postmaster)
    return CpuCost(
        runtime_ms=(runtime_after - runtime_before) * 1000 / operations,
        postgres_ms=(postgres_after - postgres_before) * 1000 / operations,
        wall_ms=wall * 1000 / operations,
    )


# ---- the two sides ------------------------------------------------------------------------------


@contextmanager
def baseline_sources(ref: str) -> Iterator[tuple[str, str]]:
    """The baseline's `operator/` and `runtime/` in a temporary directory: (PYTHONPATH, commit)."""
    commit = subprocess.run(
        ["git", "-C", str(REPOSITORY), "rev-parse", "--verify", f"{ref}^{{commit}}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    directory = Path(tempfile.mkdtemp(prefix="ragops-baseline-"))
    try:
        archive = subprocess.run(
            ["git", "-C", str(REPOSITORY), "archive", commit, "operator", "runtime"], check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(directory)], input=archive, check=True)
        yield os.pathsep.join(str(directory / root) for root in ("operator", "runtime")), commit
    finally:
        shutil.rmtree(directory, ignore_errors=True)


async def prepare(dsn: str, pg: Postgres, chunks: int) -> None:
    corpus = pg.work / "corpus.jsonl"
    write_corpus(corpus, max(chunks // CHUNKS_PER_DOCUMENT, 1))
    started = time.perf_counter()
    async with await KnowledgeStore.connect(dsn) as store:
        await build_version(store, build_request(corpus, "v1", embedding=STATIC))
        await store.activate("bench", "v1", force=True, reason="benchmark")
    print(f"{chunks} chunks built in {time.perf_counter() - started:.1f}s", flush=True)


def ask(url: str, queries: Sequence[str], concurrency: int) -> None:
    asyncio.run(http_pass(url, queries, concurrency))


def scrape(url: str, count: int) -> None:
    with httpx.Client(base_url=url, timeout=30) as client:
        for _ in range(count):
            client.get("/metrics").raise_for_status()


def measure(
    pg: Postgres, chunks: int, rounds: int, queries_per_client: dict[int, int], scrapes: int, baseline: str
) -> tuple[list[Row], str]:
    costs: dict[tuple[str, str, str], list[CpuCost]] = {}
    with ExitStack() as stack:
        dsn = stack.enter_context(pg.database())
        asyncio.run(prepare(dsn, pg, chunks))
        old_path, commit = stack.enter_context(baseline_sources(baseline))
        log = pg.work / "runtime.log"
        (new,) = stack.enter_context(runtime_processes(dsn, 1, SETTINGS, log))
        (old,) = stack.enter_context(runtime_processes(dsn, 1, {**SETTINGS, "PYTHONPATH": old_path}, log))
        sides = {NEW: new, OLD: old}
        postmaster = postmaster_pid(pg)
        for replica in sides.values():
            asyncio.run(http_pass(replica.url, query_texts(30, seed=3), 1))  # warm-up: pool, embedder, plans
        seeds = iter(range(100, 1000))
        for round_number in range(1, rounds + 1):
            order = [NEW, OLD] if round_number % 2 else [OLD, NEW]
            for concurrency in CONCURRENCY:
                queries = query_texts(queries_per_client[concurrency], seed=next(seeds))
                for side in order:
                    replica = sides[side]

                    cost = measured(
                        replica.process.pid, postmaster, len(queries), partial(ask, replica.url, queries, concurrency)
                    )
                    costs.setdefault((side, "query", f"{concurrency}"), []).append(cost)
                    print(
                        f"round {round_number}, {concurrency} client(s), {side}: runtime {cost.runtime_ms:.2f} ms, "
                        f"PostgreSQL {cost.postgres_ms:.2f} ms CPU per query, wall {cost.wall_ms:.2f} ms",
                        flush=True,
                    )
            for side in order:
                replica = sides[side]
                cost = measured(replica.process.pid, postmaster, scrapes, partial(scrape, replica.url, scrapes))
                costs.setdefault((side, "scrape", "1"), []).append(cost)
                print(
                    f"round {round_number}, /metrics, {side}: runtime {cost.runtime_ms:.2f} ms, "
                    f"PostgreSQL {cost.postgres_ms:.2f} ms CPU per scrape",
                    flush=True,
                )
    return rows_of(costs, chunks, rounds, commit), commit


def rows_of(costs: dict[tuple[str, str, str], list[CpuCost]], chunks: int, rounds: int, commit: str) -> list[Row]:
    size = f"{chunks // 1000}k chunks" if chunks % 1000 == 0 else f"{chunks} chunks"
    labels = {OLD: f"baseline {commit[:7]}", NEW: NEW}
    passes = [
        ("query", str(c), f"hybrid /v1/query over {size}, {c} client{'s' if c > 1 else ''}", "query")
        for c in CONCURRENCY
    ]
    passes.append(("scrape", "1", "/metrics", "scrape"))
    metrics = (
        ("runtime_ms", "ragops serve CPU"),
        ("postgres_ms", "PostgreSQL CPU"),
        ("total_ms", "CPU of both"),
        ("wall_ms", "wall time (1 / throughput)"),
    )
    rows: list[Row] = []
    for kind, clients, what, per in passes:
        for attribute, label in metrics:

            def name(side: str, what: str = what, label: str = label, per: str = per) -> str:
                return f"{what}: {label} per {per}, {labels[side]}"

            for side in (OLD, NEW):
                value = median([getattr(cost, attribute) for cost in costs[(side, kind, clients)]])
                rows.append(Row(name(side), value, "ms", None if side == OLD else name(OLD), None, rounds))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5 000 chunks, short passes; results to a temp directory")
    parser.add_argument("--chunks", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--baseline", default="main", help="the commit (or branch) to compare with")
    args = parser.parse_args()
    chunks = args.chunks or (5_000 if args.quick else 100_000)
    rounds = args.rounds or (2 if args.quick else 3)
    queries = {1: 100, 16: 300} if args.quick else {1: 300, 16: 1200}
    scrapes = 50 if args.quick else 200
    load_before = load_average()
    started = datetime.now(UTC)
    with Postgres() as pg:
        rows, commit = measure(pg, chunks, rounds, queries, scrapes, args.baseline)
        document = result_document(
            "query_cpu", machine(pg.version), rows, started, load=f"{load_before} -> {load_average()}"
        )
    document["baseline"] = commit
    print_rows(document)
    print(f"wrote {write_result(document, quick=args.quick)}")


if __name__ == "__main__":
    main()
