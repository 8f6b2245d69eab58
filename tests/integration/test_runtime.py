"""The runtime served for real over real PostgreSQL + pgvector, with the Anthropic double.

Covers answers and their modes, degraded fallbacks, streaming, feedback, the protection limits,
the cache across a version switch, a switch under load, the database going away and coming
back, the metrics exposition (promtool), and progressive delivery: a canary's sticky share with
its own citations, cache and log, shadow retrieval off the response path, a candidate in another
embedding space served side by side, and golden probes from one replica at a time.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ragops_runtime import sample
from ragops_runtime.app import create_app
from ragops_runtime.kb.build import BuildRequest, EmbeddingSettings, build_version
from ragops_runtime.kb.evaluation import Thresholds
from ragops_runtime.kb.gate import evaluate_version
from ragops_runtime.rollout import assign
from ragops_runtime.settings import RuntimeSettings
from ragops_runtime.store import KnowledgeStore, ProbePlan, ProbeQuery
from ragops_runtime.store.embedded import start_embedded
from tests.support.anthropic_messages import DEFAULT_API_KEY, FakeAnthropic, Reply, running_anthropic_server
from tests.support.cluster_story import wait_for
from tests.support.runtime_server import serving

QUESTION = "What does error code E07 on the display mean?"


async def publish(
    dsn: str, version: str, sources: tuple[str, ...] = (str(sample.CORPUS_DIR),), *, activate: bool = True
) -> None:
    """Builds, gates and (unless told not to: a candidate) activates a version of the sample knowledge base."""
    async with await KnowledgeStore.connect(dsn) as store:
        await build_version(store, BuildRequest("sample", version, sources))
        await evaluate_version(
            store,
            "sample",
            version,
            sample.GOLDEN_SET,
            k=sample.GATE_K,
            thresholds=Thresholds(**sample.GATE_THRESHOLDS),
        )
        if activate:
            await store.activate("sample", version)


def settings_for(dsn: str, **overrides: Any) -> RuntimeSettings:
    values: dict[str, Any] = {
        "dsn": dsn,
        "knowledge_base": "sample",
        "deployment": "docs",
        "namespace": "test",
        "pod": "docs-0",
        "anthropic_api_key": None,
        "version_poll_seconds": 0.2,
    }
    values.update(overrides)
    return RuntimeSettings(**values)


@pytest.fixture
def published(pg_dsn: str) -> str:
    asyncio.run(publish(pg_dsn, "v1"))
    return pg_dsn


@contextmanager
def runtime(dsn: str, **overrides: Any) -> Iterator[httpx.Client]:
    with (
        serving(create_app(settings_for(dsn, **overrides), dsn=dsn)) as url,
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        yield client


@contextmanager
def generating_runtime(dsn: str, **overrides: Any) -> Iterator[tuple[httpx.Client, FakeAnthropic]]:
    with (
        running_anthropic_server() as fake,
        runtime(dsn, anthropic_api_key=DEFAULT_API_KEY, anthropic_base_url=fake.url, **overrides) as client,
    ):
        yield client, fake


def ask(client: httpx.Client, query: str = QUESTION, *, client_id: str = "t", **body: Any) -> httpx.Response:
    return client.post("/v1/query", json={"query": query, **body}, headers={"X-Client-Id": client_id})


def test_retrieval_only_without_a_key_is_by_design_not_degraded(published: str) -> None:
    with runtime(published) as client:
        response = ask(client)
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["mode"], body["degraded"], body["answer"], body["kbVersion"]) == (
            "retrieval_only",
            False,
            None,
            "v1",
        )
        assert body["citations"][0]["documentId"] == "batteries/error-codes.md"
        assert set(body["timingsMs"]) >= {"embed", "retrieve", "total"}
        assert response.headers["x-request-id"]
        info = client.get("/v1/info").json()
        assert info["activeVersion"] == "v1" and info["manifest"]["documents"] == 22
        assert info["generation"].startswith("disabled: no Anthropic API key")


def test_generated_answer_cites_context_and_costs_money(published: str) -> None:
    with generating_runtime(published) as (client, fake):
        body = ask(client).json()
        assert body["mode"] == "generated" and not body["degraded"]
        assert "[1]" in body["answer"]
        assert body["usage"]["inputTokens"] > 0 and body["usage"]["outputTokens"] > 0
        expected = (body["usage"]["inputTokens"] * 3 + body["usage"]["outputTokens"] * 15) / 1e6
        assert body["costUsd"] == pytest.approx(expected)
        request = fake.requests[-1]
        assert "E07" in request.user_text and "[1]" in request.user_text
        assert "only" in request.system.lower()

        def logged() -> Any:
            with psycopg.connect(published) as connection:
                return connection.execute(
                    "SELECT version, mode, document_ids, cost_usd FROM ragops.answer_log WHERE query_id = %s",
                    (body["queryId"],),
                ).fetchone()

        # The answer log is written in the background, off the response path, within moments.
        row = wait_for("the answer's log row", logged, timeout=5, interval=0.05)
        assert row[0] == "v1" and row[1] == "generated" and row[2][0] == "batteries/error-codes.md"

        assert client.post("/v1/feedback", json={"queryId": body["queryId"], "thumbs": "up"}).status_code == 204
        again = client.post("/v1/feedback", json={"queryId": body["queryId"], "rating": 0.5})
        assert again.status_code == 409 and again.json()["error"]["code"] == "already_rated"  # the first one stands
        # A subnormal rating is valid JSON within [0, 1]; PostgreSQL's `real` would underflow on it (schemathesis).
        other = ask(client, "How long is the frame warranty?").json()
        assert client.post("/v1/feedback", json={"queryId": other["queryId"], "rating": 1e-310}).status_code == 204
        unknown = client.post("/v1/feedback", json={"queryId": "00000000-0000-0000-0000-000000000000", "rating": 1})
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_query"
        both = client.post("/v1/feedback", json={"queryId": body["queryId"], "rating": 1, "thumbs": "up"})
        assert both.status_code == 422 and "exactly one of rating and thumbs" in both.json()["error"]["message"]
        assert client.get("/v1/info").json()["satisfaction24h"] == 0.5


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (Reply.rate_limited(retry_after="30"), "generation rate_limited"),
        (Reply.server_error(500), "generation upstream_error"),
        (Reply.overloaded(), "generation overloaded"),
        (Reply.malformed(), "generation malformed_response"),
        (Reply.slow(3.0), "generation timeout"),
    ],
)
def test_generation_failures_answer_retrieval_only_and_say_so(published: str, reply: Reply, reason: str) -> None:
    with generating_runtime(published, generation_timeout_seconds=0.5) as (client, fake):
        fake.script(reply)
        started = time.monotonic()
        body = ask(client).json()
        assert time.monotonic() - started < 2.5
        assert body["mode"] == "retrieval_only" and body["degraded"] is True
        assert body["degradedReason"].startswith(reason) and body["citations"]
        # A degraded answer is never cached: the next question is answered afresh.
        second = ask(client).json()
        assert second["mode"] != "cached"


def test_upstream_rate_limit_is_respected_with_backoff(published: str) -> None:
    with generating_runtime(published) as (client, fake):
        fake.script(Reply.rate_limited(retry_after="30"))
        assert ask(client).json()["degradedReason"].startswith("generation rate_limited")
        calls = len(fake.requests)
        backing_off = ask(client, "How long is the frame warranty?").json()
        assert backing_off["degradedReason"].startswith("generation backing_off")
        assert len(fake.requests) == calls  # no request reached the API while backing off


def test_streaming_sends_retrieval_then_deltas_then_summary(published: str) -> None:
    with generating_runtime(published) as (client, _fake):
        with client.stream("POST", "/v1/query", json={"query": QUESTION, "stream": True}) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            events = [
                (block.split("\n")[0].removeprefix("event: "), json.loads(block.split("\n")[1][6:]))
                for block in response.read().decode().strip().split("\n\n")
            ]
        kinds = [kind for kind, _ in events]
        assert kinds[0] == "retrieval" and kinds[-1] == "done" and kinds.count("delta") >= 2
        assert events[0][1]["citations"][0]["documentId"] == "batteries/error-codes.md"
        streamed = "".join(data["text"] for kind, data in events if kind == "delta")
        assert events[-1][1]["answer"] == streamed and events[-1][1]["mode"] == "generated"


def test_a_stalled_stream_ends_with_a_degraded_summary(published: str) -> None:
    with generating_runtime(published, generation_timeout_seconds=1) as (client, fake):
        fake.script(Reply.stall_stream_after(2))
        with client.stream("POST", "/v1/query", json={"query": QUESTION, "stream": True}) as response:
            blocks = response.read().decode().strip().split("\n\n")
        done = json.loads(blocks[-1].split("\n")[1][6:])
        assert done["degraded"] is True and done["degradedReason"].startswith("generation timeout")


def test_bad_queries_get_4xx_with_a_reason(published: str) -> None:
    with runtime(published, max_query_chars=50) as client:
        long = ask(client, "x" * 51)
        assert long.status_code == 422
        assert long.json()["error"]["message"] == "query: String should have at most 50 characters"
        documented = client.get("/openapi.json").json()["components"]["schemas"]["QueryRequest"]
        assert documented["properties"]["query"]["maxLength"] == 50
        empty = client.post("/v1/query", json={"query": ""})
        assert empty.status_code == 422 and empty.json()["error"]["message"].startswith("query:")
        unknown = client.post("/v1/query", json={"query": "brakes", "topK": 0})
        assert unknown.status_code == 422 and "topK" in unknown.json()["error"]["message"]
        nul = client.post("/v1/query", json={"query": "brakes\u0000"})
        assert nul.status_code == 422 and nul.json()["error"]["message"].startswith(
            "query: String should match pattern"
        )
        typo = client.post("/v1/query", json={"query": "brakes", "top_kk": 3})
        assert typo.status_code == 422 and "top_kk" in typo.json()["error"]["message"]


def test_rate_limit_per_client_answers_429_with_retry_after(published: str) -> None:
    # X-Client-Id as the trusted header: a gateway in front authenticates callers and sets it.
    with runtime(published, requests_per_minute_per_client=2, trusted_client_header="X-Client-Id") as client:
        assert ask(client, client_id="a").status_code == 200
        assert ask(client, client_id="a").status_code == 200
        limited = ask(client, client_id="a")
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        assert limited.json()["error"]["code"] == "rate_limited"
        assert ask(client, client_id="b").status_code == 200


def test_saturated_runtime_answers_503_fast(published: str) -> None:
    with generating_runtime(published, max_concurrent_requests=1) as (client, fake):
        fake.script(Reply.slow(2.0))
        with ThreadPoolExecutor(2) as pool:
            slow = pool.submit(ask, client)
            time.sleep(0.5)
            started = time.monotonic()
            refused = ask(client, "How do I adjust the brakes?")
            assert time.monotonic() - started < 0.5
            assert refused.status_code == 503 and refused.json()["error"]["code"] == "saturated"
            assert slow.result().status_code == 200


def test_metadata_filters_restrict_the_passages(pg_dsn: str, tmp_path: Path) -> None:
    records = tmp_path / "notes.jsonl"
    records.write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {"id": "a", "text": "Brake pads wear out on long descents.", "metadata": {"team": "service"}},
                {"id": "b", "text": "Brake levers are adjusted with a 3 mm key.", "metadata": {"team": "assembly"}},
            ]
        )
        + "\n"
    )

    async def build() -> None:
        async with await KnowledgeStore.connect(pg_dsn) as store:
            await build_version(store, BuildRequest("sample", "notes", (str(records),)))
            await store.activate("sample", "notes", force=True)

    asyncio.run(build())
    with runtime(pg_dsn) as client:
        everything = ask(client, "brake").json()["citations"]
        assert {c["documentId"] for c in everything} == {"a", "b"}
        filtered = ask(client, "brake", filters={"team": "assembly"}).json()["citations"]
        assert [c["documentId"] for c in filtered] == ["b"]


def test_cache_hits_and_a_switch_never_serves_the_old_version(published: str, tmp_path: Path) -> None:
    with runtime(published) as client:
        assert ask(client).json()["mode"] == "retrieval_only"
        cached = ask(client).json()
        assert cached["mode"] == "cached" and cached["kbVersion"] == "v1"
        edited = tmp_path / "corpus"
        shutil.copytree(sample.CORPUS_DIR, edited)
        codes = edited / "batteries" / "error-codes.md"
        codes.write_text(codes.read_text() + "\n\n## Update\n\nE07 now also appears after a firmware update.\n")
        asyncio.run(publish(published, "v2", (str(edited),)))
        switched_at = time.monotonic()
        while (body := ask(client).json())["kbVersion"] != "v2":
            assert time.monotonic() - switched_at < 1.0, "the switch took longer than a second"
            assert body["kbVersion"] == "v1"
            time.sleep(0.05)
        assert body["mode"] == "retrieval_only"  # not the cached v1 answer
        assert client.get("/readyz").json()["activeVersion"] == "v2"


def test_version_switch_under_load_has_no_errors(published: str) -> None:
    with runtime(published, requests_per_minute_per_client=100_000) as client:
        statuses: list[tuple[int, str]] = []
        stop = threading.Event()

        def hammer(worker: int) -> None:
            number = 0
            while not stop.is_set():
                number += 1
                response = ask(client, f"battery charging question {worker}-{number}")
                statuses.append((response.status_code, response.json().get("kbVersion", "")))

        with ThreadPoolExecutor(4) as pool:
            for worker in range(4):
                pool.submit(hammer, worker)
            time.sleep(0.5)
            asyncio.run(publish(published, "v2"))
            time.sleep(1.5)
            stop.set()
        assert statuses and all(status == 200 for status, _ in statuses), {s for s, _ in statuses}
        versions = [version for _, version in statuses]
        assert versions[0] == "v1" and versions[-1] == "v2"
        assert set(versions) == {"v1", "v2"}


def test_readyz_says_why_when_nothing_is_active(pg_dsn: str) -> None:
    with runtime(pg_dsn) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["error"] == {
            "code": "no_active_version",
            "message": "knowledge base 'sample' has no active version",
        }
        refused = ask(client)
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "no_active_version"
        assert client.get("/healthz").status_code == 200


def test_database_outage_is_a_503_and_recovers_by_itself() -> None:
    directory = Path(tempfile.mkdtemp(prefix="ragops-outage-"))
    directory.chmod(0o755)
    server = start_embedded(directory)
    dsn = server.get_uri()
    try:
        asyncio.run(publish(dsn, "v1"))
        with runtime(dsn, database_timeout_seconds=0.5, cache_ttl_seconds=0) as client:
            assert ask(client).status_code == 200
            server.cleanup()  # stops PostgreSQL
            down = ask(client, "How long is the frame warranty?")
            assert down.status_code == 503 and down.json()["error"]["code"] == "database_unavailable"
            assert "retry-after" in down.headers
            ready = client.get("/readyz")
            assert ready.status_code == 503 and ready.json()["error"]["code"] == "database_unavailable"

            server = start_embedded(directory)  # same data directory, same socket
            deadline = time.monotonic() + 20
            while (response := ask(client, "How long is the frame warranty?")).status_code != 200:
                assert time.monotonic() < deadline, response.text
                time.sleep(0.2)
            assert response.json()["kbVersion"] == "v1"
            assert client.get("/readyz").status_code == 200
    finally:
        server.cleanup()
        shutil.rmtree(directory, ignore_errors=True)


def test_metrics_pass_promtool_and_carry_the_deployment_identity(published: str) -> None:
    with generating_runtime(published, requests_per_minute_per_client=3) as (client, fake):
        body = ask(client).json()
        ask(client)  # cached
        fake.script(Reply.server_error(500))
        ask(client, "How do I fix a puncture?")
        ask(client, "more")
        client.post("/v1/feedback", json={"queryId": body["queryId"], "rating": 0.8})
        exposition = client.get("/metrics")
        assert exposition.status_code == 200
    text = exposition.text
    check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    assert check.returncode == 0 and check.stdout.strip() == "" and check.stderr.strip() == "", check.stdout
    identity = {"namespace": "test", "deployment": "docs", "pod": "docs-0"}
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }

    def value(name: str, **labels: str) -> float | None:
        return samples.get((name, tuple(sorted({**identity, **labels}.items()))))

    served = {"kb_version": "v1", "role": "stable"}
    assert value("ragops_queries_total", mode="generated", status="ok", **served) == 1
    assert value("ragops_queries_total", mode="cached", status="ok", **served) == 1
    assert value("ragops_queries_total", mode="retrieval_only", status="degraded", **served) == 1
    assert value("ragops_queries_total", mode="none", status="error", **served) == 0  # exists before the first
    assert value("ragops_rate_limited_total") == 1
    assert value("ragops_cache_hits_total") == 1
    assert value("ragops_feedback_score_count", **served) == 1
    assert value("ragops_active_knowledge_base_info", knowledge_base="sample", version="v1") == 1
    assert value("ragops_llm_tokens_total", direction="input", **served) == body["usage"]["inputTokens"]
    assert value("ragops_degraded_total", reason="generation_upstream_error", **served) == 1
    assert all(dict(labels).keys() >= identity.keys() for (_, labels) in samples)


def test_reranker_reorders_and_a_failing_one_keeps_the_retrieval_order(published: str) -> None:
    from tests.support.rerank_server import Reply as RerankReply
    from tests.support.rerank_server import running_rerank_server

    with (
        running_rerank_server() as reranker,
        runtime(
            published,
            reranker_provider="http",
            reranker_endpoint=f"{reranker.url}/rerank",
            reranker_timeout_ms=500,
            cache_ttl_seconds=0,
        ) as client,
    ):
        ranked = ask(client, "charge the battery in winter").json()
        assert not ranked["degraded"] and "rerank" in ranked["timingsMs"]
        sent = reranker.requests[-1].body
        assert sent["query"] == "charge the battery in winter" and len(sent["documents"]) == 20
        scores = [c["score"] for c in ranked["citations"]]
        assert scores == sorted(scores, reverse=True) and len(scores) == 5

        reranker.script(RerankReply.server_error(503))
        fallback = ask(client, "charge the battery in winter").json()
        assert fallback["degraded"] and fallback["degradedReason"].startswith("reranker http_status")
        assert len(fallback["citations"]) == 5


def test_queries_are_embedded_by_the_versions_openai_compatible_endpoint(pg_dsn: str, tmp_path: Path) -> None:
    from tests.support.openai_embeddings import Reply as EmbeddingReply
    from tests.support.openai_embeddings import running_openai_embeddings_server

    with running_openai_embeddings_server(32) as embeddings:

        async def build() -> None:
            async with await KnowledgeStore.connect(pg_dsn) as store:
                request = BuildRequest(
                    "sample",
                    "semantic",
                    (str(sample.CORPUS_DIR),),
                    embedding=EmbeddingSettings(provider="openai", model="emb", dimensions=32, endpoint=embeddings.url),
                )
                await build_version(store, request, api_key="sk-test")
                await store.activate("sample", "semantic", force=True)

        asyncio.run(build())
        with runtime(pg_dsn, embedding_api_key="sk-test", retrieval_timeout_ms=300) as client:
            before = len(embeddings.requests)
            assert ask(client, "frame warranty").status_code == 200
            assert ask(client, "frame warranty", topK=10).status_code == 200  # the query vector is cached
            assert [r.inputs for r in embeddings.requests[before:]] == [["frame warranty"]]
            assert embeddings.requests[-1].headers["authorization"] == "Bearer sk-test"

            embeddings.script(EmbeddingReply.slow(2.0))
            slow = ask(client, "tyre pressure")
            assert slow.status_code == 503 and slow.json()["error"]["code"] == "retrieval_timeout"
            assert "retrieval took longer than 300 ms" in slow.json()["error"]["message"]


# ---- progressive delivery ----------------------------------------------------------------------

CANARY_TEXT = "E07 also flashes while the canary firmware calibrates the torque sensor."


def canary_corpus(tmp_path: Path) -> str:
    """The sample corpus with one edited document: what only the candidate can cite."""
    edited = tmp_path / "canary-corpus"
    shutil.copytree(sample.CORPUS_DIR, edited)
    codes = edited / "batteries" / "error-codes.md"
    codes.write_text(codes.read_text() + f"\n\n## Display error E07 after an update\n\n{CANARY_TEXT}\n")
    return str(edited)


def split(dsn: str, **traffic: Any) -> None:
    async def change() -> None:
        async with await KnowledgeStore.connect(dsn) as store:
            if traffic:
                await store.set_traffic("sample", **traffic)
            else:
                await store.clear_traffic("sample", reason="test")

    asyncio.run(change())


def wait_for_traffic(client: httpx.Client, expected: dict[str, Any] | None) -> None:
    """Until /v1/info shows the split (the keys of `expected`), or no split for None."""

    def shown() -> bool:
        traffic = client.get("/v1/info").json()["traffic"]
        if expected is None:
            return traffic is None
        return traffic is not None and all(traffic[key] == value for key, value in expected.items())

    wait_for(f"the runtime to apply the split {expected}", shown, timeout=5, interval=0.02)


def metric_values(client: httpx.Client, name: str) -> list[tuple[dict[str, str], float]]:
    text = client.get("/metrics").text
    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


def metric(client: httpx.Client, name: str, **labels: str) -> float:
    """The sum of `name` over the series whose labels include `labels`."""
    return sum(value for found, value in metric_values(client, name) if labels.items() <= found.items())


def cites_the_canary(body: dict[str, Any]) -> bool:
    return any(CANARY_TEXT in citation["text"] for citation in body["citations"])


def test_a_canary_answers_its_clients_stickily_from_its_own_version_cache_and_log(
    published: str, tmp_path: Path
) -> None:
    asyncio.run(publish(published, "v2", (canary_corpus(tmp_path),), activate=False))
    with generating_runtime(published, requests_per_minute_per_client=100_000) as (client, fake):
        split(published, canary="v2", weight=30, shadow_percent=0, split_id="rollout-1/step-0")
        wait_for_traffic(client, {"canaryVersion": "v2", "canaryWeight": 30, "splitId": "rollout-1/step-0"})
        assert client.get("/readyz").json()["traffic"]["canaryWeight"] == 30
        clients = [f"client-{number}" for number in range(300)]
        served: dict[str, str] = {}
        modes: dict[str, set[str]] = {"stable": set(), "canary": set()}
        for client_id in clients:
            response = ask(client, client_id=client_id)
            body = response.json()
            assert response.status_code == 200, body
            role = assign("rollout-1/step-0", 30, client_id)
            assert (body["role"], body["kbVersion"]) == (role, "v2" if role == "canary" else "v1")
            assert (response.headers["x-ragops-role"], response.headers["x-ragops-kb-version"]) == (
                body["role"],
                body["kbVersion"],
            )
            # Citations from the version that answered only, cached or not.
            assert cites_the_canary(body) == (role == "canary"), body["citations"]
            served[client_id] = body["role"]
            modes[role].add(body["mode"])
        share = sum(role == "canary" for role in served.values()) / len(served)
        assert 0.2 < share < 0.4
        # Each version's answer was generated once and then served from the cache keyed by its version:
        # a cached stable answer was never served to a canary client, nor the other way round.
        assert modes == {"stable": {"generated", "cached"}, "canary": {"generated", "cached"}}
        assert len(fake.requests) == 2
        # Sticky: the same clients again get the same versions.
        assert all(ask(client, client_id=c).json()["role"] == served[c] for c in clients[:40])

        canary_client = next(c for c in clients if served[c] == "canary")
        with client.stream(
            "POST", "/v1/query", json={"query": QUESTION, "stream": True}, headers={"X-Client-Id": canary_client}
        ) as response:
            assert (response.headers["x-ragops-role"], response.headers["x-ragops-kb-version"]) == ("canary", "v2")
            first = json.loads(response.read().decode().split("\n\n")[0].split("\n")[1][6:])
        assert (first["role"], first["kbVersion"]) == ("canary", "v2")

        # Feedback counts for the version and role that answered.
        rated = ask(client, "How do I read the battery error codes?", client_id=canary_client).json()
        assert rated["mode"] == "generated" and rated["role"] == "canary"
        assert client.post("/v1/feedback", json={"queryId": rated["queryId"], "rating": 0.25}).status_code == 204
        assert metric(client, "ragops_feedback_score_sum", kb_version="v2", role="canary") == 0.25
        assert metric(client, "ragops_feedback_score_count", kb_version="v1", role="stable") == 0
        with psycopg.connect(published) as connection:
            logged = connection.execute(
                "SELECT version, role, count(*) FROM ragops.answer_log GROUP BY version, role ORDER BY version"
            ).fetchall()
        # The loop, the sticky check, the stream and the rated question: every canary answer counted as such,
        # and logged (the cached ones too: they can be rated).
        canary_answers = [served[c] for c in clients + clients[:40]].count("canary") + 2
        stable_answers = [served[c] for c in clients + clients[:40]].count("stable")
        assert logged == [("v1", "stable", stable_answers), ("v2", "canary", canary_answers)]
        assert metric(client, "ragops_queries_total", kb_version="v2", role="canary") == canary_answers

        # Abort: every client is back on stable at once.
        split(published)
        wait_for_traffic(client, None)
        again = ask(client, client_id=canary_client).json()
        assert (again["role"], again["kbVersion"], cites_the_canary(again)) == ("stable", "v1", False)


def semantic_candidate(dsn: str, embeddings_url: str) -> None:
    """A gated candidate embedded by another model in another dimension (the OpenAI-compatible double)."""

    async def build() -> None:
        async with await KnowledgeStore.connect(dsn) as store:
            request = BuildRequest(
                "sample",
                "semantic",
                (str(sample.CORPUS_DIR),),
                embedding=EmbeddingSettings(provider="openai", model="emb", dimensions=32, endpoint=embeddings_url),
            )
            await build_version(store, request, api_key="sk-test")
            # The double's vectors are not semantic: the gate here only has to be run, not met.
            zero = Thresholds(precision_at_k=0, recall_at_k=0, mrr=0, ndcg_at_k=0)
            await evaluate_version(
                store, "sample", "semantic", sample.GOLDEN_SET, k=sample.GATE_K, thresholds=zero, api_key="sk-test"
            )

    asyncio.run(build())


def test_shadow_retrieval_runs_off_the_response_path_and_is_never_shown(published: str) -> None:
    from tests.support.openai_embeddings import Reply as EmbeddingReply
    from tests.support.openai_embeddings import running_openai_embeddings_server

    with running_openai_embeddings_server(32) as embeddings:
        semantic_candidate(published, embeddings.url)
        with generating_runtime(published, embedding_api_key="sk-test", shadow_max_concurrency=2) as (client, fake):
            split(published, canary="semantic", weight=0, shadow_percent=100, split_id="shadow-1")
            wait_for_traffic(client, {"canaryVersion": "semantic", "canaryWeight": 0, "shadowPercent": 100})
            before = len(embeddings.requests)
            embeddings.script(*[EmbeddingReply.slow(1.2)] * 6)  # the candidate embeds slowly (within its budget)
            questions = [f"battery error code E0{number}" for number in range(1, 7)]
            for question in questions:
                started = time.monotonic()
                body = ask(client, question).json()
                # The user never waits for the 1.2 s shadow, and never sees it.
                assert time.monotonic() - started < 0.8
                assert (body["role"], body["kbVersion"], body["mode"]) == ("stable", "v1", "generated")
            wait_for(
                "the shadows to finish",
                lambda: metric(client, "ragops_shadow_queries_total", kb_version="semantic") == 6,
                timeout=10,
                interval=0.1,
            )
            # Two ran (the bound), four were dropped and counted; none generated (one LLM call per question).
            assert metric(client, "ragops_shadow_queries_total", kb_version="semantic", outcome="ok") == 2
            assert metric(client, "ragops_shadow_queries_total", kb_version="semantic", outcome="dropped") == 4
            assert len(fake.requests) == 6
            assert len(embeddings.requests) - before == 2
            duration = metric(client, "ragops_query_duration_seconds_sum", kb_version="semantic", role="shadow")
            assert duration >= 2.4
            for level in ("chunk", "document"):
                for measure in ("jaccard", "rbo"):
                    labels = {"kb_version": "semantic", "role": "shadow", "level": level, "measure": measure}
                    assert metric(client, "ragops_shadow_overlap_count", **labels) == 2
            assert metric(client, "ragops_queries_total", role="canary") == 0
        with psycopg.connect(published) as connection:
            logged = connection.execute(
                "SELECT version, role, count(*) FROM ragops.answer_log GROUP BY 1, 2"
            ).fetchall()
        assert logged == [("v1", "stable", 6)]


def test_a_candidate_with_another_embedding_model_is_served_side_by_side_and_promoted(published: str) -> None:
    from tests.support.openai_embeddings import running_openai_embeddings_server

    with running_openai_embeddings_server(32) as embeddings:
        semantic_candidate(published, embeddings.url)
        with runtime(published, embedding_api_key="sk-test", cache_ttl_seconds=0) as client:
            split(published, canary="semantic", weight=50, shadow_percent=0, split_id="migrate-1")
            wait_for_traffic(client, {"canaryVersion": "semantic", "canaryWeight": 50})
            before = len(embeddings.requests)
            answered: dict[str, int] = {"v1": 0, "semantic": 0}
            for number in range(40):
                response = ask(client, f"tyre pressure {number}", client_id=f"rider-{number}")
                assert response.status_code == 200, response.text
                body = response.json()
                assert body["citations"]
                answered[body["kbVersion"]] += 1
            # Only the candidate's queries went to its model (384-d hashing for stable, 32-d for it).
            assert answered["semantic"] > 5 and answered["v1"] > 5
            assert len(embeddings.requests) - before == answered["semantic"]

            async def promote() -> None:
                async with await KnowledgeStore.connect(published) as store:
                    # No force: the candidate has served in its own space already.
                    await store.activate("sample", "semantic", reason="promote")

            asyncio.run(promote())
            wait_for_traffic(client, None)
            body = ask(client, "tyre pressure", client_id="rider-1").json()
            assert (body["kbVersion"], body["role"]) == ("semantic", "stable")
            assert client.get("/readyz").json()["activeVersion"] == "semantic"


GOLDEN_PROBES = ProbePlan(
    queries=(
        ProbeQuery("What does error code E07 on the display mean?", ("batteries/error-codes.md",)),
        ProbeQuery("How long is the frame warranty?", ("warranty/frame-warranty.md",)),
        ProbeQuery("a recorded production query about brakes"),
    ),
    per_minute=600,
    top_k=5,
)


def test_golden_probes_run_on_one_replica_at_a_time_and_never_reach_the_answer_log(
    published: str, tmp_path: Path
) -> None:
    asyncio.run(publish(published, "v2", (canary_corpus(tmp_path),), activate=False))
    with runtime(published, pod="docs-0") as first, runtime(published, pod="docs-1") as second:
        split(published, canary="v2", weight=0, shadow_percent=0, split_id="probe-1", probe=GOLDEN_PROBES)
        for client in (first, second):
            wait_for_traffic(client, {"canaryVersion": "v2", "canaryWeight": 0})

        def probes_of(client: httpx.Client) -> float:
            return metric(client, "ragops_queries_total", role="probe")

        holder, other = wait_for(
            "one replica to run the probes",
            lambda: next(
                (
                    (a, b)
                    for a, b in ((first, second), (second, first))
                    if a.get("/v1/info").json()["traffic"]["probes"]["runningHere"]
                ),
                None,
            ),
            timeout=10,
            interval=0.05,
        )
        wait_for("probes at 600 a minute", lambda: probes_of(holder) >= 20, timeout=10, interval=0.1)
        assert probes_of(other) == 0 and not other.get("/v1/info").json()["traffic"]["probes"]["runningHere"]
        # Both versions, labelled probe: golden hits per version, overlap of the candidate with stable.
        for version in ("v1", "v2"):
            assert metric(holder, "ragops_queries_total", kb_version=version, role="probe", status="ok") >= 10
            assert metric(holder, "ragops_probe_hits_total", kb_version=version, hit="true") >= 5
            assert metric(holder, "ragops_probe_hits_total", kb_version=version, hit="false") == 0
        assert metric(holder, "ragops_shadow_overlap_count", kb_version="v2", role="probe", level="chunk") > 0
        # Not users: no rate limit charged, no cache, no answer log, no cost.
        assert metric(holder, "ragops_rate_limited_total") == 0
        assert metric(holder, "ragops_cache_misses_total") == 0
        assert metric(holder, "ragops_queries_total", role="stable") == 0
        with psycopg.connect(published) as connection:
            assert connection.execute("SELECT count(*) FROM ragops.answer_log").fetchone() == (0,)
    # (Hand-over when the holder dies is tested with real processes in test_serve.py.)
