"""Traces of a real `ragops serve`, received over OTLP by a real OpenTelemetry Collector.

Each query is one trace whose root carries the deployment, version, role and tokens, with a child
span per stage named and attributed after the GenAI semantic conventions; a caller's traceparent
is followed; the sampling ratio holds; a collector that never answers delays no query.
"""

from __future__ import annotations

import asyncio
import socket
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.integration.test_runtime import QUESTION, canary_corpus, publish, split, wait_for_traffic
from tests.support.anthropic_messages import DEFAULT_API_KEY, running_anthropic_server
from tests.support.otelcol import ReceivedSpan, running_collector
from tests.support.ragops_serve import fresh_database, ragops_serve
from tests.support.rerank_server import running_rerank_server

MODEL = "claude-sonnet-4-6"
EMBED = "embeddings wordllama-l2-supercat"
SETTINGS = {"RAGOPS_KNOWLEDGE_BASE": "sample", "RAGOPS_DEPLOYMENT": "docs", "RAGOPS_NAMESPACE": "test"}


@pytest.fixture(scope="module")
def published_sample(postgres_server: str) -> Iterator[str]:
    with fresh_database(postgres_server, "tracing") as dsn:
        asyncio.run(publish(dsn, "v1"))
        yield dsn


def trace_of(spans: list[ReceivedSpan], trace_id: str) -> tuple[ReceivedSpan, dict[str, ReceivedSpan]]:
    """The root of a trace and its children by name; every span of the trace is the root's child."""
    members = [span for span in spans if span.trace_id == trace_id]
    roots = [span for span in members if span.name == "invoke_workflow docs"]
    assert len(roots) == 1, [span.name for span in members]
    root = roots[0]
    children = {span.name: span for span in members if span is not root}
    assert len(children) == len(members) - 1, "two spans of one stage"
    for child in children.values():
        assert child.parent_span_id == root.span_id, child.name
        assert root.start_ns <= child.start_ns <= child.end_ns <= root.end_ns, child.name
    return root, children


def by_query(spans: list[ReceivedSpan], query_id: str) -> tuple[ReceivedSpan, dict[str, ReceivedSpan]]:
    [root] = [span for span in spans if span.attributes.get("ragops.query_id") == query_id]
    return trace_of(spans, root.trace_id)


