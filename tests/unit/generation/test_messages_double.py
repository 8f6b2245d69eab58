"""The Messages API double speaks the protocol the generator tests rely on, checked with a plain HTTP client.

The generator tests see the server only through the SDK; these pin its wire format directly
(authentication, error bodies, the event sequence of a stream), so a lenient double can't make
them pass.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.anthropic_messages import DEFAULT_API_KEY, FakeAnthropic, Reply, running_anthropic_server

HEADERS = {"x-api-key": DEFAULT_API_KEY, "anthropic-version": "2023-06-01"}
PROMPT = "Context passages:\n\n[1] (source: a.md)\nAlpha beta gamma delta.\n\nQuestion: what?"
BODY: dict[str, Any] = {
    "model": "claude-haiku-4-5",
    "max_tokens": 64,
    "messages": [{"role": "user", "content": PROMPT}],
}


@pytest.fixture
def server() -> Iterator[FakeAnthropic]:
    with running_anthropic_server() as fake:
        yield fake


def post(server: FakeAnthropic, body: dict[str, Any], headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/messages", json=body, headers=headers, timeout=5.0)


def events(response: httpx.Response) -> list[tuple[str, dict[str, Any]]]:
    parsed = []
    for block in response.text.strip().split("\n\n"):
        kind, data = block.split("\n")
        assert kind.startswith("event: ") and data.startswith("data: ")
        parsed.append((kind.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return parsed


@pytest.mark.parametrize(
    ("headers", "status", "error_type"),
    [
        ({"anthropic-version": "2023-06-01"}, 401, "authentication_error"),
        ({"x-api-key": "sk-ant-other", "anthropic-version": "2023-06-01"}, 401, "authentication_error"),
        ({"x-api-key": DEFAULT_API_KEY}, 400, "invalid_request_error"),
    ],
)
def test_requests_without_credentials_or_version_are_refused(
    server: FakeAnthropic, headers: dict[str, str], status: int, error_type: str
) -> None:
    server.script(Reply.answer("scripted, and not for refused requests"))
    response = post(server, BODY, headers)
    assert response.status_code == status
    assert response.json()["type"] == "error"
    assert response.json()["error"]["type"] == error_type
    # The script is still there for the next accepted request.
    assert post(server, BODY, HEADERS).json()["content"][0]["text"] == "scripted, and not for refused requests"


def test_a_bearer_token_is_accepted_like_x_api_key(server: FakeAnthropic) -> None:
    response = post(server, BODY, {"authorization": f"Bearer {DEFAULT_API_KEY}", "anthropic-version": "2023-06-01"})
    assert response.status_code == 200


def test_a_message_reply_has_the_api_shape(server: FakeAnthropic) -> None:
    response = post(server, BODY, HEADERS)
    message = response.json()
    assert response.status_code == 200
    assert message["type"] == "message" and message["role"] == "assistant"
    assert message["model"] == "claude-haiku-4-5"
    assert message["content"] == [{"type": "text", "text": 'According to the context, "Alpha beta gamma delta." [1].'}]
    assert message["stop_reason"] == "end_turn"
    assert message["usage"] == {
        "input_tokens": len(PROMPT) // 4,
        "output_tokens": len(message["content"][0]["text"]) // 4,
    }
    assert server.requests[0].headers["x-api-key"] == DEFAULT_API_KEY


def test_a_stream_sends_the_real_event_sequence(server: FakeAnthropic) -> None:
    response = post(server, {**BODY, "stream": True}, HEADERS)
    assert response.headers["content-type"].startswith("text/event-stream")
    sequence = events(response)
    kinds = [kind for kind, _ in sequence]
    assert kinds[:3] == ["message_start", "content_block_start", "ping"]
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(kinds[3:-3]) == {"content_block_delta"} and len(kinds[3:-3]) >= 2
    assert all(data["type"] == kind for kind, data in sequence)
    assert sequence[0][1]["message"]["usage"]["input_tokens"] == len(PROMPT) // 4
    text = "".join(data["delta"]["text"] for kind, data in sequence if kind == "content_block_delta")
    assert text == 'According to the context, "Alpha beta gamma delta." [1].'
    assert sequence[-2][1]["delta"]["stop_reason"] == "end_turn"
    assert sequence[-2][1]["usage"]["output_tokens"] == len(text) // 4


def test_errors_have_the_api_shape_and_headers(server: FakeAnthropic) -> None:
    server.script(Reply.rate_limited(retry_after="7"), Reply.overloaded())
    limited = post(server, BODY, HEADERS)
    assert (limited.status_code, limited.headers["retry-after"]) == (429, "7")
    assert limited.json()["error"]["type"] == "rate_limit_error"
    overloaded = post(server, BODY, HEADERS)
    assert (overloaded.status_code, overloaded.json()["error"]["type"]) == (529, "overloaded_error")
    assert post(server, BODY, HEADERS).status_code == 200
