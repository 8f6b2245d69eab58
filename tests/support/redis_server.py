"""A real Redis for tests: Debian's /usr/bin/redis-server on a free 127.0.0.1 port, its files in a temp dir.

`running_redis` starts it, waits until it answers PING and stops it on exit. `kill` (SIGKILL, as a
crash) and `start` (the same port, an empty dataset) let a test take it away and bring it back.
A missing binary fails loudly (tools/system-packages.sh installs it) instead of skipping.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from tests.support.http_double import free_port

REDIS_SERVER = Path("/usr/bin/redis-server")


class RedisServer:
    def __init__(self, directory: Path) -> None:
        assert REDIS_SERVER.is_file(), f"{REDIS_SERVER} is missing: tools/system-packages.sh installs redis-server"
        self.directory = directory
        self.port = free_port()
        self.log_file = directory / "redis.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10) -> None:
        # No persistence: a restart comes back empty, like a cache node that lost its memory.
        self._process = subprocess.Popen(
            [
                str(REDIS_SERVER),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--save",
                "",
                "--appendonly",
                "no",
                "--logfile",
                str(self.log_file),
                "--maxmemory",
                "64mb",
                "--maxmemory-policy",
                "allkeys-lru",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        with redis.Redis.from_url(self.url, socket_timeout=1, socket_connect_timeout=1) as client:
            while True:
                if self._process.poll() is not None:
                    log = self.log_file.read_text() if self.log_file.exists() else ""
                    raise RuntimeError(f"redis-server exited with {self._process.returncode}:\n{log}")
                try:
                    if client.ping():
                        return
                except redis.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"redis-server did not answer within {timeout}s")
                time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL, as a crash or a lost node: no goodbye to connected clients."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait(timeout=10)
        self._process = None

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=10)
        self._process = None

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=2)


@contextmanager
def running_redis(directory: Path) -> Iterator[RedisServer]:
    server = RedisServer(directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()
