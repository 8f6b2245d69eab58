"""Benchmark (issue 15): time from a traffic-split change in the store until every runtime replica applies it.

Three real `ragops serve` processes (product defaults: LISTEN/NOTIFY plus a 0.5 s poll of the
pointer and split) serve a small knowledge base with two built versions. Each repeat, timed from
just before the store call that the operator makes, polls every replica's `/v1/info` every 5 ms:

- a weight change (`KnowledgeStore.set_traffic`, a new step: new weight and split id) until all
  replicas report the new weight;
- an abort (`KnowledgeStore.clear_traffic`) until all replicas report no split (weight 0);
- the baseline, in the same run: an activation switch (`KnowledgeStore.activate`) until all
  replicas serve the new version, the path bench/version_switch.py measures.

Then 5,000 queries from 5,000 distinct clients, spread over the replicas at a 10 % canary weight,
measure the share the canary actually served; then the abort scenario: the same split, aborted
(`clear_traffic`) halfway through another 5,000 clients, gives the blast radius, the share of those
answers the canary gave (blueGreen would have given it all of them).

    .venv/bin/python -m bench.canary_split [--quick] [--replicas 3] [--repeats 20]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

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

VERSIONS = ("v1", "v2", "v3")
POLL_SECONDS = 0.005
DEADLINE_SECONDS = 60.0
SHARE_WEIGHT = 10
SHARE_QUERIES = 5000


async def prepare(dsn: str, work: Path) -> None:
    async with await KnowledgeStore.connect(dsn) as store:
        for number, version in enumerate(VERSIONS, start=1):
            corpus = work / f"canary-{version}.jsonl"
            write_corpus(corpus, 50, edited=set(range(0, 50, 5)), edition=number)
            await build_version(store, build_request(corpus, version))
        await store.activate("bench", VERSIONS[0], force=True, reason="benchmark")


async def until_all(
    client: httpx.AsyncClient, urls: Sequence[str], change: Callable[[], Awaitable[Any]], shows: Callable[[Any], bool]
) -> float:
    """Seconds from just before `change()` until every replica's /v1/info satisfies `shows`."""

    async def one(url: str, started: float) -> float:
        while True:
            response = await client.get(f"{url}/v1/info")
            if response.status_code == 200 and shows(response.json()):
                return time.perf_counter() - started
            if time.perf_counter() - started > DEADLINE_SECONDS:
                raise RuntimeError(f"{url} did not apply the change within {DEADLINE_SECONDS:.0f} s")
            await asyncio.sleep(POLL_SECONDS)

    started = time.perf_counter()
    await change()
    return max(await asyncio.gather(*(one(url, started) for url in urls)))


async def measure(dsn: str, urls: Sequence[str], repeats: int) -> tuple[list[float], list[float], list[float]]:
    weight_changes: list[float] = []
    aborts: list[float] = []
    activations: list[float] = []
    async with await KnowledgeStore.connect(dsn) as store, httpx.AsyncClient(timeout=5) as client:
        stable, candidate = VERSIONS[0], VERSIONS[1]
        for repeat in range(1, repeats + 1):
            for step, weight in enumerate((10, 50)):
                split_id = f"bench-{repeat}/{step}"
                change = partial(
                    store.set_traffic,
                    "bench",
                    canary=candidate,
                    weight=weight,
                    shadow_percent=0,
                    split_id=split_id,
                    force=True,
                )
                weight_changes.append(
                    await until_all(client, urls, change, partial(_shows_split, weight=weight, split_id=split_id))
                )
            aborts.append(
                await until_all(
                    client, urls, lambda: store.clear_traffic("bench"), lambda info: info["traffic"] is None
                )
            )
            target = VERSIONS[2] if stable == VERSIONS[0] else VERSIONS[0]
            activations.append(
                await until_all(
                    client,
                    urls,
                    partial(store.activate, "bench", target, force=True),
                    partial(_shows_active, version=target),
                )
            )
            stable = target
            print(
                f"#{repeat}: weight change -> all replicas {weight_changes[-1] * 1000:.1f} ms, "
                f"abort -> weight 0 on all {aborts[-1] * 1000:.1f} ms, activate -> all {activations[-1] * 1000:.1f} ms",
                flush=True,
            )
        await store.set_traffic(
            "bench", canary=candidate, weight=SHARE_WEIGHT, shadow_percent=0, split_id="bench-share", force=True
        )
        await until_all(client, urls, _noop, lambda info: (info["traffic"] or {}).get("splitId") == "bench-share")
    return weight_changes, aborts, activations


async def _noop() -> None:
    return None


def _shows_split(info: dict[str, Any], *, weight: int, split_id: str) -> bool:
    traffic = info["traffic"]
    return traffic is not None and (traffic["canaryWeight"], traffic["splitId"]) == (weight, split_id)


def _shows_active(info: dict[str, Any], *, version: str) -> bool:
    return bool(info["activeVersion"] == version)


