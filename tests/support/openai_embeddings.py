"""A local stand-in for the OpenAI embeddings API: a real HTTP server, for the `openai` provider's tests.

This is the one test double the suite allows, because the thing it replaces is a paid external
API. It speaks the wire format (POST /v1/embeddings, JSON in and out, OpenAI's error bodies) over
real sockets on 127.0.0.1, so the production httpx client is exercised exactly as it runs; nothing
in the code under test is patched. It must stay protocol-only: no ragops imports, so a bug in the
embedder can't hide behind the same bug here.

Vectors are deterministic per (text, dimensions) and unit length; `vector_for` gives the expected
value. Every request is recorded. `script(...)` queues replies (429 with Retry-After, 5xx, malformed
bodies, wrong dimensions, delays) that the next requests receive in arrival order; when the queue
is empty (or cleared by `script()`), requests succeed.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
from collections import deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

import numpy as np


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


@dataclass(frozen=True)
class RecordedRequest:
    """A request as the server saw it; header names lower-cased, `body` None when not JSON."""

    number: int
    method: str
    path: str
    headers: Mapping[str, str]
    body: Any

    @property
    def inputs(self) -> list[str]:
        value = self.body.get("input") if isinstance(self.body, dict) else None
        if isinstance(value, str):
            return [value]
        return [item for item in value if isinstance(item, str)] if isinstance(value, list) else []


class FakeOpenAIEmbeddings:
    """The server's state and controls; build it with `running_openai_embeddings_server`."""

    def __init__(self, dimensions: int) -> None:
        self.dimensions = dimensions
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._script: deque[Reply] = deque()
        self._requests: list[RecordedRequest] = []
        self._completed: list[int] = []
        self._in_flight = 0
        self._max_in_flight = 0
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        # A short poll interval: shutdown() waits up to one interval, and every test stops a server.
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.01,), name="fake-openai-embeddings", daemon=True
        )

    @property
    def url(self) -> str:
        """The /v1 base URL, as a user would configure it."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

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

    def script(self, *replies: Reply) -> None:
        """Set the replies of the next requests, in arrival order, replacing any still queued.

        `script()` with no replies clears the queue: every request succeeds at once again.
        """
        with self._lock:
            self._script = deque(replies)

    @staticmethod
    def vector_for(text: str, dimensions: int) -> list[float]:
        seed = int.from_bytes(hashlib.blake2b(f"{dimensions}:{text}".encode(), digest_size=8).digest(), "little")
        vector = np.random.default_rng(seed).standard_normal(dimensions)
        result: list[float] = (vector / np.linalg.norm(vector)).tolist()
        return result

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        # Wake handlers sleeping on a `delay` first, so closing (which joins them) is prompt.
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def _begin(self, method: str, path: str, headers: Mapping[str, str], body: Any) -> tuple[RecordedRequest, Reply]:
        with self._lock:
            request = RecordedRequest(len(self._requests), method, path, headers, body)
            self._requests.append(request)
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            return request, self._script.popleft() if self._script else Reply()

    def _end(self, number: int) -> None:
        with self._lock:
            self._in_flight -= 1
            self._completed.append(number)

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


class _Server(ThreadingHTTPServer):
    fake: FakeOpenAIEmbeddings
    # Join handler threads on close, so no request outlives the test that made it.
    daemon_threads = False
    block_on_close = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (timeout, cancelled batch) is part of what the tests exercise.
        return None


class _Handler(BaseHTTPRequestHandler):
    server_version = "fake-openai-embeddings/1"
    # A connection that never sends a request must not hold up server_close() forever.
    timeout = 10

    def do_POST(self) -> None:
        fake = cast(_Server, self.server).fake
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = None
        headers = {name.lower(): value for name, value in self.headers.items()}
        request, reply = fake._begin("POST", self.path, headers, body)
        try:
            if reply.delay:
                fake._stopping.wait(reply.delay)
            status, payload = fake._respond(reply, request)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            fake._end(request.number)

    def log_message(self, format: str, *args: Any) -> None:
        return None


def _error_body(message: str, status: int) -> bytes:
    kind = "rate_limit_exceeded" if status == 429 else "server_error" if status >= 500 else "invalid_request_error"
    return json.dumps({"error": {"message": message, "type": kind, "param": None, "code": None}}).encode()


@contextmanager
def running_openai_embeddings_server(dimensions: int) -> Iterator[FakeOpenAIEmbeddings]:
    """A started server answering with `dimensions`-long vectors; stopped (handlers joined) on exit."""
    fake = FakeOpenAIEmbeddings(dimensions)
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


def closed_port_url() -> str:
    """A /v1 base URL on 127.0.0.1 where nothing listens: the port was just bound and released."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"
