"""A local stand-in for the Anthropic Messages API: a real HTTP server, for the generation tests.

This is the one test double the suite allows, because the thing it replaces is a paid external
API. It speaks the wire format over real sockets on 127.0.0.1 — POST /v1/messages, JSON replies,
server-sent events when the request says `"stream": true`, Anthropic's error bodies — so the real
`anthropic` SDK runs exactly as in production; nothing in the code under test is patched. It must
stay protocol-only: no ragops imports, so a bug in the generator can't hide behind the same bug here.

Every request is recorded. Requests need the API key the server was started with, as `x-api-key` or
as `Authorization: Bearer` (the SDK 2.x sends the latter), else 401 `authentication_error`, and an
`anthropic-version` header (else 400, as the real API answers).
The default answer is deterministic: it quotes the first words of passage [1] of the prompt and
cites [1] (`answer_for`), or says the context has no answer when there is no passage [1]; input
tokens are about a quarter of the prompt's characters. `script(...)` queues replies (429 with
Retry-After, 5xx, 529 overloaded, slow, malformed, streams that stall, break or fail mid-way) that
the next authorized requests receive in arrival order; `script()` clears the queue. The server,
the recording and the queue are `http_double`'s, shared with the other doubles; the protocol is here.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from tests.support import http_double

DEFAULT_API_KEY = "sk-ant-test-0123456789abcdef"
ANSWER_WORDS = 8
NO_ANSWER = "The provided context does not contain the answer to this question."
# How long a stalled stream holds its connection; stop() wakes it at once.
_STALL_SECONDS = 60.0
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}
_PASSAGE_ONE = re.compile(r"^\[1\][^\n]*\n([^\n]*)", re.MULTILINE)


@dataclass(frozen=True)
class Reply:
    """One scripted reply. The defaults are a normal success; `delay` postpones any reply.

    A non-200 `status` gets Anthropic's error JSON (`error_type`, `message`) whether or not the
    request streams, as the real API refuses before it starts a stream. `body` replaces the whole
    body; `cut_off` truncates it (see `malformed`); `without_text` answers with a tool_use block
    only. `text` replaces the default answer. For streams, after `stall_after` text deltas the
    server stops sending but keeps the connection open; after `drop_after` it closes the connection
    in the middle of the chunked body; after `error_after` it sends an `error` event.
    """

    status: int = 200
    error_type: str | None = None
    message: str = "scripted failure"
    body: bytes | None = None
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    text: str | None = None
    cut_off: bool = False
    without_text: bool = False
    stall_after: int | None = None
    drop_after: int | None = None
    error_after: int | None = None

    @classmethod
    def answer(cls, text: str) -> Reply:
        return cls(text=text)

    @classmethod
    def rate_limited(cls, retry_after: str | None = "2") -> Reply:
        headers = {"retry-after": retry_after} if retry_after is not None else {}
        return cls(status=429, message="Number of request tokens has exceeded your rate limit.", headers=headers)

    @classmethod
    def overloaded(cls) -> Reply:
        return cls(status=529, message="Overloaded")

    @classmethod
    def server_error(cls, status: int = 500) -> Reply:
        return cls(status=status, error_type="api_error", message="Internal server error")

    @classmethod
    def error(cls, status: int, message: str, error_type: str | None = None) -> Reply:
        return cls(status=status, message=message, error_type=error_type)

    @classmethod
    def malformed(cls) -> Reply:
        """A 200 whose JSON (or, for a stream, whose first event's data) is cut off."""
        return cls(cut_off=True)

    @classmethod
    def no_text(cls) -> Reply:
        """A well-formed 200 message whose content has no text block."""
        return cls(without_text=True)

    @classmethod
    def html(cls) -> Reply:
        """A 200 that is not JSON at all, as a misconfigured proxy might send."""
        return cls(body=b"<html><body>Welcome to nginx!</body></html>", content_type="text/html")

    @classmethod
    def slow(cls, seconds: float) -> Reply:
        return cls(delay=seconds)

    @classmethod
    def stall_stream_after(cls, deltas: int) -> Reply:
        return cls(stall_after=deltas)

    @classmethod
    def drop_stream_after(cls, deltas: int) -> Reply:
        return cls(drop_after=deltas)

    @classmethod
    def stream_error_after(
        cls, deltas: int, error_type: str = "overloaded_error", message: str = "Overloaded"
    ) -> Reply:
        return cls(error_after=deltas, error_type=error_type, message=message)


class RecordedRequest(http_double.RecordedRequest):
    """A request as the server saw it; header names lower-cased, `body` None when not JSON."""

    @property
    def system(self) -> str:
        return _text_of(self.body.get("system")) if isinstance(self.body, dict) else ""

    @property
    def user_text(self) -> str:
        """The text of the user messages, joined by blank lines."""
        messages = self.body.get("messages") if isinstance(self.body, dict) else None
        if not isinstance(messages, list):
            return ""
        return "\n\n".join(
            _text_of(message.get("content"))
            for message in messages
            if isinstance(message, dict) and message.get("role") == "user"
        )

    @property
    def streaming(self) -> bool:
        return isinstance(self.body, dict) and self.body.get("stream") is True


class FakeAnthropic(http_double.HttpDouble[Reply, RecordedRequest]):
    """The server's state and controls; build it with `running_anthropic_server`."""

    def __init__(self, api_key: str) -> None:
        super().__init__("fake-anthropic", _Handler, Reply, RecordedRequest)
        self.api_key = api_key

    @property
    def url(self) -> str:
        """The base URL for the SDK (`base_url=`); the SDK appends /v1/messages."""
        return self._origin

    @staticmethod
    def answer_for(prompt: str) -> str:
        """The default answer to a prompt: the first words of passage [1], quoted and cited."""
        match = _PASSAGE_ONE.search(prompt)
        if match is None or not match.group(1).strip():
            return NO_ANSWER
        words = " ".join(match.group(1).split()[:ANSWER_WORDS])
        return f'According to the context, "{words}" [1].'

    def _admit(self, request: RecordedRequest) -> Reply:
        """A refusal (bad key, headers or body) comes before the script, which only authorized requests use."""
        refusal = self._refusal(request)
        return refusal if refusal is not None else super()._admit(request)

    def _refusal(self, request: RecordedRequest) -> Reply | None:
        if self.api_key not in (request.headers.get("x-api-key"), _bearer(request.headers.get("authorization"))):
            return Reply.error(401, "invalid x-api-key", "authentication_error")
        if not request.headers.get("anthropic-version"):
            return Reply.error(400, "anthropic-version: header is required", "invalid_request_error")
        if request.path.rstrip("/") != "/v1/messages":
            return Reply.error(404, f"Not found: {request.path}", "not_found_error")
        body = request.body
        if not isinstance(body, dict):
            return Reply.error(400, "request body must be a JSON object", "invalid_request_error")
        if not isinstance(body.get("model"), str) or not body["model"]:
            return Reply.error(400, "model: Field required", "invalid_request_error")
        max_tokens = body.get("max_tokens")
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            return Reply.error(400, "max_tokens: Field required", "invalid_request_error")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return Reply.error(400, "messages: at least one message is required", "invalid_request_error")
        return None

    def _answer(self, out: http_double.DoubleHandler, request: RecordedRequest, reply: Reply) -> None:
        if reply.body is not None:
            _send(out, reply.status, reply.body, reply.headers, reply.content_type)
        elif reply.status != 200:
            error_type = reply.error_type or _ERROR_TYPES.get(reply.status, "api_error")
            _send(out, reply.status, _error_body(error_type, reply.message), reply.headers)
        elif request.streaming:
            self._stream(out, request, reply)
        else:
            _send(out, 200, self._message_body(request, reply), reply.headers)

    def _message(self, request: RecordedRequest, reply: Reply) -> tuple[str, int, int, str]:
        """(text, input tokens, output tokens, stop reason) for a successful reply."""
        body = request.body
        text = reply.text if reply.text is not None else self.answer_for(request.user_text)
        stop_reason = "end_turn"
        # Past max_tokens the real API cuts the answer off and says so.
        if len(text) // 4 > body["max_tokens"]:
            text = text[: body["max_tokens"] * 4]
            stop_reason = "max_tokens"
        input_tokens = max(1, len(request.system + request.user_text) // 4)
        return text, input_tokens, max(1, len(text) // 4), stop_reason

    def _message_body(self, request: RecordedRequest, reply: Reply) -> bytes:
        text, input_tokens, output_tokens, stop_reason = self._message(request, reply)
        if reply.cut_off:
            return b'{"id": "msg_cut", "type": "message", "role": "assistant", "content": [{"type": "te'
        content: list[dict[str, Any]] = [{"type": "text", "text": text}]
        if reply.without_text:
            content = [{"type": "tool_use", "id": "toolu_01", "name": "lookup", "input": {}}]
        message = {
            "id": f"msg_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": request.body["model"],
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
        }
        return json.dumps(message).encode()

    def _stream(self, out: http_double.DoubleHandler, request: RecordedRequest, reply: Reply) -> None:
        text, input_tokens, output_tokens, stop_reason = self._message(request, reply)
        out.send_response(200)
        out.send_header("Content-Type", "text/event-stream; charset=utf-8")
        out.send_header("Cache-Control", "no-cache")
        out.send_header("Transfer-Encoding", "chunked")
        out.send_header("Connection", "close")
        out.send_header("request-id", f"req_{uuid.uuid4().hex[:24]}")
        for name, value in reply.headers.items():
            out.send_header(name, value)
        out.end_headers()
        if reply.cut_off:
            _chunk(out, b'event: message_start\ndata: {"type": "message_start", "message": {"id": \n\n')
            _end_chunks(out)
            return
        message = {
            "id": f"msg_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": request.body["model"],
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": 1},
        }
        _event(out, "message_start", {"message": message})
        block: dict[str, Any] = {"type": "text", "text": ""}
        if reply.without_text:
            block = {"type": "tool_use", "id": "toolu_01", "name": "lookup", "input": {}}
        _event(out, "content_block_start", {"index": 0, "content_block": block})
        _event(out, "ping", {})
        for number, piece in enumerate(_deltas(text) if not reply.without_text else []):
            if number == reply.stall_after:
                self._stopping.wait(_STALL_SECONDS)
                return
            if number == reply.drop_after:
                # No terminating chunk: the client sees the body end in the middle, as on a cut connection.
                return
            if number == reply.error_after:
                error = {"type": "error", "error": {"type": reply.error_type, "message": reply.message}}
                _chunk(out, f"event: error\ndata: {json.dumps(error)}\n\n".encode())
                _end_chunks(out)
                return
            _event(out, "content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": piece}})
        _event(out, "content_block_stop", {"index": 0})
        _event(
            out,
            "message_delta",
            {"delta": {"stop_reason": stop_reason, "stop_sequence": None}, "usage": {"output_tokens": output_tokens}},
        )
        _event(out, "message_stop", {})
        _end_chunks(out)


class _Handler(http_double.DoubleHandler):
    server_version = "fake-anthropic/1"
    # HTTP/1.1 for chunked streams, as the real API sends them; every reply still closes its connection.
    protocol_version = "HTTP/1.1"


def _send(
    out: http_double.DoubleHandler,
    status: int,
    payload: bytes,
    headers: Mapping[str, str],
    content_type: str = "application/json",
) -> None:
    """A whole reply, with the headers the real API sends on every one ahead of the scripted ones."""
    own = [("Connection", "close"), ("request-id", f"req_{uuid.uuid4().hex[:24]}")]
    out.send_body(status, payload, [*own, *headers.items()], content_type)


def _event(out: http_double.DoubleHandler, kind: str, data: dict[str, Any]) -> None:
    _chunk(out, f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode())


def _chunk(out: http_double.DoubleHandler, data: bytes) -> None:
    # The handler's wfile is unbuffered, so each event leaves at once, as the SDK expects of a live stream.
    out.wfile.write(f"{len(data):X}\r\n".encode() + data + b"\r\n")


def _end_chunks(out: http_double.DoubleHandler) -> None:
    out.wfile.write(b"0\r\n\r\n")


def _deltas(text: str) -> list[str]:
    """The answer in pieces of up to three words (trailing spaces kept), so they join back to the text exactly."""
    words = re.findall(r"\S+\s*", text)
    pieces = ["".join(words[start : start + 3]) for start in range(0, len(words), 3)]
    return pieces or [text]


def _bearer(value: str | None) -> str | None:
    scheme, _, token = (value or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def _text_of(content: Any) -> str:
    """The text of a `system` or message `content`: a string, or a list of text blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            block["text"]
            for block in content
            if isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str)
        )
    return ""


def _error_body(error_type: str, message: str) -> bytes:
    return json.dumps(
        {"type": "error", "error": {"type": error_type, "message": message}, "request_id": f"req_{uuid.uuid4().hex}"}
    ).encode()


@contextmanager
def running_anthropic_server(api_key: str = DEFAULT_API_KEY) -> Iterator[FakeAnthropic]:
    """A started server accepting `api_key`; stopped (handlers joined) on exit."""
    with http_double.running(FakeAnthropic(api_key)) as fake:
        yield fake


def closed_port_url() -> str:
    """A base URL on 127.0.0.1 where nothing listens: the port was just bound and released."""
    return f"http://127.0.0.1:{http_double.free_port()}"
