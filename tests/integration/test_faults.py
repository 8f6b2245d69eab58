"""Fault scenarios: one real dependency (or one hostile client) breaks under a real runtime.

Every scenario runs the same story: answer and rate a few questions, break something, check what
clients get while it is broken, repair it, and then check that nothing was lost and nothing is
stuck: every answer a client received (200) is in the answer log, every rating accepted (204)
is stored, every job item finishes once, readiness comes back and a new question is generated.

The table (`SCENARIOS`), what breaks, and what clients get while it is broken:
- database down during queries: PostgreSQL stopped. New questions, streams, feedback and jobs get
  503 `database_unavailable` with Retry-After; a cached answer is still served (and logged once
  the database is back); /readyz answers 503 within the kubelet probe's timeout; /healthz 200.
- database down during a switch: PostgreSQL stopped right after a version switch committed; once
  it is back, every answer comes from the new version.
- database down during a job: PostgreSQL stopped while a job's items are answered; every item
  is done once in the end.
- LLM 429, 500, timeout: the Anthropic double refuses, fails or stalls; answers are 200,
  retrieval-only, `degraded` with the reason, rateable; the replica stays ready.
- LLM stream cut: a streamed answer ends with a degraded summary.
- Redis down: the shared cache's Redis killed; answers without the cache, ready; hits again after.
- slow clients: 60 connections trickling heads and bodies or saying nothing; everyone else is
  answered, each slow one is cut.
- hostile bodies: 50 MB, chunked, not UTF-8, nested 30,000 deep, NUL, 10,000 filters, wrong
  types: 4xx in the error shape, nothing logged.

Only the Anthropic API has a double (tests/support/anthropic_messages.py); PostgreSQL, Redis and
the runtime are real. Database scenarios use a PostgreSQL of their own, which they stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from ragops_runtime.app import create_app
from ragops_runtime.store import KnowledgeStore
from ragops_runtime.store.embedded import start_embedded
from tests.integration.test_runtime import QUESTION, canary_corpus, publish, settings_for
from tests.support.anthropic_messages import DEFAULT_API_KEY, FakeAnthropic, Reply, running_anthropic_server
from tests.support.cluster_story import wait_for
from tests.support.redis_server import RedisServer, running_redis
from tests.support.runtime_server import serving

BEFORE = ("How long is the frame warranty?", "How do I charge the battery?")
"""Answered and rated before the fault (and so in the answer cache)."""
DURING = ("How do I fix a puncture?", "What delivery options are there?", "How do I return a bike for a refund?")
AFTER = QUESTION
PROBE_TIMEOUT_SECONDS = 2
"""The kubelet's timeout of the runtime's readiness probe (operator builders/runtime.py)."""


class EmbeddedPostgres:
    """A PostgreSQL of the scenario's own, stopped and started again in the same directory (same DSN)."""

    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="ragops-fault-"))
        self.directory.chmod(0o755)
        self.server = start_embedded(self.directory)
        self.dsn = self.server.get_uri()

    def stop(self) -> None:
        self.server.cleanup()

    def start(self) -> None:
        self.server = start_embedded(self.directory)

    def remove(self) -> None:
        with contextlib.suppress(Exception):
            self.server.cleanup()
        shutil.rmtree(self.directory, ignore_errors=True)


@dataclass
class Run:
    """A served runtime and what its clients were told, to check against the store afterwards."""

    client: httpx.Client
    url: str
    dsn: str
    fake: FakeAnthropic
    redis: RedisServer | None
    database: EmbeddedPostgres | None
    answered: list[str] = field(default_factory=list)
    rated: list[str] = field(default_factory=list)
    jobs: list[str] = field(default_factory=list)

    def ask(self, query: str = QUESTION, **body: Any) -> httpx.Response:
        response = self.client.post("/v1/query", json={"query": query, **body})
        if response.status_code == 200:
            self.answered.append(response.json()["queryId"])
        return response

    def rate(self, query_id: str, rating: float) -> httpx.Response:
        response = self.client.post("/v1/feedback", json={"queryId": query_id, "rating": rating})
        if response.status_code == 204:
            self.rated.append(query_id)
        return response

    def submit(self, *queries: str) -> httpx.Response:
        response = self.client.post("/v1/jobs", json={"queries": [{"query": q} for q in queries]})
        if response.status_code == 202:
            self.jobs.append(response.json()["jobId"])
        return response