async def served_share(urls: Sequence[str], queries: int) -> float:
    """Percent of `queries` (one per client, round-robin over the replicas) the canary answered."""
    semaphore = asyncio.Semaphore(8)
    async with httpx.AsyncClient(timeout=30) as client:

        async def one(number: int) -> bool:
            async with semaphore:
                response = await client.post(
                    f"{urls[number % len(urls)]}/v1/query",
                    json={"query": "how do replicas follow the split"},
                    headers={"X-Client-Id": f"client-{number}"},
                )
                response.raise_for_status()
                return response.headers["x-ragops-role"] == "canary"

        served = await asyncio.gather(*(one(number) for number in range(queries)))
    return sum(served) / queries * 100


async def aborted_blast_radius(dsn: str, urls: Sequence[str], queries: int) -> tuple[int, int, int]:
    """An abort mid-step at weight SHARE_WEIGHT: (canary answers, all answers, canary answers after the abort).

    Clients (one per query, round-robin over the replicas) ask while the split holds; after half of
    the queries the store's split is cleared, as the operator's abort does, and the rest are sent.
    The canary's answers are the blast radius a blueGreen switch would have made every answer; those
    counted after `clear_traffic` returned are the ones the replicas' propagation let through.
    """
    semaphore = asyncio.Semaphore(8)
    aborted = asyncio.Event()
    after_abort = 0
    async with await KnowledgeStore.connect(dsn) as store, httpx.AsyncClient(timeout=30) as client:

        async def one(number: int) -> bool:
            nonlocal after_abort
            async with semaphore:
                sent_after = aborted.is_set()
                response = await client.post(
                    f"{urls[number % len(urls)]}/v1/query",
                    json={"query": "how do replicas follow the split"},
                    headers={"X-Client-Id": f"abort-client-{number}"},
                )
                response.raise_for_status()
                canary = response.headers["x-ragops-role"] == "canary"
                after_abort += int(canary and sent_after)
                return canary

        first = await asyncio.gather(*(one(number) for number in range(queries // 2)))
        await store.clear_traffic("bench", reason="bench: abort")
        aborted.set()
        second = await asyncio.gather(*(one(number) for number in range(queries // 2, queries)))
    return sum(first) + sum(second), queries, after_abort


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--quick", action="store_true", help="3 repeats, 1,000 share queries; results to a temp directory"
    )
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    repeats = args.repeats or (3 if args.quick else 20)
    queries = 1000 if args.quick else SHARE_QUERIES
    load_before = load_average()
    started = datetime.now(UTC)
    with Postgres() as pg, pg.database() as dsn:
        asyncio.run(prepare(dsn, pg.work))
        settings = {"RAGOPS_REQUESTS_PER_MINUTE_PER_CLIENT": "1000000"}
        with runtime_replicas(dsn, args.replicas, settings, pg.work / "runtime.log") as urls:
            weight_changes, aborts, activations = asyncio.run(measure(dsn, urls, repeats))
            share = asyncio.run(served_share(urls, queries))
            blast, asked, after_abort = asyncio.run(aborted_blast_radius(dsn, urls, queries))
        replicas = f"all {len(urls)} replicas"
        baseline = f"KnowledgeStore.activate -> {replicas} serve it, median"
        rows = [
            Row(baseline, median(activations) * 1000, "ms", None, None, repeats),
            Row(
                f"set_traffic (weight change) -> {replicas} apply it, median",
                median(weight_changes) * 1000,
                "ms",
                baseline,
                None,
                len(weight_changes),
            ),
            Row(
                f"set_traffic (weight change) -> {replicas} apply it, p95",
                percentile(weight_changes, 95) * 1000,
                "ms",
                None,
                None,
                len(weight_changes),
            ),
            Row(
                f"clear_traffic (abort) -> weight 0 on {replicas}, median",
                median(aborts) * 1000,
                "ms",
                baseline,
                None,
                repeats,
            ),
            Row(
                f"clear_traffic (abort) -> weight 0 on {replicas}, p95",
                percentile(aborts, 95) * 1000,
                "ms",
                None,
                None,
                repeats,
            ),
            Row(
                f"canary share served at weight {SHARE_WEIGHT} % over {queries:,} clients",
                share,
                "%",
                None,
                None,
                1,
            ),
            Row(
                f"blast radius: canary answers of {asked:,} queries, aborted halfway at weight {SHARE_WEIGHT} % "
                f"(blueGreen: 100 %; {after_abort} answered after the abort returned)",
                blast / asked * 100,
                "%",
                None,
                None,
                1,
            ),
        ]
        document = result_document(
            "canary_split", machine(pg.version), rows, started, load=f"{load_before} -> {load_average()}"
        )
    print_rows(document)
    print(f"wrote {write_result(document, quick=args.quick)}")


if __name__ == "__main__":
    main()
