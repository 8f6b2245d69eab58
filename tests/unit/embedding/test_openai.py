"""The `openai` provider against a local server speaking the OpenAI embeddings protocol.

Our real httpx client over real sockets; the server (tests.support.openai_embeddings) is the
suite's one double, standing in for a paid API.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from ragops_runtime.embedding import EmbeddingError, OpenAIEmbedder
from tests.support.openai_embeddings import (
    FakeOpenAIEmbeddings,
    Reply,
    closed_port_url,
    running_openai_embeddings_server,
)

DIMENSIONS = 16
API_KEY = "sk-test-4f3c2b1a0987654321"
TEXTS = ["first passage", "second passage", "third passage"]


@pytest.fixture
def server() -> Iterator[FakeOpenAIEmbeddings]:
    with running_openai_embeddings_server(DIMENSIONS) as fake:
        yield fake


@pytest.fixture
async def embedder(server: FakeOpenAIEmbeddings) -> AsyncIterator[OpenAIEmbedder]:
    # A tiny backoff keeps retry tests fast; what is being tested is that they happen, not how long they wait.
    client = OpenAIEmbedder(server.url, "text-embedding-3-small", DIMENSIONS, API_KEY, backoff_base=0.001)
    yield client
    await client.aclose()


def expected(texts: list[str], dimensions: int = DIMENSIONS) -> list[list[float]]:
    return [FakeOpenAIEmbeddings.vector_for(text, dimensions) for text in texts]


async def test_embeds_a_batch_with_the_openai_request_shape(
    server: FakeOpenAIEmbeddings, embedder: OpenAIEmbedder
) -> None:
    assert await embedder.embed_batch(TEXTS) == expected(TEXTS)

    [request] = server.requests
    assert (request.method, request.path) == ("POST", "/v1/embeddings")
    assert request.body == {"model": "text-embedding-3-small", "input": TEXTS, "encoding_format": "float"}
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert request.headers["content-type"] == "application/json"
    assert (embedder.provider, embedder.model, embedder.dimensions, embedder.retries) == (
        "openai",
        "text-embedding-3-small",
        DIMENSIONS,
        0,
    )


async def test_endpoint_with_trailing_slash_and_no_key(server: FakeOpenAIEmbeddings) -> None:
    embedder = OpenAIEmbedder(server.url + "/", "bge-small", DIMENSIONS, None)
    try:
        assert await embedder.embed_batch(["only"]) == expected(["only"])
    finally:
        await embedder.aclose()
    [request] = server.requests
    assert request.path == "/v1/embeddings"
    assert "authorization" not in request.headers


async def test_dimensions_are_sent_only_when_asked(server: FakeOpenAIEmbeddings) -> None:
    embedder = OpenAIEmbedder(server.url, "text-embedding-3-large", 8, API_KEY, send_dimensions=True)
    try:
        # The server shortens vectors to the requested size, as OpenAI's text-embedding-3 models do.
        assert await embedder.embed_batch(["short"]) == expected(["short"], 8)
    finally:
        await embedder.aclose()
    assert server.requests[0].body["dimensions"] == 8


async def test_empty_batch_sends_nothing(server: FakeOpenAIEmbeddings, embedder: OpenAIEmbedder) -> None:
    assert await embedder.embed_batch([]) == []
    assert server.requests == []


async def test_vectors_are_put_back_in_input_order_by_index(
    server: FakeOpenAIEmbeddings, embedder: OpenAIEmbedder
) -> None:
    server.script(Reply(reverse=True))
    assert await embedder.embed_batch(TEXTS) == expected(TEXTS)


async def test_429_is_retried(server: FakeOpenAIEmbeddings, embedder: OpenAIEmbedder) -> None:
    server.script(Reply.rate_limited(retry_after="0"), Reply.rate_limited(retry_after="0"))
    assert await embedder.embed_batch(TEXTS) == expected(TEXTS)
    assert len(server.requests) == 3
    assert embedder.retries == 2
    assert all(request.inputs == TEXTS for request in server.requests)


async def test_retry_after_is_honoured_over_a_shorter_backoff(server: FakeOpenAIEmbeddings) -> None:
    embedder = OpenAIEmbedder(server.url, "m", DIMENSIONS, None, backoff_base=0.0001, backoff_max=5.0)
    server.script(Reply.unavailable(retry_after="0.3"))
    started = time.monotonic()
    try:
        assert await embedder.embed_batch(["x"]) == expected(["x"])
    finally:
        await embedder.aclose()
    # The backoff alone would have waited at most 0.1 ms.
    assert time.monotonic() - started >= 0.3
    assert embedder.retries == 1


async def test_retry_after_is_capped_by_backoff_max(server: FakeOpenAIEmbeddings) -> None:
    embedder = OpenAIEmbedder(server.url, "m", DIMENSIONS, None, backoff_max=0.05)
    server.script(Reply.rate_limited(retry_after="3600"))
    started = time.monotonic()
    try:
        assert await embedder.embed_batch(["x"]) == expected(["x"])
    finally:
        await embedder.aclose()
    assert time.monotonic() - started < 2.0


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_errors_are_retried(server: FakeOpenAIEmbeddings, embedder: OpenAIEmbedder, status: int) -> None:
    server.script(Reply.server_error(status))
    assert await embedder.embed_batch(TEXTS) == expected(TEXTS)
    assert len(server.requests) == 2
    assert embedder.retries == 1


async def test_a_timeout_is_retried(server: FakeOpenAIEmbeddings) -> None:
    embedder = OpenAIEmbedder(server.url, "m", DIMENSIONS, None, timeout=0.2, backoff_base=0.001)
    server.script(Reply.slow(5.0))
    try:
        assert await embedder.embed_batch(["x"]) == expected(["x"])
    finally:
        await embedder.aclose()
    assert len(server.requests) == 2
    assert embedder.retries == 1


async def test_exhausted_budget_names_the_last_status_and_the_attempts(server: FakeOpenAIEmbeddings) -> None:
    embedder = OpenAIEmbedder(server.url, "m", DIMENSIONS, API_KEY, max_retries=2, backoff_base=0.001)
    server.script(Reply.server_error(500), Reply.rate_limited(), Reply.unavailable())
    try:
        with pytest.raises(EmbeddingError) as caught:
            await embedder.embed_batch(["x"])
    finally:
        await embedder.aclose()
    message = str(caught.value)
    assert "HTTP 503" in message
    assert "overloaded" in message
    assert "gave up after 3 attempts" in message
    assert f"{server.url}/embeddings (model m)" in message
    assert len(server.requests) == 3
    assert embedder.retries == 2


async def test_client_errors_fail_at_once_with_the_server_message(
    server: FakeOpenAIEmbeddings, embedder: OpenAIEmbedder
) -> None:
    server.script(Reply.error(400, "This model's maximum context length is 8192 tokens"))
    with pytest.raises(EmbeddingError, match="HTTP 400: This model's maximum context length is 8192 tokens"):
        await embedder.embed_batch(TEXTS)
    assert len(server.requests) == 1
    assert embedder.retries == 0


async def test_a_non_json_error_body_is_quoted(server: FakeOpenAIEmbeddings, embedder: OpenAIEmbedder) -> None:
    server.script(Reply(status=404, body=b"404 page not found"))
    with pytest.raises(EmbeddingError, match="HTTP 404: 404 page not found"):
        await embedder.embed_batch(TEXTS)


async def test_the_api_key_never_appears_in_errors(server: FakeOpenAIEmbeddings, embedder: OpenAIEmbedder) -> None:
    # Some servers echo the credential they rejected; the message must keep the cause and drop the key.
    server.script(Reply.error(401, f"Incorrect API key provided: {API_KEY}."))
    with pytest.raises(EmbeddingError) as caught:
        await embedder.embed_batch(TEXTS)
    assert "HTTP 401: Incorrect API key provided: [redacted]." in str(caught.value)
    assert API_KEY not in str(caught.value)
    assert API_KEY not in repr(caught.value)
    assert caught.value.__cause__ is None


async def test_credentials_in_the_endpoint_url_are_not_shown(server: FakeOpenAIEmbeddings) -> None:
    endpoint = server.url.replace("http://", "http://user:s3cret-pass@")
    embedder = OpenAIEmbedder(endpoint, "m", DIMENSIONS, None)
    server.script(Reply.error(403, "forbidden for s3cret-pass"))
    try:
        with pytest.raises(EmbeddingError) as caught:
            await embedder.embed_batch(["x"])
    finally:
        await embedder.aclose()
    assert "s3cret-pass" not in str(caught.value)
    assert f"{server.url}/embeddings" in str(caught.value)


async def test_a_dimension_mismatch_is_an_error_never_a_truncation(
    server: FakeOpenAIEmbeddings, embedder: OpenAIEmbedder
) -> None:
    server.script(Reply.wrong_dimension(768))
    with pytest.raises(EmbeddingError, match=f"dimension mismatch: endpoint returned 768, expected {DIMENSIONS}"):
        await embedder.embed_batch(TEXTS)
    assert len(server.requests) == 1


async def test_malformed_json_is_an_error(server: FakeOpenAIEmbeddings, embedder: OpenAIEmbedder) -> None:
    server.script(Reply.malformed())
    with pytest.raises(EmbeddingError, match=r"malformed response: body: Invalid JSON"):
        await embedder.embed_batch(TEXTS)
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        (b'{"data": [{"index": 0, "embedding": [1.0]}]}', "returned 1 embeddings for 3 inputs"),
        (b'{"data": "nope"}', "malformed response: data"),
        (b'{"object": "list"}', "malformed response: data: Field required"),
        (
            b'{"data": [{"index": 0, "embedding": []}, {"index": 0, "embedding": []}, {"index": 2, "embedding": []}]}',
            "indices are not 0..2",
        ),
        (b'{"data": [{"index": 0, "embedding": "AAAA"}]}', "malformed response: data.0.embedding"),
    ],
)
async def test_well_formed_json_of_the_wrong_shape_is_an_error(
    server: FakeOpenAIEmbeddings, embedder: OpenAIEmbedder, body: bytes, complaint: str
) -> None:
    server.script(Reply(body=body))
    with pytest.raises(EmbeddingError) as caught:
        await embedder.embed_batch(TEXTS)
    assert complaint in str(caught.value)


async def test_an_unreachable_endpoint_is_retried_then_named() -> None:
    url = closed_port_url()
    embedder = OpenAIEmbedder(url, "m", DIMENSIONS, API_KEY, max_retries=1, backoff_base=0.001)
    try:
        with pytest.raises(EmbeddingError) as caught:
            await embedder.embed_batch(["x"])
    finally:
        await embedder.aclose()
    message = str(caught.value)
    assert message.startswith(f"cannot reach embedding endpoint {url}/embeddings: ConnectError")
    assert "gave up after 2 attempts" in message
    assert API_KEY not in message
    assert embedder.retries == 1


async def test_a_client_passed_in_is_used_and_left_open(server: FakeOpenAIEmbeddings) -> None:
    async with httpx.AsyncClient(headers={"X-Trace": "abc"}) as client:
        embedder = OpenAIEmbedder(server.url, "m", DIMENSIONS, None, client=client)
        assert await embedder.embed_batch(["x"]) == expected(["x"])
        await embedder.aclose()
        assert not client.is_closed
    assert server.requests[0].headers["x-trace"] == "abc"


@pytest.mark.parametrize("endpoint", ["localhost:8080/v1", "ftp://example.com/v1", "/v1"])
def test_an_endpoint_that_is_not_an_http_url_is_refused(endpoint: str) -> None:
    with pytest.raises(ValueError, match="http"):
        OpenAIEmbedder(endpoint, "m", DIMENSIONS, None)


async def test_a_new_script_replaces_what_is_still_queued(
    server: FakeOpenAIEmbeddings, embedder: OpenAIEmbedder
) -> None:
    server.script(Reply.error(400, "first script"), Reply.error(400, "still queued"))
    with pytest.raises(EmbeddingError, match="first script"):
        await embedder.embed_batch(["x"])
    server.script()
    assert await embedder.embed_batch(["x"]) == expected(["x"])


async def test_the_double_can_answer_every_request_late_and_fail_the_ones_carrying_a_text() -> None:
    with running_openai_embeddings_server(DIMENSIONS, latency=0.2) as fake:
        client = OpenAIEmbedder(fake.url, "m", DIMENSIONS, API_KEY, backoff_base=0.001, max_retries=0)
        try:
            fake.fail_inputs_containing("poison", Reply.error(400, "bad input"), times=1)
            started = time.monotonic()
            assert await client.embed_batch(TEXTS) == expected(TEXTS)
            assert time.monotonic() - started >= 0.2
            with pytest.raises(EmbeddingError):
                await client.embed_batch(["a poison pill"])
            assert await client.embed_batch(["a poison pill"]) == expected(["a poison pill"])
        finally:
            await client.aclose()
