"""Async and batch queries (POST /v1/jobs) on real PostgreSQL, real runtimes and the Anthropic double.

Covers a batch answered from the active version with the cache, the submission limits (size,
count, length, the client's rate), retries of transient failures with backoff, failure after the
attempt limit, retention, the store's fencing of a lost claim, concurrent claims, and a replica
SIGKILLed in the middle of a job: another replica finishes it and every item completes once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ragops_runtime.app import QueryResponse
from ragops_runtime.rollout import assign
from ragops_runtime.store.jobs import (
    NewItem,
    claim_items,
    enqueue_job,
    ensure_jobs_schema,
    finish_item,
    renew_leases,
    retry_item,
)
from tests.integration.test_runtime import (
    QUESTION,
    ask,
    canary_corpus,
    generating_runtime,
    publish,
    runtime,
    split,
    wait_for_traffic,
)
from tests.support.anthropic_messages import DEFAULT_API_KEY, Reply, running_anthropic_server
from tests.support.http_double import free_port

RAGOPS = str(Path(sys.executable).parent / "ragops")
QUESTIONS = (
    "What does error code E07 on the display mean?",
    "How long is the frame warranty?",
    "How do I charge the battery?",
    "How do I fix a puncture?",
    "What delivery options are there?",
    "How do I return a bike for a refund?",
)


@pytest.fixture
def published(pg_dsn: str) -> str:
    asyncio.run(publish(pg_dsn, "v1"))
    return pg_dsn


def submit(client: httpx.Client, *queries: str, client_id: str = "batch", **extra: Any) -> httpx.Response:
    return client.post(
        "/v1/jobs", json={"queries": [{"query": q} for q in queries], **extra}, headers={"X-Client-Id": client_id}
    )


def wait_finished(client: httpx.Client, job_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        if body["state"] == "finished":
            return body
        assert time.monotonic() < deadline, f"job not finished within {timeout}s: {body}"
        time.sleep(0.1)


def metric(client: httpx.Client, name: str, **labels: str) -> float:
    text = client.get("/metrics").text
    found = [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    ]
    assert len(found) == 1, (name, labels, found)
    return found[0]


# ---- through the API, in-process runtimes -------------------------------------------------------


def test_a_batch_is_accepted_at_once_and_answered_from_the_active_version(published: str) -> None:
    # One item at a time, so the repeated question finds the first answer in the cache.
    with generating_runtime(published, job_concurrency=1) as (client, fake):
        response = submit(client, QUESTION, "How long is the frame warranty?", QUESTION)
        assert response.status_code == 202, response.text
        accepted = response.json()
        assert accepted["state"] == "queued" and accepted["total"] == 3
        assert response.headers["location"] == accepted["statusUrl"] == f"/v1/jobs/{accepted['jobId']}"

        job = wait_finished(client, accepted["jobId"])
        assert (job["total"], job["done"], job["failed"]) == (3, 3, 0)
        assert job["finishedAt"] and job["expiresAt"] > job["finishedAt"]
        items = job["items"]
        assert [item["position"] for item in items] == [0, 1, 2]
        assert [item["state"] for item in items] == ["done"] * 3
        assert [item["kbVersion"] for item in items] == ["v1"] * 3
        assert [item["attempts"] for item in items] == [1, 1, 1]
        results = [QueryResponse.model_validate(item["result"]) for item in items]
        assert [r.mode for r in results] == ["generated", "generated", "cached"]
        assert results[0].citations[0].document_id == "batteries/error-codes.md"
        assert results[1].citations[0].document_id == "warranty/frame-warranty.md"
        assert all(r.kb_version == "v1" and not r.degraded and r.answer for r in results)
        assert len(fake.requests) == 2  # the cached answer cost nothing

        with psycopg.connect(published) as connection:
            logged = connection.execute("SELECT count(*) FROM ragops.answer_log").fetchone()
            kept_text = connection.execute("SELECT count(*) FROM ragops.job_items WHERE query IS NOT NULL").fetchone()
        assert logged == (3,)  # the cached answer too, at no cost
        assert kept_text == (0,)  # like the answer log, a finished job keeps no query text

        assert metric(client, "ragops_job_duration_seconds_count") == 1
        assert metric(client, "ragops_job_items_total", outcome="done") == 3
        assert metric(client, "ragops_job_item_retries_total", reason="transient") == 0
        deadline = time.monotonic() + 5
        while metric(client, "ragops_jobs_queue_depth", state="queued") or metric(
            client, "ragops_jobs_queue_depth", state="running"
        ):
            assert time.monotonic() < deadline, "the queue-depth gauge never came back to 0"
            time.sleep(0.2)


def test_during_a_canary_a_job_is_answered_by_the_version_its_submitter_gets(published: str, tmp_path: Path) -> None:
    asyncio.run(publish(published, "v2", (canary_corpus(tmp_path),), activate=False))
    canary_client = next(f"team-{n}" for n in range(100) if assign("jobs-1", 50, f"team-{n}") == "canary")
    stable_client = next(f"team-{n}" for n in range(100) if assign("jobs-1", 50, f"team-{n}") == "stable")
    with runtime(published) as client:
        split(published, canary="v2", weight=50, shadow_percent=0, split_id="jobs-1")
        wait_for_traffic(client, {"canaryVersion": "v2", "canaryWeight": 50})
        for submitter, role, version in ((canary_client, "canary", "v2"), (stable_client, "stable", "v1")):
            accepted = submit(client, QUESTION, "How long is the frame warranty?", client_id=submitter).json()
            job = wait_finished(client, accepted["jobId"])
            assert [item["kbVersion"] for item in job["items"]] == [version, version]
            results = [QueryResponse.model_validate(item["result"]) for item in job["items"]]
            assert {(r.role, r.kb_version) for r in results} == {(role, version)}
            # The same client asking interactively gets the same version.
            assert ask(client, client_id=submitter).json()["kbVersion"] == version


def test_submissions_over_a_limit_are_refused_whole_with_the_reason(published: str) -> None:
    with runtime(
        published,
        job_max_queries=6,
        max_query_chars=60,
        job_max_body_bytes=2048,
        requests_per_minute_per_client=5,
        trusted_client_header="X-Client-Id",  # set by an authenticating gateway: one bucket per client
    ) as client:
        too_many = submit(client, *["q"] * 7)
        assert too_many.status_code == 422
        assert "queries" in too_many.json()["error"]["message"] and "6" in too_many.json()["error"]["message"]
        over_bucket = submit(client, *["q"] * 6)
        assert over_bucket.status_code == 422 and over_bucket.json()["error"]["code"] == "job_over_rate_limit"
        too_long = submit(client, "fine", "x" * 61)
        assert too_long.status_code == 422
        assert "queries.1.query" in too_long.json()["error"]["message"]
        assert submit(client).status_code == 422  # no query at all

        big = {"queries": [{"query": "q", "filters": {f"k{i}": "v" * 50 for i in range(40)}}]}
        declared = client.post("/v1/jobs", json=big)
        assert declared.status_code == 413 and declared.json()["error"]["code"] == "body_too_large"
        assert "RAGOPS_JOB_MAX_BODY_BYTES=2048" in declared.json()["error"]["message"]
        chunked = client.post(
            "/v1/jobs",
            content=iter([b'{"queries": [{"query": "', b"y" * 3000, b'"}]}']),
            headers={"Content-Type": "application/json"},
        )
        assert chunked.status_code == 413

        # The client's bucket holds 5: a job of 3 takes 3, a second job of 3 is refused whole...
        assert submit(client, "a", "b", "c", client_id="c1").status_code == 202
        refused = submit(client, "d", "e", "f", client_id="c1")
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limited"
        # ... with the wait until 3 tokens are back (2 are left at 5 per minute: 12 s), and nothing taken:
        assert 11 <= int(refused.headers["retry-after"]) <= 13
        query = {"query": "How long is the frame warranty?"}
        assert [client.post("/v1/query", json=query, headers={"X-Client-Id": "c1"}).status_code for _ in range(3)] == [
            200,
            200,
            429,
        ]
        assert submit(client, "a", client_id="c2").status_code == 202  # other clients are not affected

        unknown = client.get(f"/v1/jobs/{uuid.uuid4()}")
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_job"
        assert client.get("/v1/jobs/not-a-uuid").status_code == 422


def test_transient_generation_failures_are_retried_with_backoff(published: str) -> None:
    with generating_runtime(published, job_retry_base_seconds=0.4, job_max_attempts=4) as (client, fake):
        fake.script(Reply.server_error(503), Reply.rate_limited(retry_after="1"))
        started = time.monotonic()
        job = wait_finished(client, submit(client, QUESTION).json()["jobId"])
        elapsed = time.monotonic() - started
        [item] = job["items"]
        assert (item["state"], item["attempts"]) == ("done", 3)
        assert item["result"]["mode"] == "generated" and not item["result"]["degraded"]
        # Equal jitter waits at least half of the first step (0.4 s); after the 429 the retry waits
        # for the generator's backoff (the Retry-After, 1 s) rather than be refused by it.
        assert elapsed >= 0.2 + 1.0
        assert len(fake.requests) == 3
        assert metric(client, "ragops_job_item_retries_total", reason="transient") == 2


def test_the_last_attempt_keeps_the_degraded_answer(published: str) -> None:
    with generating_runtime(published, job_retry_base_seconds=0.1, job_max_attempts=2) as (client, fake):
        fake.script(Reply.server_error(500), Reply.server_error(500))
        job = wait_finished(client, submit(client, QUESTION).json()["jobId"])
        [item] = job["items"]
        assert (item["state"], item["attempts"]) == ("done", 2)
        assert item["result"]["degraded"] and item["result"]["degradedReason"].startswith("generation upstream_error")
        assert item["result"]["citations"]  # the retrieval-only fallback, as POST /v1/query would answer


def test_items_that_cannot_be_answered_fail_after_their_attempts(pg_dsn: str) -> None:
    # Nothing is active in this database: every attempt is a transient `no_active_version`.
    with runtime(pg_dsn, job_retry_base_seconds=0.1, job_max_attempts=2) as client:
        job = wait_finished(client, submit(client, QUESTION).json()["jobId"])
        assert (job["done"], job["failed"]) == (0, 1)
        [item] = job["items"]
        assert (item["state"], item["attempts"], item["result"]) == ("failed", 2, None)
        assert item["error"].startswith("no_active_version") and item["error"].endswith("(attempt 2 of 2)")
        assert metric(client, "ragops_job_items_total", outcome="failed") == 1
        assert metric(client, "ragops_job_item_retries_total", reason="transient") == 1


def test_finished_jobs_expire_by_retention(published: str) -> None:
    with runtime(published, job_retention_seconds=1) as client:
        job_id = submit(client, QUESTION).json()["jobId"]
        wait_finished(client, job_id)
        deadline = time.monotonic() + 10
        while (gone := client.get(f"/v1/jobs/{job_id}")).status_code == 200:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert gone.status_code == 404 and "RAGOPS_JOB_RETENTION_SECONDS" in gone.json()["error"]["message"]
        deadline = time.monotonic() + 10
        while True:  # and the purge deletes the rows
            with psycopg.connect(published) as connection:
                rows = connection.execute("SELECT count(*) FROM ragops.job_items").fetchone()
            if rows == (0,):
                break
            assert time.monotonic() < deadline, "the finished job was never purged"
            time.sleep(0.2)


# ---- the store's guarantees --------------------------------------------------------------------


def test_a_lost_claim_changes_nothing_and_the_item_completes_once(pg_dsn: str) -> None:
    async def scenario() -> None:
        async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as connection:
            await ensure_jobs_schema(connection)
            job_id = uuid.uuid4()
            await enqueue_job(connection, job_id=job_id, queue="q", client_id="c", items=[NewItem("why?", None, {})])
            [first] = await claim_items(connection, queue="q", worker="w1", limit=5, lease=timedelta(seconds=0.2))
            assert (first.attempts, first.reclaimed) == (1, False)
            assert await claim_items(connection, queue="q", worker="w2", limit=5, lease=timedelta(seconds=5)) == []
            await asyncio.sleep(0.3)  # w1 stops renewing: its lease expires
            [second] = await claim_items(connection, queue="q", worker="w2", limit=5, lease=timedelta(seconds=5))
            assert (second.attempts, second.reclaimed) == (2, True)

            # w1 comes back: nothing it writes about its lost claim counts.
            assert await renew_leases(connection, worker="w1", items=[first], lease=timedelta(seconds=5)) == 0
            assert not await retry_item(connection, first, worker="w1", error="x", delay=timedelta(0))
            assert await finish_item(connection, first, worker="w1", state="done", result={"a": 1}) is None
            done = await finish_item(connection, second, worker="w2", state="done", result={"a": 2}, kb_version="v1")
            assert done is not None and done.job_seconds is not None and done.job_seconds >= 0.3
            assert await finish_item(connection, second, worker="w2", state="done", result={"a": 3}) is None

            cursor = await connection.execute(
                "SELECT state, attempts, result, completed_by, query FROM ragops.job_items WHERE job_id = %s",
                (job_id,),
            )
            assert await cursor.fetchall() == [("done", 2, {"a": 2}, "w2", None)]
            cursor = await connection.execute("SELECT done, failed FROM ragops.jobs WHERE id = %s", (job_id,))
            assert await cursor.fetchone() == (1, 0)

    asyncio.run(scenario())


def test_concurrent_claims_never_share_an_item(pg_dsn: str) -> None:
    async def scenario() -> None:
        async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as connection:
            await ensure_jobs_schema(connection)
            items = [NewItem(f"q{i}", None, {}) for i in range(40)]
            await enqueue_job(connection, job_id=uuid.uuid4(), queue="q", client_id="c", items=items)

        async def claimer(worker: str) -> list[tuple[uuid.UUID, int]]:
            async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as connection:
                claimed = []
                for _ in range(5):
                    batch = await claim_items(connection, queue="q", worker=worker, limit=3, lease=timedelta(60))
                    claimed += [item.key for item in batch]
                return claimed

        claims = await asyncio.gather(*(claimer(f"w{n}") for n in range(4)))
        every = [key for claimed in claims for key in claimed]
        assert len(every) == len(set(every)) == 40

    asyncio.run(scenario())


# ---- a replica killed mid-job ------------------------------------------------------------------


@contextmanager
def replica(dsn: str, pod: str, anthropic_url: str) -> Iterator[tuple[subprocess.Popen[str], httpx.Client]]:
    """A real `ragops serve` process; the caller may kill it, else it is stopped at the end."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAGOPS_", "ANTHROPIC_"))}
    env.update(
        RAGOPS_DSN=dsn,
        RAGOPS_NAMESPACE="test",
        RAGOPS_DEPLOYMENT="docs",
        RAGOPS_POD=pod,
        RAGOPS_ANTHROPIC_API_KEY=DEFAULT_API_KEY,
        RAGOPS_ANTHROPIC_BASE_URL=anthropic_url,
        RAGOPS_GENERATION_TIMEOUT_SECONDS="60",
        RAGOPS_JOB_CONCURRENCY="2",
        RAGOPS_JOB_LEASE_SECONDS="1",
        RAGOPS_JOB_POLL_SECONDS="0.2",
    )
    process = subprocess.Popen(
        [RAGOPS, "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            deadline = time.monotonic() + 60
            while True:
                assert process.poll() is None, process.stdout.read() if process.stdout else ""
                try:
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "replica not ready within 60 s"
                time.sleep(0.1)
            yield process, client
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)


def test_a_replica_killed_mid_job_loses_nothing_and_completes_each_item_once(published: str) -> None:
    with running_anthropic_server() as fake:
        # Replica a answers items 0 and 1, then is killed while waiting on generation for items 2 and 3
        # (the slow replies only need to outlast the moment of the kill).
        fake.script(Reply(), Reply(), Reply.slow(5), Reply.slow(5))
        with replica(published, "replica-a", fake.url) as (process_a, client_a):
            job_id = submit(client_a, *QUESTIONS).json()["jobId"]
            deadline = time.monotonic() + 30
            while len(fake.requests) < 4:
                assert time.monotonic() < deadline, "replica a never reached items 2 and 3"
                time.sleep(0.05)
            progress = client_a.get(f"/v1/jobs/{job_id}").json()
            assert [item["state"] for item in progress["items"]] == [
                "done",
                "done",
                "running",
                "running",
                "queued",
                "queued",
            ]
            process_a.send_signal(signal.SIGKILL)
            process_a.wait(timeout=10)

        with replica(published, "replica-b", fake.url) as (_, client_b):
            job = wait_finished(client_b, job_id)
            assert (job["total"], job["done"], job["failed"]) == (6, 6, 0)
            assert [item["attempts"] for item in job["items"]] == [1, 1, 2, 2, 1, 1]
            assert all(item["kbVersion"] == "v1" and item["result"]["mode"] == "generated" for item in job["items"])
            assert metric(client_b, "ragops_job_item_retries_total", reason="lease_expired") == 2
            assert metric(client_b, "ragops_job_items_total", outcome="done") == 4
            assert metric(client_b, "ragops_job_duration_seconds_count") == 1

        # Each lost item was asked again exactly once: 4 requests from a, 4 from b.
        assert len(fake.requests) == 8
        with psycopg.connect(published) as connection:
            completed_by = connection.execute(
                "SELECT split_part(completed_by, '/', 1) FROM ragops.job_items ORDER BY position"
            ).fetchall()
            logged = connection.execute("SELECT query_id::text FROM ragops.answer_log").fetchall()
        assert [row[0] for row in completed_by] == ["replica-a"] * 2 + ["replica-b"] * 4
        # One answer per item: the answer log holds exactly the answers the job reports, each once.
        assert sorted(row[0] for row in logged) == sorted(item["result"]["queryId"] for item in job["items"])
