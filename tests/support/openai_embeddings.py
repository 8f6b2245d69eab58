"""A local stand-in for the OpenAI embeddings API: a real HTTP server, for the `openai` provider's tests.

This is the one test double the suite allows, because the thing it replaces is a paid external
API. It speaks the wire format (POST /v1/embeddings, JSON in and out, OpenAI's error bodies) over
real sockets on 127.0.0.1, so the production httpx client is exercised exactly as it runs; nothing
in the code under test is patched. It must stay protocol-only: no ragops imports, so a bug in the
embedder can't hide behind the same bug here.

Vectors are deterministic per (text, dimensions) and unit length; `vector_for` gives the expected
value. Every request is recorded. `script(...)` queues replies (429 with Retry-After, 5xx, malformed
bodies, wrong dimensions, delays) that the next requests receive in arrival order; when the queue
is empty (or cleared by `script()`), requests succeed. The server, the recording and the queue are
`http_double`'s, shared with the other doubles; the protocol is here. `latency` delays every
unscripted reply (a real API's round trip, for embedding-bound builds); `fail_inputs_containing`
fails the requests that carry a given text (one shard of a build, whichever request it lands in).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from tests.support import http_double


@dataclass(frozen=True)
class Reply:
    """One scripted reply. The defaults are a normal success; `delay` postpones any reply.

    `body` replaces the whole body; otherwise a non-200 status gets OpenAI's error JSON carrying
    `message`, and a 200 gets embeddings (`dimensions` long if set, in reverse order if `reverse`).
    """

    status: int = 200
    message: str = "scripted failure"
    body: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    dimensions: int | None = None
    reverse: bool = False

    @classmethod
    def rate_limited(cls, retry_after: str | None = "0") -> Reply:
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        return cls(status=429, message="Rate limit reached for requests", headers=headers)

    @classmethod
    def unavailable(cls, retry_after: str | None = None) -> Reply:
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        return cls(status=503, message="The server is overloaded or not ready yet.", headers=headers)

    @classmethod
    def server_error(cls, status: int = 500) -> Reply:
        return cls(status=status, message="The server had an error while processing your request.")

    @classmethod
    def error(cls, status: int, message: str) -> Reply:
        return cls(status=status, message=message)

    @classmethod
    def malformed(cls) -> Reply:
        return cls(body=b'{"object": "list", "data": [{"index": 0, "embedding": [0.1, ')

    @classmethod
    def wrong_dimension(cls, dimensions: int) -> Reply:
        return cls(dimensions=dimensions)

    @classmethod
    def slow(cls, seconds: float) -> Reply:
        return cls(delay=seconds)


class RecordedRequest(http_double.RecordedRequest):
    """A request as the server saw it; header names lower-cased, `body` None when not JSON."""

    @property
    def inputs(self) -> list[str]:
        value = self.body.get("input") if isinstance(self.body, dict) else None
        if isinstance(value, str):
            return [value]
        return [item for item in value if isinstance(item, str)] if isinstance(value, list) else []


class FakeOpenAIEmbeddings(http_double.HttpDouble[Reply, RecordedRequest]):
    """The server's state and controls; build it with `running_openai_embeddings_server`."""

    def __init__(self, dimensions: int, *, latency: float = 0.0) -> None:
        # `latency` delays every unscripted reply: an API's fixed round trip, for embedding-bound builds.
        super().__init__("fake-openai-embeddings", _Handler, lambda: Reply(delay=latency), RecordedRequest)
        self.dimensions = dimensions
        self._completed: list[int] = []
        self._in_flight = 0
        self._max_in_flight = 0
        self._poisoned: dict[str, tuple[Reply, int]] = {}

    def fail_inputs_containing(self, marker: str, reply: Reply, *, times: int) -> None:
        """The next `times` requests with an input containing `marker` get `reply` (before any script)."""
        with self._lock:
            self._poisoned[marker] = (reply, times)

    @property
    def url(self) -> str:
        """The /v1 base URL, as a user would configure it."""
        return f"{self._origin}/v1"

    @property
    def completed(self) -> list[int]:
        """Request numbers in the order their replies were sent."""
        with self._lock:
            return list(self._completed)

    @property
    def max_in_flight(self) -> int:
        """The most requests the server was handling at the same time."""
        with self._lock:
            return self._max_in_flight

    @staticmethod
    def vector_for(text: str, dimensions: int) -> list[float]:
        seed = int.from_bytes(hashlib.blake2b(f"{dimensions}:{text}".encode(), digest_size=8).digest(), "little")
        vector = np.random.default_rng(seed).standard_normal(dimensions)
        result: list[float] = (vector / np.linalg.norm(vector)).tolist()
        return result

    def _admit(self, request: RecordedRequest) -> Reply:
        self._in_flight += 1
        self._max_in_flight = max(self._max_in_flight, self._in_flight)
        for marker, (reply, times) in list(self._poisoned.items()):
            if any(marker in text for text in request.inputs):
                if times <= 1:
                    del self._poisoned[marker]
                else:
                    self._poisoned[marker] = (reply, times - 1)
                return reply
        return super()._admit(request)

    def _answer(self, out: http_double.DoubleHandler, request: RecordedRequest, reply: Reply) -> None:
        status, payload = self._respond(reply, request)
        out.send_body(status, payload, reply.headers.items())

    def _finish(self, request: RecordedRequest) -> None:
        with self._lock:
            self._in_flight -= 1
            self._completed.append(request.number)

    def _respond(self, reply: Reply, request: RecordedRequest) -> tuple[int, bytes]:
        if reply.body is not None:
            return reply.status, reply.body
        if reply.status != 200:
            return reply.status, _error_body(reply.message, reply.status)
        if request.path.rstrip("/") != "/v1/embeddings":
            return 404, _error_body(f"Unknown request URL: {request.method} {request.path}.", 404)
        body = request.body
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            return 400, _error_body("you must provide a model parameter", 400)
        raw_input = body.get("input")
        if not request.inputs or (isinstance(raw_input, list) and len(request.inputs) != len(raw_input)):
            return 400, _error_body("'input' must be a string or a non-empty array of strings", 400)
        requested = body.get("dimensions")
        dimensions = reply.dimensions or (requested if isinstance(requested, int) else self.dimensions)
        data = [
            {"object": "embedding", "index": index, "embedding": self.vector_for(text, dimensions)}
            for index, text in enumerate(request.inputs)
        ]
        if reply.reverse:
            data.reverse()
        tokens = sum(len(text.split()) for text in request.inputs)
        document = {
            "object": "list",
            "data": data,
            "model": body["model"],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return 200, json.dumps(document).encode()


class _Handler(http_double.DoubleHandler):
    server_version = "fake-openai-embeddings/1"


def _error_body(message: str, status: int) -> bytes:
    kind = "rate_limit_exceeded" if status == 429 else "server_error" if status >= 500 else "invalid_request_error"
    return json.dumps({"error": {"message": message, "type": kind, "param": None, "code": None}}).encode()


@contextmanager
def running_openai_embeddings_server(dimensions: int, *, latency: float = 0.0) -> Iterator[FakeOpenAIEmbeddings]:
    """A started server answering with `dimensions`-long vectors after `latency` seconds; stopped on exit."""
    with http_double.running(FakeOpenAIEmbeddings(dimensions, latency=latency)) as fake:
        yield fake


def closed_port_url() -> str:
    """A /v1 base URL on 127.0.0.1 where nothing listens: the port was just bound and released."""
    return f"http://127.0.0.1:{http_double.free_port()}/v1"
