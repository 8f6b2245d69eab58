"""How the runtime meets the network: uvicorn's h11 server with the bounds a public endpoint needs.

uvicorn bounds an *incomplete* request head (h11's buffer) but lets a complete one of any size
through when it arrives in one read, and it never times out a request that arrives slowly: a
client that sends its head or body a byte at a time (slowloris), or connects and sends nothing,
keeps its connection, its buffers and, once the head is in, a task for as long as it likes.
`BoundedH11Protocol` adds what is missing, below the app:

- a head (request line and headers) over `max_header_bytes` is refused with 431, whole or not;
- every request gets a read deadline: its head and body must arrive within `read_timeout`
  seconds of its first byte, and a new connection must start its first request within that
  long; past it the client gets 408 (when no answer has started) and the connection is closed.
  Between requests of a kept-alive connection uvicorn's own keep-alive timeout applies.

A body is bounded by `BodyLimit`, the app's outermost ASGI middleware (app.py adds it): it reads
the body before any route does, refusing it with 413 as soon as it passes its path's limit, or
at once when Content-Length says it will; only then does the app see it. (Starlette's own limit
answers in plain text and only when a route reads the body.)

Refusals made here carry the project's error shape (wire.py), like the app's. `server_config`
is how the runtime is served: `ragops serve` and the tests serve through it, so what is tested
is what runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import h11
import uvicorn
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from .settings import RuntimeSettings
from .wire import error, error_body


class _BoundedConnection(h11.Connection):
    """An h11 server connection that also refuses a complete head over `max_head_bytes`.

    h11's own limit (`max_incomplete_event_size`) only applies while a head is incomplete; the
    refusal it raised, or this one, is kept in `refusal` for the error response.
    """

    def __init__(self, max_head_bytes: int) -> None:
        super().__init__(h11.SERVER, max_incomplete_event_size=max_head_bytes)
        self.max_head_bytes = max_head_bytes
        self.refusal: h11.RemoteProtocolError | None = None

    def next_event(self) -> Any:
        try:
            event = super().next_event()
        except h11.RemoteProtocolError as refusal:
            self.refusal = refusal
            raise
        if isinstance(event, h11.Request):
            # The request line and each "name: value\r\n": what the client made us hold.
            size = len(event.method) + len(event.target) + 12
            size += sum(len(name) + len(value) + 4 for name, value in event.headers.raw_items())
            if size > self.max_head_bytes:
                self.refusal = h11.RemoteProtocolError("request head too large", error_status_hint=431)
                raise self.refusal
        return event


class BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a head size cap and a per-request read deadline (see the module doc)."""

    read_timeout: float = 10.0
    max_head_bytes: int = 16384

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conn: _BoundedConnection = _BoundedConnection(self.max_head_bytes)
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._deadline is None and self.conn.their_state is h11.IDLE:
            self._arm()  # the first bytes of a request on a kept-alive connection
        super().data_received(data)
        self._follow()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._follow()  # a pipelined request may have started meanwhile

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a request h11 refused; ours says why, in the error shape."""
        refusal = self.conn.refusal
        if refusal is not None and refusal.error_status_hint == 431:
            self._refuse(
                431,
                "headers_too_large",
                f"the request line and headers are over {self.max_head_bytes} bytes (RAGOPS_MAX_HEADER_BYTES)",
            )
        else:
            detail = f": {refusal}" if refusal is not None else ""
            self._refuse(400, "invalid_http", f"the request is not valid HTTP/1.1{detail}")

    # ---- the read deadline ---------------------------------------------------------------------

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.read_timeout, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _follow(self) -> None:
        """Keeps the deadline while a request is arriving, drops it once the request is in."""
        state = self.conn.their_state
        arriving = state is h11.SEND_BODY or (state is h11.IDLE and bool(self.conn.trailing_data[0]))
        if not arriving:
            self._disarm()
        elif self._deadline is None:
            self._arm()

    def _expired(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        state = self.conn.their_state
        if state is not h11.IDLE and state is not h11.SEND_BODY:
            return
        cycle = self.cycle if state is h11.SEND_BODY else None
        answered = cycle is not None and cycle.response_started
        if cycle is not None:
            # The app may be waiting for the rest of the body: it gets a disconnect, and
            # anything it sends from now on is dropped.
            cycle.disconnected = True
            cycle.message_event.set()
        if answered:
            self.transport.close()
        else:
            self._refuse(
                408,
                "request_timeout",
                f"the request did not arrive within {self.read_timeout:g}s (RAGOPS_READ_TIMEOUT_SECONDS)",
            )

    def _refuse(self, status: int, code: str, message: str) -> None:
        """Answers `status` with the error shape and closes the connection, whatever h11's state."""
        body = error_body(code, message)
        head = (
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
            "content-type: application/json\r\n"
            f"content-length: {len(body)}\r\n"
            "connection: close\r\n\r\n"
        )
        self.transport.write(head.encode("ascii") + body)
        self.transport.close()


class BodyLimit:
    """ASGI middleware: a request body over its limit is refused with 413 before the app reads it.

    `limits` maps a path to its limit (a batch endpoint may take more than a question) and where
    the limit comes from, for the message; every other path has `default`. The body is read
    here, up to the limit, and handed to the app whole; a refused request's connection is closed
    after the answer, whatever the client still sends.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        default: tuple[int, str],
        limits: Mapping[str, tuple[int, str]],
        openai_paths: frozenset[str] = frozenset(),
    ) -> None:
        self.app = app
        self.default = default
        self.limits = limits
        self.openai_paths = openai_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"].rstrip("/")
        limit, source = self.limits.get(path, self.default)
        openai = path in self.openai_paths
        declared = next((value for name, value in scope["headers"] if name == b"content-length"), None)
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._refuse(limit, source, openai, scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left before sending its body: no one to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self._refuse(limit, source, openai, scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        whole: Message | None = {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        async def replay() -> Message:
            nonlocal whole
            if whole is not None:
                message, whole = whole, None
                return message
            return await receive()  # after the body: only a disconnect can come

        await self.app(scope, replay, send)

    @staticmethod
    async def _refuse(limit: int, source: str, openai: bool, scope: Scope, receive: Receive, send: Send) -> None:
        message = f"the body is over {limit} bytes ({source})"
        response = error(413, "body_too_large", message, close=True)
        if openai:
            # OpenAI's error shape on its routes: the same code and message, with its type and param.
            body = {
                "error": {"message": message, "type": "invalid_request_error", "param": None, "code": "body_too_large"}
            }
            response = JSONResponse(status_code=413, content=body, headers={"Connection": "close"})
        await response(scope, receive, send)


def bounded_protocol(*, read_timeout: float, max_head_bytes: int) -> type[BoundedH11Protocol]:
    """The protocol class uvicorn instantiates per connection, with these bounds."""
    return type(
        "BoundedH11Protocol",
        (BoundedH11Protocol,),
        {"read_timeout": read_timeout, "max_head_bytes": max_head_bytes},
    )


def server_config(
    app: Any, settings: RuntimeSettings, *, host: str | None = None, port: int | None = None
) -> uvicorn.Config:
    """How `app` is served: h11 with the bounds above, logs through ragops' JSON logger only."""
    return uvicorn.Config(
        app,
        host=host if host is not None else settings.host,
        port=port if port is not None else settings.port,
        http=bounded_protocol(read_timeout=settings.read_timeout_seconds, max_head_bytes=settings.max_header_bytes),
        h11_max_incomplete_event_size=settings.max_header_bytes,
        lifespan="on",
        log_config=None,
        access_log=False,
    )
