"""Benchmark (issue 16, item 7): a runtime's memory and latency under hostile bodies and slow clients.

One real `ragops serve` process (product defaults: bodies over their limit refused before they
are read, a 10 s read deadline per request) serves a small knowledge base. The runtime's resident
memory (VmRSS of the process, sampled every 10 ms) and the latency of ordinary queries are
measured, each against a baseline taken in the same run:

- idle, after ordinary queries: the baseline;
- while it is sent 50 MB bodies to /v1/query and /v1/feedback, with a Content-Length and chunked
  (the issue measured 164 -> 418 MiB for one such body before the limit);
- while N slow clients (a head a byte short of finished, a body never sent, or nothing at all)
  hold connections open: memory, the p50 of ordinary queries meanwhile, how long until the
  runtime cut every one of them, and its open sockets afterwards.

    .venv/bin/python -m bench.hostile_clients [--quick] [--slow-clients 300] [--bodies 10]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx

from bench.common import (
    Postgres,
    Row,
    build_request,
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

BODY_BYTES = 50 * 2**20
SAMPLE_SECONDS = 0.01
T = TypeVar("T")


async def prepare(dsn: str, work: Path) -> None:
    async with await KnowledgeStore.connect(dsn) as store:
        corpus = work / "hostile.jsonl"
        write_corpus(corpus, 50)
        await build_version(store, build_request(corpus, "v1"))
        await store.activate("bench", "v1", force=True, reason="benchmark")


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def open_sockets(pid: int) -> int:
    return sum(1 for fd in os.listdir(f"/proc/{pid}/fd") if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"))


@contextmanager
def peak_rss(pid: int) -> Iterator[Callable[[], float]]:
    """Samples the process' RSS every 10 ms while the block runs; yields a reader of the peak so far."""
    peak = rss_mib(pid)
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            with contextlib.suppress(OSError, RuntimeError):
                peak = max(peak, rss_mib(pid))
            stop.wait(SAMPLE_SECONDS)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield lambda: peak
    finally:
        stop.set()
        sampler.join()


def latencies(url: str, questions: list[str]) -> list[float]:
    seconds = []
    with httpx.Client(base_url=url, timeout=30) as client:
        for question in questions:
            started = time.perf_counter()
            response = client.post("/v1/query", json={"query": question})
            seconds.append(time.perf_counter() - started)
            if response.status_code != 200:
                raise RuntimeError(f"an ordinary query got {response.status_code}: {response.text[:200]}")
    return seconds


