"""The runtime served for real over real PostgreSQL + pgvector, with the Anthropic double.

Covers answers and their modes, degraded fallbacks, streaming, feedback, the protection limits,
the cache across a version switch, a switch under load, the database going away and coming
back, and the metrics exposition (promtool).
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
from ragops_runtime.settings import RuntimeSettings
from ragops_runtime.store import KnowledgeStore
from ragops_runtime.store.embedded import start_embedded
from tests.support.anthropic_messages import DEFAULT_API_KEY, FakeAnthropic, Reply, running_anthropic_server
from tests.support.runtime_server import serving

QUESTION = "What does error code E07 on the display mean?"


async def publish(dsn: str, version: str, sources: tuple[str, ...] = (str(sample.CORPUS_DIR),)) -> None:
    """Builds, gates and activates a version of the sample knowledge base."""
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
        with psycopg.connect(published) as connection:
            row = connection.execute(
                "SELECT version, mode, document_ids, cost_usd FROM ragops.answer_log WHERE query_id = %s",
                (body["queryId"],),
            ).fetchone()
        assert row is not None and row[0] == "v1" and row[1] == "generated" and row[2][0] == "batteries/error-codes.md"

        assert client.post("/v1/feedback", json={"queryId": body["queryId"], "thumbs": "up"}).status_code == 204
        # A subnormal rating is valid JSON within [0, 1]; PostgreSQL's `real` would underflow on it (schemathesis).
        assert client.post("/v1/feedback", json={"queryId": body["queryId"], "rating": 1e-310}).status_code == 204
        assert client.post("/v1/feedback", json={"queryId": body["queryId"], "rating": 0.5}).status_code == 204
        unknown = client.post("/v1/feedback", json={"queryId": "00000000-0000-0000-0000-000000000000", "rating": 1})
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_query"
        both = client.post("/v1/feedback", json={"queryId": body["queryId"], "rating": 1, "thumbs": "up"})
        assert both.status_code == 422 and "thumbs: Extra inputs are not permitted" in both.json()["error"]["message"]
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
    with runtime(published, requests_per_minute_per_client=2) as client:
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

    assert value("ragops_queries_total", mode="generated", status="ok") == 1
    assert value("ragops_queries_total", mode="cached", status="ok") == 1
    assert value("ragops_queries_total", mode="retrieval_only", status="degraded") == 1
    assert value("ragops_rate_limited_total") == 1
    assert value("ragops_cache_hits_total") == 1
    assert value("ragops_feedback_score_count") == 1
    assert value("ragops_active_knowledge_base_info", knowledge_base="sample", version="v1") == 1
    assert value("ragops_llm_tokens_total", direction="input") == body["usage"]["inputTokens"]
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
