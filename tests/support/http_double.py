"""The scaffolding the HTTP test doubles share: a real server on 127.0.0.1, recording, scripted replies.

The suite allows a double only for a paid external API (or an external service), and each of those
(`openai_embeddings`, `anthropic_messages`, `rerank_server`) is built on this: a stdlib threading
server on an ephemeral port in a background thread, every request recorded, and a queue of scripted
replies that the next requests receive in arrival order. What a double says — paths, validation,
bodies, streaming — stays in its own module. Like the doubles, this must stay protocol-only: no
ragops imports, so a bug in the code under test can't hide behind the same bug here.
"""

from __future__ import annotations

import json
import socket
import threading
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Generic, Protocol, TypeVar, cast


class ScriptedReply(Protocol):
    """What the scaffolding needs of a double's reply: how long to wait before answering."""

    @property
    def delay(self) -> float: ...


@dataclass(frozen=True)
class RecordedRequest:
    """A request as the server saw it; header names lower-cased, `body` None when not JSON."""

    number: int
    method: str
    path: str
    headers: Mapping[str, str]
    body: Any


ReplyT = TypeVar("ReplyT", bound=ScriptedReply)
RequestT = TypeVar("RequestT", bound=RecordedRequest)
DoubleT = TypeVar("DoubleT", bound="HttpDouble[Any, Any]")


class HttpDouble(ABC, Generic[ReplyT, RequestT]):
    """A double's server lifecycle, request log and reply script; a subclass answers in `_answer`.

    `name` names the server thread; `handler` is the double's `DoubleHandler`; `default_reply()` is
    what a request gets when the script is empty; `recorded` is the double's `RecordedRequest`
    (a subclass may add accessors for its protocol).
    """

    def __init__(
        self,
        name: str,
        handler: type[DoubleHandler],
        default_reply: Callable[[], ReplyT],
        recorded: type[RequestT],
    ) -> None:
        self._default_reply = default_reply
        self._recorded = recorded
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._script: deque[ReplyT] = deque()
        self._requests: list[RequestT] = []
        self._server = _Server(("127.0.0.1", 0), handler)
        self._server.double = self
        # A short poll interval: shutdown() waits up to one interval, and every test stops a server.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.01,), name=name, daemon=True)

    @property
    def requests(self) -> list[RequestT]:
        with self._lock:
            return list(self._requests)

    def script(self, *replies: ReplyT) -> None:
        """Set the replies of the next requests, in arrival order, replacing any still queued.

        A request the double refuses before any script applies (see `_admit`) takes none.
        `script()` with no replies clears the queue: every request succeeds at once again.
        """
        with self._lock:
            self._script = deque(replies)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        # Wake handlers waiting on `_stopping` (a `delay`, a stalled stream) first, so closing
        # (which joins them) is prompt.
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    @property
    def _origin(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def _begin(self, method: str, path: str, headers: Mapping[str, str], body: Any) -> tuple[RequestT, ReplyT]:
        """Record the request and take its reply."""
        with self._lock:
            request = self._recorded(len(self._requests), method, path, headers, body)
            self._requests.append(request)
            return request, self._admit(request)

    def _admit(self, request: RequestT) -> ReplyT:
        """The reply for a request just recorded; called with the lock held, so it may count too."""
        return self._script.popleft() if self._script else self._default_reply()

    @abstractmethod
    def _answer(self, out: DoubleHandler, request: RequestT, reply: ReplyT) -> None:
        """Write the whole reply to `out`; the handler has already waited out the reply's `delay`."""

    def _finish(self, request: RequestT) -> None:
        """Called once the reply to `request` is written (or the client has gone)."""


class DoubleHandler(BaseHTTPRequestHandler):
    """Reads a POST's JSON body, records it, waits out the reply's delay and lets the double answer.

    A double subclasses it to name itself (`server_version`) and pick its `protocol_version`.
    """

    # A connection that never sends a request must not hold up server_close() forever.
    timeout = 10

    def do_POST(self) -> None:
        double = cast(_Server, self.server).double
        # Every reply closes its connection, so no idle keep-alive connection holds up server_close().
        self.close_connection = True
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = None
        headers = {name.lower(): value for name, value in self.headers.items()}
        request, reply = double._begin(self.command, self.path, headers, body)
        try:
            if reply.delay:
                double._stopping.wait(reply.delay)
            double._answer(self, request, reply)
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            double._finish(request)

    def send_body(
        self,
        status: int,
        payload: bytes,
        headers: Iterable[tuple[str, str]] = (),
        content_type: str = "application/json",
    ) -> None:
        """A complete reply: status, Content-Type and Content-Length, then `headers` in order, then `payload`."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        return None


class _Server(ThreadingHTTPServer):
    double: HttpDouble[Any, Any]
    # Join handler threads on close, so no request outlives the test that made it.
    daemon_threads = False
    block_on_close = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (timeout, cancelled batch, closed stream) is part of what the tests exercise.
        return None


@contextmanager
def running(double: DoubleT) -> Iterator[DoubleT]:
    """`double` started; stopped (handlers joined) on exit."""
    double.start()
    try:
        yield double
    finally:
        double.stop()


def free_port() -> int:
    """A port on 127.0.0.1 that was just bound and released: free to listen on, and nothing answers there."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port