def test_each_query_is_a_trace_with_a_span_per_stage(published_sample: str, tmp_path: Path) -> None:
    with (
        running_collector(tmp_path) as collector,
        running_anthropic_server() as fake,
        running_rerank_server() as reranker,
    ):
        settings = {
            **SETTINGS,
            "RAGOPS_GENERATION_PROVIDER": "anthropic",
            "RAGOPS_ANTHROPIC_API_KEY": DEFAULT_API_KEY,
            "RAGOPS_ANTHROPIC_BASE_URL": fake.url,
            "RAGOPS_RERANKER_PROVIDER": "http",
            "RAGOPS_RERANKER_ENDPOINT": f"{reranker.url}/rerank",
            "RAGOPS_OTLP_ENDPOINT": collector.endpoint,
        }
        with ragops_serve(published_sample, settings, tmp_path / "serve.log") as url:
            client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
            caller_trace, caller_span = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
            completion = client.chat.completions.create(
                model="docs",
                messages=[{"role": "user", "content": QUESTION}],
                extra_headers={"traceparent": f"00-{caller_trace}-{caller_span}-01"},
            )
            generated_id = (completion.model_extra or {})["ragops"]["query_id"]
            streamed = list(
                client.chat.completions.create(
                    model="docs", messages=[{"role": "user", "content": "How long is the frame warranty?"}], stream=True
                )
            )
            streamed_id = (streamed[-1].model_extra or {})["ragops"]["query_id"]
            cached = httpx.post(f"{url}/v1/query", json={"query": QUESTION}).json()
            spans = collector.wait_for(6 + 6 + 2)  # every span of the three traces

    root, stages = by_query(spans, generated_id)
    # The caller's trace continues: the root is the child of the caller's span.
    assert (root.trace_id, root.parent_span_id) == (caller_trace, caller_span)
    assert set(stages) == {
        "ragops.cache",
        EMBED,
        "retrieval sample/v1",
        "ragops.rerank",
        f"chat {MODEL}",
    }
    assert root.resource["service.name"] == "ragops-runtime" and root.resource["k8s.namespace.name"] == "test"
    assert root.scope == "ragops_runtime"
    usage = completion.usage
    assert usage is not None
    assert root.attributes == {
        "gen_ai.operation.name": "invoke_workflow",
        "gen_ai.workflow.name": "docs",
        "gen_ai.data_source.id": "sample/v1",
        "ragops.deployment": "docs",
        "ragops.knowledge_base": "sample",
        "ragops.kb_version": "v1",
        "ragops.role": "stable",
        "ragops.query_id": generated_id,
        "ragops.mode": "generated",
        "ragops.citations": 5,
        "gen_ai.usage.input_tokens": usage.prompt_tokens,
        "gen_ai.usage.output_tokens": usage.completion_tokens,
        "ragops.cost_usd": pytest.approx((usage.model_extra or {})["cost"]),
    }
    chat = stages[f"chat {MODEL}"]
    assert chat.attributes == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "anthropic",
        "gen_ai.request.model": MODEL,
        "gen_ai.request.max_tokens": 500,
        "gen_ai.request.stream": False,
        "gen_ai.response.model": MODEL,
        "gen_ai.response.finish_reasons": ["end_turn"],
        "gen_ai.usage.input_tokens": usage.prompt_tokens,
        "gen_ai.usage.output_tokens": usage.completion_tokens,
    }
    retrieval = stages["retrieval sample/v1"]
    assert retrieval.attributes["gen_ai.operation.name"] == "retrieval"
    assert retrieval.attributes["gen_ai.data_source.id"] == "sample/v1"
    assert retrieval.attributes["ragops.retrieval.searches"] == ["vector", "lexical", "fusion"]
    assert retrieval.attributes["ragops.retrieval.returned"] == 20
    embed = stages[EMBED]
    assert embed.attributes["gen_ai.operation.name"] == "embeddings"
    assert embed.attributes["gen_ai.provider.name"] == "static"
    assert stages["ragops.cache"].attributes == {"ragops.cache.backend": "memory", "ragops.cache.hit": False}
    order = ["ragops.cache", EMBED, "retrieval sample/v1", "ragops.rerank", f"chat {MODEL}"]
    assert [stages[name].start_ns for name in order] == sorted(stages[name].start_ns for name in order)

    # Streamed: generation's span is open across the deltas and ends inside the root.
    root, stages = by_query(spans, streamed_id)
    assert stages[f"chat {MODEL}"].attributes["gen_ai.request.stream"] is True
    assert root.attributes["ragops.mode"] == "generated" and root.parent_span_id == ""

    # A cache hit is a trace of its own: the lookup, nothing after it.
    root, stages = by_query(spans, cached["queryId"])
    assert root.attributes["ragops.mode"] == "cached"
    assert set(stages) == {"ragops.cache"} and stages["ragops.cache"].attributes["ragops.cache.hit"] is True


def test_sampling_ratio_zero_traces_only_what_the_caller_sampled(published_sample: str, tmp_path: Path) -> None:
    with running_collector(tmp_path) as collector:
        settings = {
            **SETTINGS,
            "RAGOPS_GENERATION_PROVIDER": "none",
            "RAGOPS_OTLP_ENDPOINT": collector.endpoint,
            "RAGOPS_TRACE_SAMPLING_RATIO": "0",
        }
        with ragops_serve(published_sample, settings, tmp_path / "serve.log") as url:
            client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
            for n in range(5):
                client.chat.completions.create(model="docs", messages=[{"role": "user", "content": f"brakes {n}"}])
            sampled = "4bf92f3577b34da6a3ce929d0e0e4736"
            client.chat.completions.create(
                model="docs",
                messages=[{"role": "user", "content": QUESTION}],
                extra_headers={"traceparent": f"00-{sampled}-00f067aa0ba902b7-01"},
            )
            spans = collector.wait_for(4)
            time.sleep(2)  # past another export interval: nothing else arrives
            spans = collector.spans()
    assert {span.trace_id for span in spans} == {sampled}
    root, stages = trace_of(spans, sampled)
    assert root.attributes["ragops.mode"] == "retrieval_only"
    assert set(stages) == {"ragops.cache", EMBED, "retrieval sample/v1"}


