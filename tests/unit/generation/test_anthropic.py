"""The Anthropic generator: the real `anthropic` SDK against a local server speaking the Messages API.

Real sockets, real SDK, nothing patched; the server (tests.support.anthropic_messages) is the
suite's one double, standing in for a paid API. Backoff time comes from an injected clock, so the
tests never sleep through a Retry-After.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing

import pytest

from ragops_runtime.generation import SYSTEM_PROMPT, AnthropicGenerator, Generation, GenerationUnavailable, Usage
from ragops_runtime.generation.prompt import cited_passages
from ragops_runtime.store.knowledge import RetrievedChunk
from tests.support.anthropic_messages import (
    DEFAULT_API_KEY,
    FakeAnthropic,
    Reply,
    closed_port_url,
    running_anthropic_server,
)

MODEL = "claude-haiku-4-5"
QUESTION = "How do I install ragops?"
CHUNKS = [
    RetrievedChunk(
        chunk_id=11,
        document_id="install",
        source="docs/install.md",
        position=0,
        heading_path=("Install", "Helm chart"),
        text="Run helm install ragops oci://ghcr.io/ragops/chart with the default values file.",
        score=0.91,
    ),
    RetrievedChunk(
        chunk_id=12,
        document_id="rollouts",
        source="docs/rollouts.md",
        position=3,
        heading_path=("Rollouts",),
        text="A rollout pauses when the SLO burn rate exceeds 2.",
        score=0.52,
    ),
]
FIRST_WORDS = "Run helm install ragops oci://ghcr.io/ragops/chart with the default"  # the eight the server quotes


class Clock:
    """Monotonic seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def server() -> Iterator[FakeAnthropic]:
    with running_anthropic_server() as fake:
        yield fake


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def generator(server: FakeAnthropic, clock: Clock) -> AsyncIterator[AnthropicGenerator]:
    client = AnthropicGenerator(
        api_key=DEFAULT_API_KEY, model=MODEL, max_tokens=512, timeout_seconds=5.0, base_url=server.url, clock=clock
    )
    yield client
    await client.aclose()


@pytest.fixture
async def hasty(server: FakeAnthropic, clock: Clock) -> AsyncIterator[AnthropicGenerator]:
    """A generator with a 0.5 s budget, for the timeout tests."""
    client = AnthropicGenerator(
        api_key=DEFAULT_API_KEY, model=MODEL, max_tokens=512, timeout_seconds=0.5, base_url=server.url, clock=clock
    )
    yield client
    await client.aclose()


async def stream_until_failure(
    generator: AnthropicGenerator, query: str = QUESTION
) -> tuple[list[str], GenerationUnavailable]:
    """The text deltas a failing stream yielded before it raised, and what it raised."""
    deltas: list[str] = []
    with pytest.raises(GenerationUnavailable) as caught:
        async with aclosing(generator.stream(query, CHUNKS)) as items:
            async for item in items:
                assert isinstance(item, str), "a failing stream must not yield a Generation"
                deltas.append(item)
    return deltas, caught.value


