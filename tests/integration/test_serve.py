"""Real `ragops serve` processes: `--embedded` on an empty data directory builds, gates and serves the
sample; replicas on one database follow a progressive rollout's split together."""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from bench.common import Replica, runtime_processes
from prometheus_client.parser import text_string_to_metric_families

from ragops_runtime.store import KnowledgeStore
from tests.integration.test_runtime import GOLDEN_PROBES, QUESTION, canary_corpus, publish
from tests.support.cluster_story import wait_for
from tests.support.readme import curl, readme_commands

RAGOPS = str(Path(sys.executable).parent / "ragops")


def settled_answer_log_rows(dsn: str) -> int:
    """The answer log's row count once it holds still for two seconds (the writers flush every second)."""
    counts: list[int] = []

    def still() -> bool:
        with psycopg.connect(dsn) as connection:
            row = connection.execute("SELECT count(*) FROM ragops.answer_log").fetchone()
        counts.append(int(row[0]) if row else 0)
        return len(counts) >= 3 and counts[-1] == counts[-2] == counts[-3]

    wait_for("the answer log to settle", still, timeout=30, interval=1.0)
    return counts[-1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.postgres
def test_serve_embedded_bootstraps_the_sample_and_answers(tmp_path: Path) -> None:
    """The README's `ragops serve --embedded` on an empty data directory, then its curl lines as printed."""
    serve, query = readme_commands("serve")
    (quickstart_query,) = [command for command in readme_commands("quickstart") if command.startswith("curl ")]
    data = tmp_path / "data"
    data.mkdir()
    port = free_port()
    words = shlex.split(serve.replace("8080", str(port)))
    assert words[:2] == ["ragops", "serve"], serve
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAGOPS_", "ANTHROPIC_"))}
    env["RAGOPS_DATA_DIR"] = str(data)
    server = subprocess.Popen(
        [RAGOPS, *words[1:]],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            while True:
                assert server.poll() is None, server.stdout.read() if server.stdout else ""
                try:
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "not ready within 60 s"
                time.sleep(0.2)
            body = curl(query, port)
            assert body["kbVersion"] == "sample-v1" and body["mode"] == "retrieval_only"
            assert body["citations"][0]["documentId"] == "warranty/frame-warranty.md"
            # The quick start's curl (there the handbook's runtime, reached by port-forward).
            assert curl(quickstart_query, port)["citations"]
    finally:
        server.send_signal(signal.SIGTERM)
        output, _ = server.communicate(timeout=30)
    assert server.returncode == 0, output
    assert "empty store: building and gating the bundled sample knowledge base" in output
    logs = [line for line in output.splitlines() if line.startswith("{")]
    assert logs and all('"requestId"' in line for line in logs)
    assert "postgresql://" not in output  # the DSN never reaches the logs
    time.sleep(1)
    leftover = subprocess.run(["pgrep", "-f", f"postgres -D {data}"], capture_output=True, text=True)
    assert leftover.stdout == "", "the embedded PostgreSQL outlived `ragops serve`"


# ---- progressive delivery across replicas --------------------------------------------------------


async def reach_all(
    urls: list[str], change: Callable[[], Awaitable[object]], shows: Callable[[Any], bool]
) -> list[float]:
    """Seconds from just before `change()` until each replica's /v1/info traffic satisfies `shows`."""
    async with httpx.AsyncClient(timeout=5) as client:

        async def one(url: str, started: float) -> float:
            while True:
                traffic = (await client.get(f"{url}/v1/info")).json()["traffic"]
                if shows(traffic):
                    return time.perf_counter() - started
                assert time.perf_counter() - started < 10, f"{url} still shows {traffic}"
                await asyncio.sleep(0.005)

        started = time.perf_counter()
        await change()
        return list(await asyncio.gather(*(one(url, started) for url in urls)))


def weight_is(weight: int, split_id: str) -> Callable[[Any], bool]:
    return lambda traffic: traffic is not None and (traffic["canaryWeight"], traffic["splitId"]) == (weight, split_id)


def probes_sent(client: httpx.Client, url: str) -> float:
    text = client.get(f"{url}/metrics").text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "ragops_queries_total" and sample.labels.get("role") == "probe"
    )


@pytest.mark.postgres
def test_a_split_reaches_every_replica_within_a_second_and_serves_its_share(pg_dsn: str, tmp_path: Path) -> None:
    asyncio.run(publish(pg_dsn, "v1"))
    asyncio.run(publish(pg_dsn, "v2", (canary_corpus(tmp_path),), activate=False))
    settings = {
        "RAGOPS_KNOWLEDGE_BASE": "sample",
        "RAGOPS_NAMESPACE": "test",
        "RAGOPS_DEPLOYMENT": "docs",
        "RAGOPS_REQUESTS_PER_MINUTE_PER_CLIENT": "1000000",
    }
    with runtime_processes(pg_dsn, 3, settings, tmp_path / "runtime.log") as replicas, httpx.Client(timeout=10) as http:
        urls = [replica.url for replica in replicas]

        async def changes() -> dict[str, list[float]]:
            async with await KnowledgeStore.connect(pg_dsn) as store:
                seconds = {}
                for weight, split_id in ((10, "r/0"), (30, "r/1")):
                    seconds[f"weight {weight}"] = await reach_all(
                        urls,
                        partial(
                            store.set_traffic, "sample", canary="v2", weight=weight, shadow_percent=0, split_id=split_id
                        ),
                        weight_is(weight, split_id),
                    )
                return seconds

        for change, seconds in asyncio.run(changes()).items():
            assert max(seconds) < 1.0, f"{change} reached the replicas after {seconds}"

        # 5,000 clients, each asking once, spread over the replicas: the canary's share within 3 points.
        def role(number: int) -> str:
            response = http.post(
                f"{urls[number % 3]}/v1/query", json={"query": QUESTION}, headers={"X-Client-Id": f"client-{number}"}
            )
            assert response.status_code == 200, response.text
            assert response.headers["x-ragops-kb-version"] == (
                "v2" if response.headers["x-ragops-role"] == "canary" else "v1"
            )
            return response.headers["x-ragops-role"]

        with ThreadPoolExecutor(6) as pool:
            roles = list(pool.map(role, range(5000)))
            # Sticky across replicas: the same client on another replica gets the same version.
            again = list(pool.map(lambda number: role(number + 1 if number % 3 != 2 else number - 2), range(300)))
        share = roles.count("canary") / len(roles) * 100
        assert abs(share - 30) <= 3, share
        assert again == [roles[number + 1 if number % 3 != 2 else number - 2] for number in range(300)]

        # Golden probes: exactly one replica sends them; a killed holder is replaced.
        async def with_probes() -> None:
            async with await KnowledgeStore.connect(pg_dsn) as store:
                await store.set_traffic(
                    "sample", canary="v2", weight=30, shadow_percent=0, split_id="r/1", probe=GOLDEN_PROBES
                )

        # The replicas log answers from a background queue: count once their writers have caught up.
        logged_before = settled_answer_log_rows(pg_dsn)
        asyncio.run(with_probes())

        def holders() -> list[Replica]:
            return [
                replica
                for replica in replicas
                if replica.process.poll() is None
                # A replica that has not heard of the probes yet shows none.
                and (http.get(f"{replica.url}/v1/info").json()["traffic"]["probes"] or {}).get("runningHere")
            ]

        wait_for("a replica to run the probes", lambda: len(holders()) == 1, timeout=10, interval=0.1)
        [holder] = holders()
        wait_for("probes at 600 a minute", lambda: probes_sent(http, holder.url) >= 20, timeout=10, interval=0.1)
        assert [probes_sent(http, r.url) for r in replicas if r is not holder] == [0, 0]
        holder.process.kill()
        holder.process.wait()
        survivors = [r for r in replicas if r is not holder]
        wait_for("another replica to take the probes over", lambda: len(holders()) == 1, timeout=10, interval=0.1)
        [successor] = holders()
        wait_for("probes again", lambda: probes_sent(http, successor.url) >= 10, timeout=10, interval=0.1)
        assert settled_answer_log_rows(pg_dsn) == logged_before

        # Abort: weight 0 everywhere within a second, and the probes stop.
        aborted = asyncio.run(
            reach_all(
                [r.url for r in survivors],
                lambda: clear(pg_dsn),
                lambda traffic: traffic is None,
            )
        )
        assert max(aborted) < 1.0, aborted
        sent = probes_sent(http, successor.url)
        time.sleep(0.5)
        assert probes_sent(http, successor.url) == sent


async def clear(dsn: str) -> None:
    async with await KnowledgeStore.connect(dsn) as store:
        await store.clear_traffic("sample", reason="test abort")
