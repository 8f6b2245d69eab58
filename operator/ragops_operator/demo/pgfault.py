"""An injected latency fault: a TCP proxy in front of PostgreSQL that slows statements on chosen tables.

The demo's runtime reaches the embedded PostgreSQL only through this proxy. Everything passes
through unchanged and at once, except the statements whose SQL names a table given to `inject`:
their Bind (extended protocol) or Query (simple protocol) message is held for the injected delay
before it is forwarded, so each such statement takes that much longer, as on a slow disk.

Why by table: knowledge-base versions built in another embedding space (here, other HNSW
parameters) live in a chunk table of their own, so a fault on that table is tied to that version
and to nothing else. The runtime's traffic path changes with the activation pointer, and rolling
back really removes the slow statements, which is what the demo must show; a fault on the whole
connection would stay after the rollback and prove nothing.

To tell statements apart it reads the client's half of the PostgreSQL v3 protocol: the untyped
start-up messages, then typed messages (a type byte and a length). Parse maps a statement name to
its SQL (psycopg prepares a statement after a few executions and then sends only its name); Bind
and Query are the points where a statement starts to run. The server's half is copied as is.
This is a fault injector for the demo, not a general proxy: no TLS (the embedded server listens
on a Unix socket and the runtime connects with sslmode=disable), no replication protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from dataclasses import dataclass, field

_SSL_REQUEST = 80877103
_GSSENC_REQUEST = 80877104


@dataclass
class FaultStats:
    delayed_statements: int = 0
    delayed_seconds: float = 0.0


@dataclass
class _Connection:
    statements: dict[bytes, bytes] = field(default_factory=dict)
    """Prepared statement name (b"" for the unnamed one) -> its SQL."""


class SlowTableProxy:
    """Listens on 127.0.0.1 and forwards to the PostgreSQL Unix socket `upstream_socket`."""

    def __init__(self, upstream_socket: str) -> None:
        self._upstream = upstream_socket
        self._server: asyncio.Server | None = None
        self._faults: dict[bytes, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.stats = FaultStats()
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    def inject(self, table: str, delay_seconds: float) -> None:
        """From now on, each statement naming `table` is held for `delay_seconds` before it runs."""
        self._faults[table.encode()] = delay_seconds

    def clear(self) -> None:
        self._faults.clear()

    def _delay_for(self, sql: bytes) -> float:
        return max((delay for table, delay in self._faults.items() if table in sql), default=0.0)

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            server_reader, server_writer = await asyncio.open_unix_connection(self._upstream)
        except OSError:
            client_writer.close()
            self._tasks.discard(task)
            return
        downstream = asyncio.create_task(_copy(server_reader, client_writer))
        try:
            await self._client_to_server(client_reader, server_writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            server_writer.close()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(downstream, 5)
            client_writer.close()
            self._tasks.discard(task)

    async def _client_to_server(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Start-up phase: untyped messages (length, then a request code or the protocol version).
        while True:
            header = await reader.readexactly(8)
            length, code = struct.unpack("!ii", header)
            body = await reader.readexactly(length - 8)
            writer.write(header + body)
            await writer.drain()
            if code not in (_SSL_REQUEST, _GSSENC_REQUEST):
                break
            # The server answers with one byte; should it accept encryption, nothing can be read
            # from here on, so the rest is copied blind (and no fault applies).
        connection = _Connection()
        while True:
            header = await reader.readexactly(5)
            kind = header[:1]
            (length,) = struct.unpack("!i", header[1:])
            body = await reader.readexactly(length - 4)
            delay = self._statement_delay(connection, kind, body)
            if delay > 0:
                self.stats.delayed_statements += 1
                self.stats.delayed_seconds += delay
                await asyncio.sleep(delay)
            writer.write(header + body)
            await writer.drain()
            if kind == b"X":  # Terminate
                return

    def _statement_delay(self, connection: _Connection, kind: bytes, body: bytes) -> float:
        if kind == b"P":  # Parse: statement name, SQL, parameter types
            name, rest = _cstring(body)
            sql, _ = _cstring(rest)
            connection.statements[name] = sql
            return 0.0
        if kind == b"B":  # Bind: portal name, statement name, ...
            _, rest = _cstring(body)
            statement, _ = _cstring(rest)
            return self._delay_for(connection.statements.get(statement, b""))
        if kind == b"Q":  # simple Query: SQL
            sql, _ = _cstring(body)
            return self._delay_for(sql)
        return 0.0


def _cstring(data: bytes) -> tuple[bytes, bytes]:
    end = data.index(b"\x00")
    return data[:end], data[end + 1 :]


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()