async def test_generate_answers_from_the_passages_with_usage(
    server: FakeAnthropic, generator: AnthropicGenerator
) -> None:
    generation = await generator.generate(QUESTION, CHUNKS)

    [request] = server.requests
    assert generation.text == f'According to the context, "{FIRST_WORDS}" [1].'
    assert cited_passages(generation.text, len(CHUNKS)) == [1]
    prompt_chars = len(request.system + request.user_text)
    assert generation.usage == Usage(input_tokens=prompt_chars // 4, output_tokens=len(generation.text) // 4)
    assert (generation.model, generation.stop_reason) == (MODEL, "end_turn")

    assert (request.method, request.path) == ("POST", "/v1/messages")
    assert request.body["model"] == MODEL
    assert request.body["max_tokens"] == 512
    assert request.body["system"] == SYSTEM_PROMPT
    assert "stream" not in request.body
    [message] = request.body["messages"]
    assert message["role"] == "user"
    assert "[1] (source: docs/install.md, section: Install > Helm chart)\n" + CHUNKS[0].text in message["content"]
    assert "[2] (source: docs/rollouts.md, section: Rollouts)\n" + CHUNKS[1].text in message["content"]
    assert message["content"].endswith(f"Question: {QUESTION}")
    # SDK 2.x sends the API key as a bearer token; the API accepts it there as well as in x-api-key.
    assert request.headers["authorization"] == f"Bearer {DEFAULT_API_KEY}"
    # The SDK pins the API version it was generated for (a date); which one is the SDK's business.
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", request.headers["anthropic-version"])


async def test_no_retries_inside_a_request(server: FakeAnthropic, generator: AnthropicGenerator) -> None:
    server.script(Reply.server_error(500), Reply())
    with pytest.raises(GenerationUnavailable):
        await generator.generate(QUESTION, CHUNKS)
    assert len(server.requests) == 1


async def test_an_answer_cut_off_at_max_tokens_says_so(server: FakeAnthropic) -> None:
    generator = AnthropicGenerator(
        api_key=DEFAULT_API_KEY, model=MODEL, max_tokens=4, timeout_seconds=5.0, base_url=server.url
    )
    try:
        generation = await generator.generate(QUESTION, CHUNKS)
    finally:
        await generator.aclose()
    assert generation.stop_reason == "max_tokens"
    # The server's cut: four tokens of about four characters each.
    assert generation.text == "According to the"
    assert server.requests[0].body["max_tokens"] == 4


async def test_stream_yields_deltas_then_one_final_generation(
    server: FakeAnthropic, generator: AnthropicGenerator
) -> None:
    items = [item async for item in generator.stream(QUESTION, CHUNKS)]

    deltas = [item for item in items if isinstance(item, str)]
    final = items[-1]
    assert isinstance(final, Generation)
    assert [item for item in items if isinstance(item, Generation)] == [final]
    assert len(deltas) > 2 and all(deltas)
    assert "".join(deltas) == final.text == f'According to the context, "{FIRST_WORDS}" [1].'
    [request] = server.requests
    assert request.body["stream"] is True
    assert request.body["system"] == SYSTEM_PROMPT
    assert CHUNKS[0].text in request.user_text
    prompt_chars = len(request.system + request.user_text)
    assert final.usage == Usage(input_tokens=prompt_chars // 4, output_tokens=len(final.text) // 4)
    assert (final.model, final.stop_reason) == (MODEL, "end_turn")


async def test_streamed_and_whole_answers_agree(server: FakeAnthropic, generator: AnthropicGenerator) -> None:
    whole = await generator.generate(QUESTION, CHUNKS)
    *_, streamed = [item async for item in generator.stream(QUESTION, CHUNKS)]
    assert streamed == whole


async def test_429_backs_off_for_retry_after_without_calling_the_api(
    server: FakeAnthropic, generator: AnthropicGenerator, clock: Clock
) -> None:
    server.script(Reply.rate_limited(retry_after="2"))
    with pytest.raises(GenerationUnavailable) as caught:
        await generator.generate(QUESTION, CHUNKS)
    assert caught.value.reason == "rate_limited"
    assert caught.value.retry_after == 2.0
    assert "rate limit" in caught.value.detail

    # Within the backoff neither call reaches the server: the caller answers retrieval-only at once.
    clock.advance(0.5)
    started = time.monotonic()
    with pytest.raises(GenerationUnavailable) as refused:
        await generator.generate(QUESTION, CHUNKS)
    assert time.monotonic() - started < 0.1
    assert refused.value.reason == "backing_off"
    assert refused.value.retry_after == pytest.approx(1.5)
    _, refused_stream = await stream_until_failure(generator)
    assert refused_stream.reason == "backing_off"
    assert len(server.requests) == 1

    clock.advance(1.5)
    generation = await generator.generate(QUESTION, CHUNKS)
    assert FIRST_WORDS in generation.text
    assert len(server.requests) == 2


async def test_429_without_retry_after_doubles_up_to_a_minute_and_success_resets(
    server: FakeAnthropic, generator: AnthropicGenerator, clock: Clock
) -> None:
    waits: list[float | None] = []
    for _ in range(6):
        server.script(Reply.rate_limited(retry_after=None))
        with pytest.raises(GenerationUnavailable) as caught:
            await generator.generate(QUESTION, CHUNKS)
        assert caught.value.reason == "rate_limited"
        waits.append(caught.value.retry_after)
        clock.advance(caught.value.retry_after or 0.0)
    assert waits == [5.0, 10.0, 20.0, 40.0, 60.0, 60.0]

    await generator.generate(QUESTION, CHUNKS)
    server.script(Reply.rate_limited(retry_after=None))
    with pytest.raises(GenerationUnavailable) as after_success:
        await generator.generate(QUESTION, CHUNKS)
    assert after_success.value.retry_after == 5.0
    assert len(server.requests) == 8


async def test_a_huge_retry_after_is_capped(server: FakeAnthropic, generator: AnthropicGenerator) -> None:
    server.script(Reply.rate_limited(retry_after="86400"))
    with pytest.raises(GenerationUnavailable) as caught:
        await generator.generate(QUESTION, CHUNKS)
    assert caught.value.retry_after == 60.0


async def test_529_overloaded_backs_off_too(server: FakeAnthropic, generator: AnthropicGenerator, clock: Clock) -> None:
    server.script(Reply.overloaded())
    with pytest.raises(GenerationUnavailable) as caught:
        await generator.generate(QUESTION, CHUNKS)
    assert (caught.value.reason, caught.value.retry_after) == ("overloaded", 5.0)
    assert "HTTP 529 overloaded_error" in caught.value.detail

    with pytest.raises(GenerationUnavailable) as refused:
        await generator.generate(QUESTION, CHUNKS)
    assert refused.value.reason == "backing_off"
    assert len(server.requests) == 1

    clock.advance(5.0)
    assert FIRST_WORDS in (await generator.generate(QUESTION, CHUNKS)).text


@pytest.mark.parametrize("status", [500, 503])
async def test_5xx_is_an_upstream_error_without_backoff(
    server: FakeAnthropic, generator: AnthropicGenerator, status: int
) -> None:
    server.script(Reply.server_error(status))
    with pytest.raises(GenerationUnavailable) as caught:
        await generator.generate(QUESTION, CHUNKS)
    assert caught.value.reason == "upstream_error"
    assert caught.value.retry_after is None
    assert f"HTTP {status} api_error: Internal server error" in caught.value.detail

    # Not a throttle: the next question goes straight to the API.
    assert FIRST_WORDS in (await generator.generate(QUESTION, CHUNKS)).text
    assert len(server.requests) == 2


async def test_a_slow_reply_times_out_within_the_budget(server: FakeAnthropic, hasty: AnthropicGenerator) -> None:
    server.script(Reply.slow(2.0))
    started = time.monotonic()
    with pytest.raises(GenerationUnavailable) as caught:
        await hasty.generate(QUESTION, CHUNKS)
    elapsed = time.monotonic() - started
    assert caught.value.reason == "timeout"
    assert 0.45 <= elapsed < 1.0
    assert "within 0.5s" in caught.value.detail


async def test_a_slow_stream_start_times_out_within_the_budget(
    server: FakeAnthropic, hasty: AnthropicGenerator
) -> None:
    server.script(Reply.slow(2.0))
    started = time.monotonic()
    deltas, failure = await stream_until_failure(hasty)
    assert (deltas, failure.reason) == ([], "timeout")
    assert time.monotonic() - started < 1.0


async def test_a_stream_stalling_mid_way_times_out_after_its_deltas(
    server: FakeAnthropic, hasty: AnthropicGenerator
) -> None:
    server.script(Reply.stall_stream_after(2))
    started = time.monotonic()
    deltas, failure = await stream_until_failure(hasty)
    elapsed = time.monotonic() - started
    assert deltas == ["According to the ", 'context, "Run helm ']
    assert failure.reason == "timeout"
    assert "after 2 text deltas" in failure.detail
    assert 0.45 <= elapsed < 1.0


async def test_a_connection_cut_mid_stream_is_a_connection_error(
    server: FakeAnthropic, generator: AnthropicGenerator
) -> None:
    server.script(Reply.drop_stream_after(3))
    deltas, failure = await stream_until_failure(generator)
    assert len(deltas) == 3
    assert failure.reason == "connection_error"
    assert "mid-stream" in failure.detail and "after 3 text deltas" in failure.detail


async def test_an_error_event_mid_stream_maps_by_its_type(
    server: FakeAnthropic, generator: AnthropicGenerator, clock: Clock
) -> None:
    server.script(Reply.stream_error_after(2, "overloaded_error", "Overloaded"))
    deltas, failure = await stream_until_failure(generator)
    assert len(deltas) == 2
    assert (failure.reason, failure.retry_after) == ("overloaded", 5.0)
    assert "overloaded_error mid-stream: Overloaded" in failure.detail

    clock.advance(5.0)
    server.script(Reply.stream_error_after(1, "api_error", "Internal server error"))
    deltas, failure = await stream_until_failure(generator)
    assert (len(deltas), failure.reason) == (1, "upstream_error")


async def test_connection_refused(clock: Clock) -> None:
    url = closed_port_url()
    generator = AnthropicGenerator(
        api_key=DEFAULT_API_KEY, model=MODEL, max_tokens=64, timeout_seconds=2.0, base_url=url, clock=clock
    )
    try:
        with pytest.raises(GenerationUnavailable) as caught:
            await generator.generate(QUESTION, CHUNKS)
        _, streamed = await stream_until_failure(generator)
    finally:
        await generator.aclose()
    assert caught.value.reason == streamed.reason == "connection_error"
    assert url in caught.value.detail
    assert "ConnectError" in caught.value.detail


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (Reply.malformed(), "not valid JSON"),
        (Reply.no_text(), "no text content block (got tool_use)"),
        (Reply.html(), "not a message"),
        (
            Reply(body=b'{"type": "message", "model": "m", "content": [{"type": "text", "text": "hi"}]}'),
            "usage: Field required",
        ),
    ],
)
async def test_a_200_without_a_usable_answer_is_malformed(
    server: FakeAnthropic, generator: AnthropicGenerator, reply: Reply, expected: str
) -> None:
    server.script(reply)
    with pytest.raises(GenerationUnavailable) as caught:
        await generator.generate(QUESTION, CHUNKS)
    assert caught.value.reason == "malformed_response"
    assert expected in caught.value.detail


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (Reply.malformed(), "not valid JSON"),
        (Reply.no_text(), "no text content block (got tool_use)"),
    ],
)
async def test_a_stream_without_a_usable_answer_is_malformed(
    server: FakeAnthropic, generator: AnthropicGenerator, reply: Reply, expected: str
) -> None:
    server.script(reply)
    deltas, failure = await stream_until_failure(generator)
    assert (deltas, failure.reason) == ([], "malformed_response")
    assert expected in failure.detail


