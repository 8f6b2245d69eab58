"""The runtime reads chunks from a real streaming replica and never serves a version the replica lacks.

A hot standby of the embedded PostgreSQL (tests/support/replica.py: pg_basebackup -R, pg_ctl)
stands in for a CloudNativePG `-ro` Service. The runtime follows the activation pointer and the
traffic split on the primary and reads chunks on the replica once the replica holds the version;
while replay is paused (a lag as long as the test wants) the new version's chunks are read on the
primary, for a stable switch and for a canary alike; a replica that goes away degrades reads to
the primary, and a primary that goes away leaves the replica's readers answering.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import numpy as np
import psycopg
from pgvector.psycopg import register_vector_async

from ragops_runtime.store import KnowledgeStore
from tests.integration.test_runtime import (
    ask,
    canary_corpus,
    cites_the_canary,
    metric,
    publish,
    runtime,
    split,
    wait_for_traffic,
)
from tests.support.cluster_story import wait_for
from tests.support.podman import postgres_over_tcp
from tests.support.replica import StreamingReplica

FAST = {"cache_ttl_seconds": 0, "requests_per_minute_per_client": 100_000}
"""Every query retrieves (no answer cache) and no client is rate-limited."""


async def read_on(replica_dsn: str, primary_dsn: str, version: str) -> tuple[bool, int]:
    """What a read of `version` finds on the replica: whether it holds it, and how many chunks a search returns."""
    async with await KnowledgeStore.connect(primary_dsn) as primary:
        record = await primary.get_version("sample", version)
    assert record is not None
    async with await psycopg.AsyncConnection.connect(replica_dsn, autocommit=True) as connection:
        await register_vector_async(connection)
        store = KnowledgeStore(connection)
        # Any vector will do: a version with chunks has 5 nearest to it, one without has none.
        found = await store.vector_search(record, np.ones(record.space.dimensions, dtype=np.float32), 5)
        return await store.holds(record), len(found)


def wait_for_active(client: object, version: str) -> None:
    wait_for(
        f"the runtime to serve {version}",
        lambda: client.get("/v1/info").json()["activeVersion"] == version,  # type: ignore[attr-defined]
        timeout=10,
        interval=0.05,
    )


def test_a_version_is_read_on_the_replica_only_once_the_replica_holds_it(
    pg_dsn: str, streaming_replica: StreamingReplica, tmp_path: Path
) -> None:
    asyncio.run(publish(pg_dsn, "v1"))
    streaming_replica.catch_up()
    replica_dsn = streaming_replica.dsn(pg_dsn)
    with runtime(pg_dsn, read_only_dsn=replica_dsn, **FAST) as client:
        assert ask(client).json()["kbVersion"] == "v1"
        assert metric(client, "ragops_replica_reads_total", outcome="replica") == 1
        assert metric(client, "ragops_replica_up") == 1
        ready = client.get("/readyz").json()
        assert (ready["status"], ready["reads"]) == ("ready", "replica")

        streaming_replica.pause_replay()
        asyncio.run(publish(pg_dsn, "v2", (canary_corpus(tmp_path),)))  # built, gated and activated on the primary
        wait_for_active(client, "v2")
        # What a replica-reading runtime without the rule would do: read v2 where it is not, and find nothing.
        assert asyncio.run(read_on(replica_dsn, pg_dsn, "v2")) == (False, 0)

        lagging = [ask(client, client_id=f"c{number}").json() for number in range(5)]
        assert all(body["kbVersion"] == "v2" and cites_the_canary(body) for body in lagging), lagging
        assert metric(client, "ragops_replica_reads_total", outcome="lag") == 5
        assert metric(client, "ragops_replica_reads_total", outcome="replica") == 1

        streaming_replica.resume_replay()
        streaming_replica.catch_up()
        assert asyncio.run(read_on(replica_dsn, pg_dsn, "v2"))[0] is True
        caught_up = ask(client).json()
        assert caught_up["kbVersion"] == "v2" and cites_the_canary(caught_up)
        assert metric(client, "ragops_replica_reads_total", outcome="replica") == 2
        assert metric(client, "ragops_replica_reads_total", outcome="lag") == 5


def test_a_canary_the_replica_has_not_replayed_is_read_on_the_primary(
    pg_dsn: str, streaming_replica: StreamingReplica, tmp_path: Path
) -> None:
    asyncio.run(publish(pg_dsn, "v1"))
    streaming_replica.catch_up()
    with runtime(pg_dsn, read_only_dsn=streaming_replica.dsn(pg_dsn), **FAST) as client:
        streaming_replica.pause_replay()
        asyncio.run(publish(pg_dsn, "v2", (canary_corpus(tmp_path),), activate=False))
        split(pg_dsn, canary="v2", weight=50, shadow_percent=100, split_id="replica-lag")
        wait_for_traffic(client, {"canaryVersion": "v2", "canaryWeight": 50, "shadowPercent": 100})

        roles = {"stable": 0, "canary": 0}
        for number in range(30):
            body = ask(client, client_id=f"client-{number}").json()
            assert body["kbVersion"] == ("v2" if body["role"] == "canary" else "v1"), body
            # The candidate answers with its own chunks, never with the nothing the replica holds of it.
            assert cites_the_canary(body) == (body["role"] == "canary"), body
            roles[body["role"]] += 1
        assert roles["stable"] > 5 and roles["canary"] > 5, roles
        wait_for(
            "the shadow retrievals on the candidate to finish",
            lambda: metric(client, "ragops_shadow_queries_total", kb_version="v2") == roles["stable"],
            timeout=10,
            interval=0.05,
        )
        shadows = metric(client, "ragops_shadow_queries_total", kb_version="v2", outcome="ok")
        assert shadows >= 1
        assert metric(client, "ragops_shadow_queries_total", kb_version="v2", outcome="empty") == 0
        # Stable's chunks came from the replica; the candidate's (canary answers and shadows) from the primary.
        assert metric(client, "ragops_replica_reads_total", outcome="replica") == roles["stable"]
        assert metric(client, "ragops_replica_reads_total", outcome="lag") == roles["canary"] + shadows

        streaming_replica.resume_replay()
        streaming_replica.catch_up()
        canary_client = next(
            f"client-{n}" for n in range(30) if ask(client, client_id=f"client-{n}").json()["role"] == "canary"
        )
        before = metric(client, "ragops_replica_reads_total", outcome="lag")
        body = ask(client, client_id=canary_client).json()
        assert (body["role"], body["kbVersion"], cites_the_canary(body)) == ("canary", "v2", True)
        assert metric(client, "ragops_replica_reads_total", outcome="lag") == before


def test_a_replica_that_goes_away_degrades_reads_to_the_primary_until_it_is_back(
    pg_dsn: str, streaming_replica: StreamingReplica
) -> None:
    asyncio.run(publish(pg_dsn, "v1"))
    streaming_replica.catch_up()
    with runtime(pg_dsn, read_only_dsn=streaming_replica.dsn(pg_dsn), database_timeout_seconds=0.5, **FAST) as client:
        assert ask(client).status_code == 200
        streaming_replica.stop()
        answers = [ask(client, client_id=f"c{number}") for number in range(5)]
        assert [(r.status_code, r.json()["kbVersion"]) for r in answers] == [(200, "v1")] * 5
        assert all(r.json()["citations"] for r in answers)
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["reads"].startswith("primary: the read-only replica is unavailable (")
        assert client.get("/v1/info").json()["reads"] == ready.json()["reads"]
        assert metric(client, "ragops_replica_up") == 0
        assert metric(client, "ragops_replica_reads_total", outcome="unavailable") == 5

        streaming_replica.start()
        wait_for("reads on the replica again", lambda: client.get("/readyz").json()["reads"] == "replica", timeout=20)
        before = metric(client, "ragops_replica_reads_total", outcome="replica")
        assert ask(client).status_code == 200
        assert metric(client, "ragops_replica_reads_total", outcome="replica") == before + 1
        assert metric(client, "ragops_replica_up") == 1


def logged_ids(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as connection:
        return {row[0] for row in connection.execute("SELECT query_id::text FROM ragops.answer_log")}


def test_a_primary_that_goes_away_leaves_the_replica_readers_answering(
    pg_dsn: str, streaming_replica: StreamingReplica
) -> None:
    asyncio.run(publish(pg_dsn, "v1"))
    streaming_replica.catch_up()
    # The runtime reaches the primary through a TCP forwarder: closing it takes the primary away from
    # this runtime only (the shared server keeps running for every other test).
    forwarder: contextlib.AbstractContextManager[str] | None = postgres_over_tcp(pg_dsn)
    assert forwarder is not None
    primary = forwarder.__enter__()
    try:
        with runtime(
            primary, read_only_dsn=streaming_replica.dsn(pg_dsn), database_timeout_seconds=0.5, **FAST
        ) as client:
            first = ask(client).json()
            assert first["kbVersion"] == "v1"
            wait_for("the first answer's log row", lambda: logged_ids(pg_dsn) >= {first["queryId"]}, timeout=10)
            forwarder.__exit__(None, None, None)
            forwarder = None
            answers = [ask(client, client_id=f"c{number}") for number in range(3)]
            assert [(r.status_code, r.json()["kbVersion"]) for r in answers] == [(200, "v1")] * 3
            assert metric(client, "ragops_replica_reads_total", outcome="replica") == 4
            ready = client.get("/readyz")
            assert ready.status_code == 200 and ready.json()["reads"] == "replica", ready.text
            # What needs the primary says so: the answer log's rows wait in its writer's queue (each counted
            # once as deferred, written when the primary is back, lost only if the replica stops first),
            # feedback is refused.
            wait_for(
                "the answer log's rows deferred",
                lambda: metric(client, "ragops_degraded_total", reason="answer_log_unavailable") >= 3,
                timeout=10,
            )
            assert metric(client, "ragops_degraded_total", reason="answer_log_unavailable") == 3
            assert metric(client, "ragops_degraded_total", reason="answer_log_dropped") == 0
            assert not logged_ids(pg_dsn) & {answer.json()["queryId"] for answer in answers}
            rated = client.post("/v1/feedback", json={"queryId": answers[0].json()["queryId"], "thumbs": "up"})
            assert rated.status_code == 503 and rated.json()["error"]["code"] == "database_unavailable"
    finally:
        if forwarder is not None:
            forwarder.__exit__(None, None, None)