def error_code(response: httpx.Response) -> str:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    code: str = body["error"]["code"]
    return code


def unavailable(response: httpx.Response, code: str = "database_unavailable") -> None:
    assert response.status_code == 503 and error_code(response) == code, response.text
    assert int(response.headers["retry-after"]) >= 1


def ready(run: Run) -> bool:
    with contextlib.suppress(httpx.TransportError):
        return run.client.get("/readyz").status_code == 200
    return False


# ---- the faults -----------------------------------------------------------------------------------


def database_down_during_queries(run: Run) -> None:
    assert run.database is not None
    before = run.ask(DURING[0])
    run.database.stop()
    unavailable(run.ask(DURING[1]))
    with run.client.stream("POST", "/v1/query", json={"query": DURING[2], "stream": True}) as streamed:
        streamed.read()
        unavailable(streamed)
    unavailable(run.rate(before.json()["queryId"], 1.0))
    unavailable(run.submit(DURING[1]))
    cached = run.ask(BEFORE[0])  # from the cache: answered, and logged when the database is back
    assert cached.status_code == 200 and cached.json()["mode"] == "cached", cached.text
    started = time.monotonic()
    readiness = run.client.get("/readyz")
    assert time.monotonic() - started < PROBE_TIMEOUT_SECONDS, "the kubelet would see a timeout, not the reason"
    assert readiness.status_code == 503 and error_code(readiness) == "database_unavailable"
    assert run.client.get("/healthz").status_code == 200  # a restart would not bring the database back
    time.sleep(15)  # longer than the pool's reconnection give-up: recovery must not wait on a backoff
    run.database.start()


def database_down_during_a_switch(run: Run) -> None:
    assert run.database is not None

    async def switch() -> None:
        async with await KnowledgeStore.connect(run.dsn) as store:
            await store.activate("sample", "v2")

    asyncio.run(switch())
    run.database.stop()  # the runtime may or may not have heard of the switch
    unavailable(run.ask(DURING[1]))
    run.database.start()
    wait_for("the switch to reach the runtime", lambda: run.client.get("/readyz").json().get("activeVersion") == "v2")
    for question in BEFORE + DURING:
        assert run.ask(question).json()["kbVersion"] == "v2"


def database_down_during_a_job(run: Run) -> None:
    assert run.database is not None
    run.fake.script(*[Reply.slow(1.0)] * 3)
    assert run.submit(*DURING).status_code == 202
    time.sleep(0.5)  # the items are being answered
    run.database.stop()
    time.sleep(3)
    run.database.start()


def llm_fault(reply: Reply, reason: str) -> Callable[[Run], None]:
    def scenario(run: Run) -> None:
        run.fake.script(reply)
        degraded = run.ask(DURING[0])
        assert degraded.status_code == 200, degraded.text
        body = degraded.json()
        assert (body["mode"], body["degraded"]) == ("retrieval_only", True) and body["citations"]
        assert body["degradedReason"].startswith(reason)
        assert ready(run)  # an LLM outage is no reason to take the replica out of the Service
        assert run.rate(body["queryId"], 0.0).status_code == 204  # a degraded answer can be rated

    return scenario


def llm_stream_cut(run: Run) -> None:
    run.fake.script(Reply.drop_stream_after(2))
    with run.client.stream("POST", "/v1/query", json={"query": DURING[0], "stream": True}) as response:
        blocks = response.read().decode().strip().split("\n\n")
    done = json.loads(blocks[-1].split("\n")[1][6:])
    assert blocks[-1].startswith("event: done") and done["degraded"] is True
    run.answered.append(done["queryId"])
    assert ready(run)