async def test_a_wrong_key_is_refused_without_the_key_in_the_error(server: FakeAnthropic, clock: Clock) -> None:
    wrong_key = "sk-ant-api03-wrong-0123456789"
    generator = AnthropicGenerator(
        api_key=wrong_key, model=MODEL, max_tokens=64, timeout_seconds=5.0, base_url=server.url, clock=clock
    )
    try:
        with pytest.raises(GenerationUnavailable) as caught:
            await generator.generate(QUESTION, CHUNKS)
        _, streamed = await stream_until_failure(generator)
    finally:
        await generator.aclose()
    for failure in (caught.value, streamed):
        assert failure.reason == "upstream_error"
        assert "HTTP 401 authentication_error: invalid x-api-key" in failure.detail
        assert wrong_key not in str(failure) and wrong_key not in failure.detail
        assert failure.retry_after is None
    # A refused key is no throttle: both calls reached the server.
    assert len(server.requests) == 2


async def test_an_error_message_echoing_the_key_is_redacted(
    server: FakeAnthropic, generator: AnthropicGenerator
) -> None:
    server.script(Reply.error(400, f"messages: bad request for key {DEFAULT_API_KEY}"))
    with pytest.raises(GenerationUnavailable) as caught:
        await generator.generate(QUESTION, CHUNKS)
    assert caught.value.reason == "upstream_error"
    assert "HTTP 400 invalid_request_error: messages: bad request for key [redacted]" in caught.value.detail
    assert DEFAULT_API_KEY not in str(caught.value)