def send_declared_body(host: str, port: int, path: str) -> int:
    """A 50 MB body announced by Content-Length, sent until the runtime answers or hangs up; its status."""
    with socket.create_connection((host, port), timeout=30) as connection:
        connection.sendall(
            f"POST {path} HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\n"
            f"Content-Length: {BODY_BYTES}\r\n\r\n".encode()
        )
        block = b"x" * 2**20
        with contextlib.suppress(OSError):
            for _ in range(BODY_BYTES // len(block)):
                connection.sendall(block)
        connection.settimeout(30)
        head = connection.recv(4096)
        return int(head.split()[1]) if head.startswith(b"HTTP/1.1") else 0


def send_chunked_body(url: str, path: str) -> int:
    def chunks() -> Iterator[bytes]:
        for _ in range(BODY_BYTES // 2**20):
            yield b" " * 2**20

    with httpx.Client(base_url=url, timeout=60) as client:
        try:
            return client.post(path, content=chunks(), headers={"content-type": "application/json"}).status_code
        except httpx.TransportError:
            return 0  # cut while still sending: refused without an answer the client could read


def slow_connection(host: str, port: int, kind: int) -> socket.socket:
    connection = socket.create_connection((host, port), timeout=30)
    if kind == 0:
        connection.sendall(b"GET /v1/info HTTP/1.1\r\nHost: b\r\nX-Slow: 1\r\n")  # a head never finished
    elif kind == 1:
        connection.sendall(b"POST /v1/query HTTP/1.1\r\nHost: b\r\nContent-Length: 1000\r\n\r\n{")  # a body never sent
    return connection  # kind 2: connects and says nothing


def closed(connection: socket.socket) -> bool:
    connection.setblocking(False)
    try:
        while True:
            data = connection.recv(65536)
            if not data:
                return True
    except BlockingIOError:
        return False
    except OSError:
        return True


def timed(work: Callable[[], T]) -> tuple[T, float]:
    started = time.perf_counter()
    result = work()
    return result, time.perf_counter() - started


def measure(url: str, pid: int, *, bodies: int, slow_clients: int, questions: list[str]) -> list[Row]:
    host, port_text = url.removeprefix("http://").split(":")
    port = int(port_text)
    latencies(url, questions[:50])  # warm up: imports, the pool, the query-vector cache of other questions
    idle_latency = median(latencies(url, questions[50:150])) * 1000
    idle = rss_mib(pid)

    statuses: list[int] = []
    with peak_rss(pid) as peak:
        for number in range(bodies):
            statuses.append(send_declared_body(host, port, ("/v1/query", "/v1/feedback")[number % 2]))
        declared_peak = peak()
    after_declared = rss_mib(pid)
    with peak_rss(pid) as peak:
        for number in range(bodies):
            statuses.append(send_chunked_body(url, ("/v1/query", "/v1/feedback")[number % 2]))
        chunked_peak = peak()
    if any(status not in (413, 0) for status in statuses):
        raise RuntimeError(f"a 50 MB body was not refused: {statuses}")
    refused = sum(status == 413 for status in statuses)

    sockets_before = open_sockets(pid)
    with peak_rss(pid) as peak:
        opened = time.perf_counter()
        crowd = [slow_connection(host, port, number % 3) for number in range(slow_clients)]
        crowded_latency = median(latencies(url, questions[150:200])) * 1000
        crowd_peak = peak()
        while not all(closed(connection) for connection in crowd):
            if time.perf_counter() - opened > 120:
                raise RuntimeError("the runtime did not cut every slow client within 120 s")
            time.sleep(0.05)
        cut_after = time.perf_counter() - opened
    for connection in crowd:
        connection.close()
    time.sleep(0.5)
    sockets_after = open_sockets(pid)

    idle_row = "RSS idle, after 150 ordinary queries"
    latency_row = "query p50, nobody hostile"
    return [
        Row(idle_row, idle, "MiB"),
        Row(f"RSS peak while refusing {bodies} x 50 MB bodies with a Content-Length", declared_peak, "MiB", idle_row),
        Row(f"RSS after those {bodies} bodies", after_declared, "MiB", idle_row),
        Row(f"RSS peak while refusing {bodies} x 50 MB chunked bodies", chunked_peak, "MiB", idle_row),
        Row(f"50 MB bodies answered 413 (of {2 * bodies}; the rest cut while sending)", refused, "bodies"),
        Row(f"RSS peak with {slow_clients} slow clients connected", crowd_peak, "MiB", idle_row),
        Row(latency_row, idle_latency, "ms", repeats=100),
        Row(f"query p50 with {slow_clients} slow clients connected", crowded_latency, "ms", latency_row, repeats=50),
        Row(f"seconds until the runtime cut all {slow_clients} slow clients", cut_after, "s"),
        Row("runtime sockets before the slow clients", sockets_before, "sockets"),
        Row("runtime sockets after they were cut", sockets_after, "sockets", "runtime sockets before the slow clients"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="50 slow clients, 2 bodies; results to a temp directory")
    parser.add_argument("--slow-clients", type=int, default=None)
    parser.add_argument("--bodies", type=int, default=None)
    args = parser.parse_args()
    slow_clients = args.slow_clients or (50 if args.quick else 300)
    bodies = args.bodies or (2 if args.quick else 10)
    load_before = load_average()
    started = datetime.now(UTC)
    with Postgres() as pg, pg.database() as dsn:
        asyncio.run(prepare(dsn, pg.work))
        settings = {"RAGOPS_REQUESTS_PER_MINUTE_PER_CLIENT": "1000000", "RAGOPS_CACHE_TTL_SECONDS": "0"}
        with runtime_processes(dsn, 1, settings, pg.work / "runtime.log") as [replica]:
            rows = measure(
                replica.url, replica.process.pid, bodies=bodies, slow_clients=slow_clients, questions=query_texts(200)
            )
        document: dict[str, Any] = result_document(
            "hostile_clients", machine(pg.version), rows, started, load=f"{load_before} -> {load_average()}"
        )
    print_rows(document)
    print(f"wrote {write_result(document, quick=args.quick)}")


if __name__ == "__main__":
    main()
