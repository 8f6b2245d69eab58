"""The shared answer cache on a real redis-server: two runtime replicas, a version switch, an outage.

Each test starts its own redis-server (tests/support/redis_server.py) and serves two runtime apps
(replicas "docs-0" and "docs-1" of one deployment) over the same PostgreSQL, with the Anthropic
double, so a hit is visible as a generation that did not happen.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ragops_runtime import sample
from ragops_runtime.app import create_app
from tests.integration.test_runtime import QUESTION, ask, publish, settings_for
from tests.support.anthropic_messages import DEFAULT_API_KEY, FakeAnthropic, running_anthropic_server
from tests.support.redis_server import RedisServer, running_redis
from tests.support.runtime_server import serving


@pytest.fixture
def published(pg_dsn: str) -> str:
    asyncio.run(publish(pg_dsn, "v1"))
    return pg_dsn


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with running_redis(tmp_path) as server:
        yield server


@contextmanager
def replicas(
    dsn: str, redis_url: str, count: int = 2, **overrides: Any
) -> Iterator[tuple[list[httpx.Client], FakeAnthropic]]:
    with ExitStack() as stack:
        fake = stack.enter_context(running_anthropic_server())
        clients = []
        for index in range(count):
            settings = settings_for(
                dsn,
                pod=f"docs-{index}",
                anthropic_api_key=DEFAULT_API_KEY,
                anthropic_base_url=fake.url,
                cache_backend="redis",
                cache_redis_url=redis_url,
                **overrides,
            )
            url = stack.enter_context(serving(create_app(settings, dsn=dsn)))
            clients.append(stack.enter_context(httpx.Client(base_url=url, timeout=30)))
        yield clients, fake


def cache_errors(client: httpx.Client) -> dict[str, float]:
    families = text_string_to_metric_families(client.get("/metrics").text)
    return {
        sample.labels["operation"]: sample.value
        for family in families
        if family.name == "ragops_cache_errors"
        for sample in family.samples
        if sample.name == "ragops_cache_errors_total"
    }


def test_a_miss_on_one_replica_is_a_hit_on_the_other(published: str, redis_server: RedisServer) -> None:
    with replicas(published, redis_server.url) as ([a, b], fake):
        first = ask(a).json()
        assert (first["mode"], first["degraded"]) == ("generated", False)
        assert len(fake.requests) == 1
        second = ask(b, QUESTION.upper() + "??").json()  # the same question after normalization
        assert second["mode"] == "cached" and second["answer"] == first["answer"]
        assert second["citations"] == first["citations"] and second["queryId"] != first["queryId"]
        assert len(fake.requests) == 1, "replica B generated although A had stored the answer"
        # One key, with the deployment's scope and the version in it, expiring after the TTL.
        with redis_server.client() as direct:
            keys = [key.decode() for key in direct.keys("ragops:answer:v1:*")]
            assert len(keys) == 1 and keys[0].startswith("ragops:answer:v1:test/docs/sample:sample/v1#")
            assert 0 < direct.ttl(keys[0]) <= 600
            stored = json.loads(direct.get(keys[0]))
            assert stored["answer"] == first["answer"] and stored["kbVersion"] == "v1"
        assert a.get("/v1/info").json()["cache"] == "redis"
        assert cache_errors(a) == {"get": 0, "put": 0, "decode": 0}


def test_a_version_switch_never_serves_the_old_versions_answer(
    published: str, redis_server: RedisServer, tmp_path: Path
) -> None:
    with replicas(published, redis_server.url) as ([a, b], fake):
        assert ask(a).json()["mode"] == "generated"
        assert ask(b).json()["mode"] == "cached"
        edited = tmp_path / "corpus"
        shutil.copytree(sample.CORPUS_DIR, edited)
        codes = edited / "batteries" / "error-codes.md"
        codes.write_text(codes.read_text() + "\n\n## Update\n\nE07 now also appears after a firmware update.\n")
        asyncio.run(publish(published, "v2", (str(edited),)))
        for client in (a, b):
            deadline = time.monotonic() + 2
            while client.get("/readyz").json()["activeVersion"] != "v2":
                assert time.monotonic() < deadline, "the switch did not arrive"
                time.sleep(0.05)
        after = ask(b).json()
        assert (after["kbVersion"], after["mode"]) == ("v2", "generated")
        assert ask(a).json()["mode"] == "cached"  # v2's answer, now shared
        assert len(fake.requests) == 2


def test_redis_down_answers_without_the_cache_and_recovers(published: str, redis_server: RedisServer) -> None:
    with replicas(published, redis_server.url) as ([a, b], fake):
        assert ask(a).json()["mode"] == "generated"
        redis_server.kill()
        for client in (a, b, a, b):
            response = ask(client)
            assert response.status_code == 200, response.text
            body = response.json()
            assert (body["mode"], body["degraded"]) == ("generated", False)
        assert cache_errors(a)["get"] >= 1 and cache_errors(b)["get"] >= 1
        assert "redis unavailable" in a.get("/v1/info").json()["cache"]
        ready = a.get("/readyz")
        assert ready.status_code == 200 and "unavailable" in ready.json()["cache"]

        redis_server.start()
        time.sleep(1.2)  # the backend leaves Redis alone for a second after a failure
        assert ask(a).json()["mode"] == "generated"  # the restarted Redis is empty: a miss, stored
        assert ask(b).json()["mode"] == "cached"
        assert a.get("/v1/info").json()["cache"] == "redis"
        generations = len(fake.requests)
        assert ask(a).json()["mode"] == "cached" and len(fake.requests) == generations


def test_a_redis_that_never_answers_costs_a_query_at_most_the_timeout(published: str) -> None:
    # A socket that accepts connections and never replies: every Redis call times out.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        with replicas(published, url, count=1, cache_redis_timeout_ms=100) as ([client], _):
            started = time.monotonic()
            response = ask(client)
            elapsed = time.monotonic() - started
            assert response.status_code == 200 and response.json()["mode"] == "generated"
            assert elapsed < 2.0, f"the query waited {elapsed:.2f}s for Redis"
            assert cache_errors(client)["get"] == 1
            # Inside the second after a failure Redis is not asked again: no second timeout.
            assert ask(client).status_code == 200
            assert cache_errors(client)["get"] == 1