def test_a_collector_that_never_answers_delays_no_query(published_sample: str, tmp_path: Path) -> None:
    """Its TCP port accepts connections (the backlog) and never replies: the export thread waits, queries do not."""
    black_hole = socket.socket()
    black_hole.bind(("127.0.0.1", 0))
    black_hole.listen(64)
    endpoint = f"http://127.0.0.1:{black_hole.getsockname()[1]}"
    try:
        timings: dict[str, list[float]] = {}
        for label, extra in (("off", {}), ("stuck collector", {"RAGOPS_OTLP_ENDPOINT": endpoint})):
            settings = {**SETTINGS, "RAGOPS_GENERATION_PROVIDER": "none", "RAGOPS_CACHE_TTL_SECONDS": "0", **extra}
            with ragops_serve(published_sample, settings, tmp_path / f"{label}.log") as url, httpx.Client() as client:
                seconds = []
                for n in range(40):
                    started = time.perf_counter()
                    response = client.post(f"{url}/v1/query", json={"query": f"battery range in winter {n}"})
                    seconds.append(time.perf_counter() - started)
                    assert response.status_code == 200
                timings[label] = seconds
        for label, seconds in timings.items():
            print(f"{label}: median {statistics.median(seconds) * 1000:.1f} ms, max {max(seconds) * 1000:.1f} ms")
        # The exporter gives up on a batch only after 10 s; a query that waited on it would show that.
        assert max(timings["stuck collector"]) < 5.0
        assert statistics.median(timings["stuck collector"]) < 3 * statistics.median(timings["off"]) + 0.05
    finally:
        black_hole.close()


def test_canary_and_shadow_queries_are_traced_with_their_role(postgres_server: str, tmp_path: Path) -> None:
    with fresh_database(postgres_server, "tracing_roles") as dsn, running_collector(tmp_path) as collector:
        asyncio.run(publish(dsn, "v1"))
        asyncio.run(publish(dsn, "v2", (canary_corpus(tmp_path),), activate=False))
        settings = {**SETTINGS, "RAGOPS_GENERATION_PROVIDER": "none", "RAGOPS_OTLP_ENDPOINT": collector.endpoint}
        with ragops_serve(dsn, settings, tmp_path / "serve.log") as url, httpx.Client(base_url=url) as client:
            split(dsn, canary="v2", weight=0, shadow_percent=100, split_id="shadow-1")
            wait_for_traffic(client, {"canaryVersion": "v2", "canaryWeight": 0, "shadowPercent": 100})
            stable = client.post("/v1/query", json={"query": QUESTION}).json()
            split(dsn, canary="v2", weight=100, shadow_percent=0, split_id="canary-1")
            wait_for_traffic(client, {"canaryVersion": "v2", "canaryWeight": 100, "shadowPercent": 0})
            canary = client.post("/v1/query", json={"query": "How long is the frame warranty?"}).json()
            spans = collector.wait_for(4 + 3 + 4)
    assert (stable["role"], canary["role"]) == ("stable", "canary")
    root, _ = by_query(spans, stable["queryId"])
    assert (root.attributes["ragops.role"], root.attributes["ragops.kb_version"]) == ("stable", "v1")
    root, _ = by_query(spans, canary["queryId"])
    assert (root.attributes["ragops.role"], root.attributes["ragops.kb_version"]) == ("canary", "v2")
    [shadow] = [
        span for span in spans if span.name == "invoke_workflow docs" and span.attributes["ragops.role"] == "shadow"
    ]
    root, stages = trace_of(spans, shadow.trace_id)
    assert root.attributes["ragops.kb_version"] == "v2" and set(stages) == {EMBED, "retrieval sample/v2"}