async def test_no_passages_still_asks_and_the_answer_admits_it(
    server: FakeAnthropic, generator: AnthropicGenerator
) -> None:
    generation = await generator.generate(QUESTION, [])
    assert generation.text == "The provided context does not contain the answer to this question."
    assert cited_passages(generation.text, 0) == []
    assert server.requests[0].user_text.endswith(f"Question: {QUESTION}")


def test_constructor_refuses_unusable_settings() -> None:
    def build(api_key: str = "k", model: str = MODEL, max_tokens: int = 16, timeout: float = 1.0) -> None:
        AnthropicGenerator(api_key=api_key, model=model, max_tokens=max_tokens, timeout_seconds=timeout)

    with pytest.raises(ValueError, match="API key is required"):
        build(api_key="")
    with pytest.raises(ValueError, match="model id"):
        build(model="")
    with pytest.raises(ValueError, match="max_tokens must be at least 1"):
        build(max_tokens=0)
    for timeout in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="timeout_seconds must be a positive"):
            build(timeout=timeout)


async def test_a_stream_read_up_to_its_generation_resets_the_backoff(
    server: FakeAnthropic, generator: AnthropicGenerator, clock: Clock
) -> None:
    server.script(Reply.rate_limited(retry_after=None))
    with pytest.raises(GenerationUnavailable):
        await generator.generate(QUESTION, CHUNKS)
    clock.advance(5.0)

    async with aclosing(generator.stream(QUESTION, CHUNKS)) as items:
        async for item in items:
            if isinstance(item, Generation):
                break

    server.script(Reply.rate_limited(retry_after=None))
    with pytest.raises(GenerationUnavailable) as caught:
        await generator.generate(QUESTION, CHUNKS)
    # 5 s again, not 10: the stream's success ended the run of throttled answers.
    assert caught.value.retry_after == 5.0