def redis_down(run: Run) -> None:
    assert run.redis is not None
    assert run.ask(BEFORE[0]).json()["mode"] == "cached"
    run.redis.kill()
    for question in BEFORE:  # cached a moment ago, now answered afresh
        response = run.ask(question)
        assert response.status_code == 200 and not response.json()["degraded"], response.text
    readiness = run.client.get("/readyz")
    assert readiness.status_code == 200 and "unavailable" in readiness.json()["cache"]
    run.redis.start()
    time.sleep(1.2)  # the cache leaves Redis alone for a second after a failure
    assert run.ask(DURING[0]).json()["mode"] == "generated"
    assert run.ask(DURING[0]).json()["mode"] == "cached"  # stored in the restarted Redis


def slow_clients(run: Run) -> None:
    host, port = run.url.removeprefix("http://").split(":")
    crowd = []
    for number in range(60):
        connection = socket.create_connection((host, int(port)), timeout=10)
        if number % 3 == 0:
            connection.sendall(b"POST /v1/query HTTP/1.1\r\nHost: t\r\n")  # a head never finished
        elif number % 3 == 1:
            connection.sendall(b"POST /v1/query HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n{")  # a body
        crowd.append(connection)  # and every third says nothing at all
    for question in DURING:
        assert run.ask(question).status_code == 200
    assert ready(run)
    for connection in crowd:
        connection.settimeout(10)
        with contextlib.suppress(ConnectionResetError):
            while connection.recv(65536):
                pass  # a 408 (when nothing was answered yet), then the close
        connection.close()


def hostile_bodies(run: Run) -> None:
    with psycopg.connect(run.dsn) as connection:
        logged = connection.execute("SELECT count(*) FROM ragops.answer_log").fetchone()
    headers = {"content-type": "application/json"}
    refusals = {
        "50 MB": (b'{"query": "' + b"x" * (50 * 2**20) + b'"}', 413),
        "not UTF-8": (b'{"query": "\xff\xfe"}', 400),
        "nested 30,000 deep": (b'{"query": "q", "filters": ' + b"[" * 30_000 + b"]" * 30_000 + b"}", 400),
        "NUL in the query": (json.dumps({"query": "brakes\u0000"}).encode(), 422),
        "10,000 filters": (json.dumps({"query": "q", "filters": {f"k{n}": n for n in range(10_000)}}).encode(), 413),
        "a string for topK": (json.dumps({"query": "q", "topK": "5"}).encode(), 422),
        "an array": (b"[]", 422),
    }
    for what, (body, status) in refusals.items():
        response = run.client.post("/v1/query", content=body, headers=headers)
        assert response.status_code == status, (what, response.status_code, response.text[:200])
        error_code(response)

    def trickle() -> Iterator[bytes]:
        for _ in range(40):
            yield b" " * 2**20

    assert run.client.post("/v1/feedback", content=trickle(), headers=headers).status_code == 413
    with psycopg.connect(run.dsn) as connection:
        assert connection.execute("SELECT count(*) FROM ragops.answer_log").fetchone() == logged


@dataclass(frozen=True)
class Scenario:
    name: str
    fault: Callable[[Run], None]
    own_database: bool = False
    redis: bool = False
    candidate: bool = False
    """Build a second version (v2) to switch to."""
    settings: dict[str, Any] = field(default_factory=dict)


