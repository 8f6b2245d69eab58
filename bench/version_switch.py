"""Benchmark (issue 7, item 4): time from `ragops kb activate` until every runtime replica answers from it.

Three real `ragops serve` processes (product defaults: LISTEN/NOTIFY plus a 0.5 s poll of the
activation pointer) serve a small knowledge base with two built versions. Each repeat switches to
the other version and polls every replica's `/v1/info` (the `activeVersion` it answers queries
from) every 5 ms until all of them report it, two ways:

- the store call that `ragops kb activate` makes (`KnowledgeStore.activate`), timed from just
  before the call: the switch itself;
- the `ragops kb activate --dsn ... --force` command as an operator or a Job runs it, timed from
  launching the process; its own wall time (start-up, connect, activate, exit) is the baseline.

Versions are activated with force: the benchmark builds them without a golden-set gate.

    .venv/bin/python -m bench.version_switch [--quick] [--replicas 3] [--repeats 10]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import httpx

from bench.common import (
    Postgres,
    Row,
    build_request,
    load_average,
    machine,
    median,
    percentile,
    print_rows,
    result_document,
    runtime_replicas,
    write_corpus,
    write_result,
)
from ragops_runtime.kb.build import build_version
from ragops_runtime.store import KnowledgeStore

VERSIONS = ("v1", "v2")
POLL_SECONDS = 0.005
DEADLINE_SECONDS = 180.0  # the CLI start-up alone took 25 s on a machine loaded 13 deep


async def prepare(dsn: str, work: Path) -> None:
    async with await KnowledgeStore.connect(dsn) as store:
        for number, version in enumerate(VERSIONS, start=1):
            corpus = work / f"switch-{version}.jsonl"
            write_corpus(corpus, 50, edited=set(range(0, 50, 5)), edition=number)
            await build_version(store, build_request(corpus, version))
        await store.activate("bench", VERSIONS[0], force=True, reason="benchmark")


async def until_all_serve(client: httpx.AsyncClient, urls: Sequence[str], version: str, started: float) -> list[float]:
    """Seconds from `started` until each replica reported `version`."""

    async def one(url: str) -> float:
        while True:
            response = await client.get(f"{url}/v1/info")
            if response.status_code == 200 and response.json()["activeVersion"] == version:
                return time.perf_counter() - started
            if time.perf_counter() - started > DEADLINE_SECONDS:
                raise RuntimeError(f"{url} still does not serve {version} after {DEADLINE_SECONDS:.0f} s")
            await asyncio.sleep(POLL_SECONDS)

    return list(await asyncio.gather(*(one(url) for url in urls)))


async def switch_by_store(store: KnowledgeStore, version: str) -> None:
    await store.activate("bench", version, force=True, reason="benchmark")


def cli_command(dsn: str, version: str) -> list[str]:
    ragops = Path(sys.executable).parent / "ragops"
    return [str(ragops), "kb", "activate", "--dsn", dsn, "--kb", "bench", "--version", version, "--force"]


async def measure(dsn: str, urls: Sequence[str], repeats: int) -> list[Row]:
    by_store: list[float] = []
    by_cli: list[float] = []
    cli_wall: list[float] = []
    current = VERSIONS[0]
    async with (
        await KnowledgeStore.connect(dsn) as store,
        httpx.AsyncClient(timeout=5) as client,
    ):
        await until_all_serve(client, urls, current, time.perf_counter())
        for repeat in range(1, repeats + 1):
            for way in ("store", "cli"):
                target = VERSIONS[1] if current == VERSIONS[0] else VERSIONS[0]
                started = time.perf_counter()
                if way == "store":
                    await switch_by_store(store, target)
                    seconds = await until_all_serve(client, urls, target, started)
                    by_store.append(max(seconds))
                else:
                    process = await asyncio.create_subprocess_exec(
                        *cli_command(dsn, target), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
                    )
                    seconds = await until_all_serve(client, urls, target, started)
                    _, stderr = await process.communicate()
                    cli_wall.append(time.perf_counter() - started)
                    if process.returncode != 0:
                        raise RuntimeError(f"ragops kb activate failed: {stderr.decode().strip()}")
                    by_cli.append(max(seconds))
                current = target
            print(
                f"#{repeat}: store call -> all replicas {by_store[-1] * 1000:.1f} ms; "
                f"CLI launch -> all replicas {by_cli[-1] * 1000:.0f} ms (CLI wall {cli_wall[-1] * 1000:.0f} ms)",
                flush=True,
            )
    replicas = f"{len(urls)} replicas"
    cli_baseline = "`ragops kb activate` CLI: launch to exit"
    return [
        Row(
            f"KnowledgeStore.activate -> all {replicas} serve it, median",
            median(by_store) * 1000,
            "ms",
            None,
            None,
            repeats,
        ),
        Row(
            f"KnowledgeStore.activate -> all {replicas} serve it, p95",
            percentile(by_store, 95) * 1000,
            "ms",
            None,
            None,
            repeats,
        ),
        Row(cli_baseline, median(cli_wall) * 1000, "ms", None, None, repeats),
        Row(
            f"`ragops kb activate` launch -> all {replicas} serve it, median",
            median(by_cli) * 1000,
            "ms",
            cli_baseline,
            None,
            repeats,
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 repeats; results to a temp directory")
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    repeats = args.repeats or (3 if args.quick else 10)
    load_before = load_average()
    started = datetime.now(UTC)
    with Postgres() as pg, pg.database() as dsn:
        asyncio.run(prepare(dsn, pg.work))
        with runtime_replicas(dsn, args.replicas, {}, pg.work / "runtime.log") as urls:
            rows = asyncio.run(measure(dsn, urls, repeats))
        document = result_document(
            "version_switch", machine(pg.version), rows, started, load=f"{load_before} -> {load_average()}"
        )
    print_rows(document)
    print(f"wrote {write_result(document, quick=args.quick)}")


if __name__ == "__main__":
    main()
