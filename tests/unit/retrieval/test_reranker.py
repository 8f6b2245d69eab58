"""The HTTP reranker against a local server speaking the Cohere/TEI rerank protocol.

Our real httpx client over real sockets; the server (tests.support.rerank_server) stands in for a
paid API (Cohere) or an external service (TEI).
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest

from ragops_runtime.retrieval.reranker import HttpReranker, RerankUnavailable
from ragops_runtime.store import RetrievedChunk
from tests.support.rerank_server import FakeRerankServer, Reply, closed_port_url, running_rerank_server

QUERY = "battery charging time"
TEXTS = [
    "Brakes need adjusting every six months.",
    "Charging the battery takes four hours.",
    "Battery storage in winter.",
    "Charging time depends on the battery charger.",
]
API_KEY = "co-test-9a8b7c6d5e4f"


def chunk(position: int, text: str) -> RetrievedChunk:
    return RetrievedChunk(
        chunk_id=100 + position,
        document_id=f"doc-{position}",
        source=f"docs/{position}.md",
        position=position,
        heading_path=("Manual", f"Section {position}"),
        text=text,
        # Retrieval's own scores, in retrieval order: the reranker must replace them.
        score=0.9 - position / 10,
        metadata={"lang": "en"},
    )


CHUNKS = [chunk(position, text) for position, text in enumerate(TEXTS)]

# Failures don't depend on the answer's shape: one server shape is enough for them.
cohere_only = pytest.mark.parametrize("server", ["cohere"], indirect=True)


def ranked(result: list[RetrievedChunk]) -> list[tuple[int, float]]:
    return [(item.chunk_id, item.score) for item in result]


def expected(*positions: int) -> list[tuple[int, float]]:
    return [(100 + position, FakeRerankServer.score_for(QUERY, TEXTS[position])) for position in positions]


@pytest.fixture(params=["cohere", "tei"])
def server(request: pytest.FixtureRequest) -> Iterator[FakeRerankServer]:
    with running_rerank_server(request.param) as fake:
        yield fake


@pytest.fixture
async def reranker(server: FakeRerankServer) -> AsyncIterator[HttpReranker]:
    client = HttpReranker(endpoint=server.url, model="rerank-english-v3.0", timeout_ms=2000)
    yield client
    await client.aclose()


async def test_reorders_by_relevance_and_replaces_scores(server: FakeRerankServer, reranker: HttpReranker) -> None:
    result = await reranker.rerank(QUERY, CHUNKS, top_n=3)

    assert ranked(result) == expected(3, 1, 2)
    assert [item.score for item in result] == pytest.approx([1.0, 2 / 3, 1 / 3])
    # Only the score changes: the chunk is otherwise the one retrieval found.
    assert result[0] == replace(CHUNKS[3], score=1.0)
    [request] = server.requests
    assert (request.method, request.path) == ("POST", "/v1/rerank")
    assert request.body == {"query": QUERY, "documents": TEXTS, "top_n": 3, "model": "rerank-english-v3.0"}
    assert request.headers["content-type"] == "application/json"
    assert "authorization" not in request.headers


async def test_a_top_n_above_the_chunk_count_returns_every_chunk(
    server: FakeRerankServer, reranker: HttpReranker
) -> None:
    result = await reranker.rerank(QUERY, CHUNKS, top_n=10)
    assert ranked(result) == expected(3, 1, 2, 0)
    assert server.requests[0].body["top_n"] == 4


async def test_answers_in_any_order_are_sorted(server: FakeRerankServer, reranker: HttpReranker) -> None:
    server.script(Reply(reverse=True))
    assert ranked(await reranker.rerank(QUERY, CHUNKS, top_n=2)) == expected(3, 1)


async def test_ties_keep_the_retrieval_order(server: FakeRerankServer, reranker: HttpReranker) -> None:
    # Every document shares exactly one word with the query.
    chunks = [chunk(position, text) for position, text in enumerate(["tyres", "brakes tyres", "tyres chain"])]
    server.script(Reply(reverse=True))
    result = await reranker.rerank("tyres pressure", chunks, top_n=3)
    assert [item.chunk_id for item in result] == [100, 101, 102]
    assert {item.score for item in result} == {0.5}


async def test_no_model_field_without_a_model_and_the_key_as_a_bearer_token(server: FakeRerankServer) -> None:
    reranker = HttpReranker(endpoint=server.url, model=None, timeout_ms=2000, api_key=API_KEY)
    try:
        assert ranked(await reranker.rerank(QUERY, CHUNKS[:2], top_n=1)) == expected(1)
    finally:
        await reranker.aclose()
    [request] = server.requests
    assert request.body == {"query": QUERY, "documents": TEXTS[:2], "top_n": 1}
    assert request.headers["authorization"] == f"Bearer {API_KEY}"


@cohere_only
async def test_no_chunks_means_no_request(server: FakeRerankServer, reranker: HttpReranker) -> None:
    assert await reranker.rerank(QUERY, [], top_n=5) == []
    assert server.requests == []


@cohere_only
async def test_top_n_must_be_positive(server: FakeRerankServer, reranker: HttpReranker) -> None:
    with pytest.raises(ValueError, match="top_n"):
        await reranker.rerank(QUERY, CHUNKS, top_n=0)
    assert server.requests == []


MALFORMED_BODIES: dict[str, Any] = {
    "an index past the last document": {"results": [{"index": 4, "relevance_score": 0.9}]},
    "a negative index": [{"index": -1, "score": 0.9}],
    "an index that is not an integer": [{"index": "1", "score": 0.9}],
    "a boolean index": {"results": [{"index": True, "relevance_score": 0.9}]},
    "a repeated index": {"results": [{"index": 1, "relevance_score": 0.9}, {"index": 1, "relevance_score": 0.8}]},
    "a missing score": {"results": [{"index": 1, "score": 0.9}]},
    "a score that is not a number": [{"index": 1, "score": "high"}],
    "a score that is not finite": [{"index": 1, "score": float("nan")}],
    "no results": {"results": []},
    "an empty list": [],
    "an object without results": {"data": [{"index": 0, "relevance_score": 0.5}]},
    "a result that is not an object": [[1, 0.5]],
    "a bare number": 0.5,
}


@cohere_only
@pytest.mark.parametrize("body", MALFORMED_BODIES.values(), ids=MALFORMED_BODIES.keys())
async def test_malformed_answers_are_unavailable(server: FakeRerankServer, reranker: HttpReranker, body: Any) -> None:
    server.script(Reply.with_json(body))
    with pytest.raises(RerankUnavailable) as failure:
        await reranker.rerank(QUERY, CHUNKS, top_n=2)
    assert failure.value.reason == "malformed"
    assert str(failure.value).startswith(f"rerank endpoint {server.url} (model rerank-english-v3.0) sent a malformed")


@cohere_only
async def test_a_body_that_is_not_json_is_unavailable(server: FakeRerankServer, reranker: HttpReranker) -> None:
    server.script(Reply.malformed())
    with pytest.raises(RerankUnavailable, match="the body is not JSON") as failure:
        await reranker.rerank(QUERY, CHUNKS, top_n=2)
    assert failure.value.reason == "malformed"


@cohere_only
@pytest.mark.parametrize("status", [500, 502, 503, 429, 400, 401])
async def test_an_error_status_is_unavailable(server: FakeRerankServer, reranker: HttpReranker, status: int) -> None:
    server.script(Reply.server_error(status))
    with pytest.raises(RerankUnavailable, match=f"answered HTTP {status}$") as failure:
        await reranker.rerank(QUERY, CHUNKS, top_n=2)
    assert failure.value.reason == "http_status"
    # Never retried: the caller's fallback is faster than a second attempt.
    assert len(server.requests) == 1


@cohere_only
async def test_a_slow_answer_is_cut_off_at_the_timeout(server: FakeRerankServer) -> None:
    reranker = HttpReranker(endpoint=server.url, model=None, timeout_ms=150)
    server.script(Reply.slow(5))
    started = time.monotonic()
    try:
        with pytest.raises(RerankUnavailable, match="no answer within 150 ms") as failure:
            await reranker.rerank(QUERY, CHUNKS, top_n=2)
    finally:
        await reranker.aclose()
    assert failure.value.reason == "timeout"
    assert time.monotonic() - started < 1.5


@cohere_only
async def test_a_slow_answer_within_the_timeout_is_used(server: FakeRerankServer, reranker: HttpReranker) -> None:
    server.script(Reply.slow(0.2))
    assert ranked(await reranker.rerank(QUERY, CHUNKS, top_n=1)) == expected(3)


async def test_an_unreachable_endpoint_is_unavailable() -> None:
    reranker = HttpReranker(endpoint=closed_port_url(), model=None, timeout_ms=2000)
    try:
        with pytest.raises(
            RerankUnavailable, match=re.escape("cannot reach rerank endpoint http://127.0.0.1:")
        ) as failure:
            await reranker.rerank(QUERY, CHUNKS, top_n=2)
    finally:
        await reranker.aclose()
    assert failure.value.reason == "unreachable"


@cohere_only
async def test_credentials_never_reach_a_message(server: FakeRerankServer) -> None:
    endpoint = server.url.replace("http://", "http://user:url-secret@")
    reranker = HttpReranker(endpoint=endpoint, model=None, timeout_ms=2000, api_key=API_KEY)
    server.script(Reply(status=401, body=f'{{"message": "invalid api token {API_KEY}"}}'.encode()))
    try:
        with pytest.raises(RerankUnavailable) as failure:
            await reranker.rerank(QUERY, CHUNKS, top_n=2)
    finally:
        await reranker.aclose()
    assert str(failure.value) == f"rerank endpoint {server.url} answered HTTP 401"
    assert API_KEY not in repr(failure.value) and "url-secret" not in repr(failure.value)


@cohere_only
async def test_a_given_client_is_used_and_left_open(server: FakeRerankServer) -> None:
    async with httpx.AsyncClient() as client:
        reranker = HttpReranker(endpoint=server.url, model=None, timeout_ms=2000, client=client)
        assert ranked(await reranker.rerank(QUERY, CHUNKS, top_n=1)) == expected(3)
        await reranker.aclose()
        assert not client.is_closed


@pytest.mark.parametrize(
    ("endpoint", "timeout_ms", "message"),
    [
        ("api.cohere.com/v1/rerank", 1000, "http\\(s\\) URL"),
        ("ftp://rerank.internal/rerank", 1000, "http\\(s\\) URL"),
        ("http://rerank.internal/rerank", 0, "timeout_ms"),
    ],
)
def test_construction_refuses_nonsense(endpoint: str, timeout_ms: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        HttpReranker(endpoint=endpoint, model=None, timeout_ms=timeout_ms)