SCENARIOS = [
    Scenario("database down during queries", database_down_during_queries, own_database=True),
    Scenario("database down during a switch", database_down_during_a_switch, own_database=True, candidate=True),
    Scenario(
        "database down during a job",
        database_down_during_a_job,
        own_database=True,
        settings={"job_retry_base_seconds": 0.2, "job_retry_max_seconds": 1, "job_lease_seconds": 3},
    ),
    Scenario("LLM 429", llm_fault(Reply.rate_limited(retry_after="1"), "generation rate_limited")),
    Scenario("LLM 500", llm_fault(Reply.server_error(500), "generation upstream_error")),
    Scenario(
        "LLM timeout",
        llm_fault(Reply.slow(3.0), "generation timeout"),
        settings={"generation_timeout_seconds": 0.5},
    ),
    Scenario("LLM stream cut", llm_stream_cut),
    Scenario("Redis down", redis_down, redis=True),
    Scenario("slow clients", slow_clients, settings={"read_timeout_seconds": 2}),
    Scenario("hostile bodies", hostile_bodies),
]


@contextmanager
def scenario_run(scenario: Scenario, pg_dsn: str, tmp_path: Path) -> Iterator[Run]:
    with ExitStack() as stack:
        database = None
        dsn = pg_dsn
        if scenario.own_database:
            database = EmbeddedPostgres()
            stack.callback(database.remove)
            dsn = database.dsn
        asyncio.run(publish(dsn, "v1"))
        if scenario.candidate:
            asyncio.run(publish(dsn, "v2", (canary_corpus(tmp_path),), activate=False))
        redis = stack.enter_context(running_redis(tmp_path)) if scenario.redis else None
        fake = stack.enter_context(running_anthropic_server())
        overrides: dict[str, Any] = {
            "anthropic_api_key": DEFAULT_API_KEY,
            "anthropic_base_url": fake.url,
            "requests_per_minute_per_client": 100_000,
            **scenario.settings,
        }
        if redis is not None:
            overrides.update(cache_backend="redis", cache_redis_url=redis.url)
        url = stack.enter_context(serving(create_app(settings_for(dsn, **overrides), dsn=dsn)))
        client = stack.enter_context(httpx.Client(base_url=url, timeout=30))
        yield Run(client=client, url=url, dsn=dsn, fake=fake, redis=redis, database=database)


@pytest.mark.postgres
@pytest.mark.parametrize("scenario", SCENARIOS, ids=[scenario.name for scenario in SCENARIOS])
def test_nothing_is_lost_and_nothing_is_stuck(scenario: Scenario, pg_dsn: str, tmp_path: Path) -> None:
    with scenario_run(scenario, pg_dsn, tmp_path) as run:
        for question in BEFORE:
            answer = run.ask(question)
            assert answer.status_code == 200, answer.text
            assert run.rate(answer.json()["queryId"], 0.75).status_code == 204

        scenario.fault(run)

        wait_for("ready again", lambda: ready(run))
        wait_for("a generated answer again", lambda: run.ask(AFTER).json().get("mode") == "generated")
        for job_id in run.jobs:

            def finished(job_id: str = job_id) -> bool:
                return bool(run.client.get(f"/v1/jobs/{job_id}").json()["state"] == "finished")

            wait_for(f"job {job_id} to finish", finished, timeout=90)
            job = run.client.get(f"/v1/jobs/{job_id}").json()
            assert [item["state"] for item in job["items"]] == ["done"] * job["total"], job
            assert (job["done"], job["failed"]) == (job["total"], 0), job  # each item counted once

        # Rows deferred by an outage are written within a second or two of the database's return.
        def logged_ids() -> set[str]:
            with psycopg.connect(run.dsn) as connection:
                return {row[0] for row in connection.execute("SELECT query_id::text FROM ragops.answer_log")}

        wait_for("deferred answer log rows", lambda: set(run.answered) <= logged_ids(), timeout=10)
        logged = logged_ids()
        with psycopg.connect(run.dsn) as connection:
            rated = [row[0] for row in connection.execute("SELECT query_id::text FROM ragops.answer_feedback")]
        assert set(run.answered) <= logged, "an answer a client received is missing from the answer log"
        assert sorted(run.rated) == sorted(rated), "a rating the client was told was stored is missing"
