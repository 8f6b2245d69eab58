"""A real `ragops serve` process on a database of the test's, for tests that talk to it as clients do."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx
import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from tests.support.http_double import free_port

RAGOPS = str(Path(sys.executable).parent / "ragops")


@contextmanager
def ragops_serve(dsn: str, settings: Mapping[str, str], log_path: Path) -> Iterator[str]:
    """`ragops serve` on `dsn` with these `RAGOPS_*` settings (nothing else of the environment's); its URL.

    Yields once /readyz answers 200; SIGTERM (then SIGKILL) afterwards, and the process must exit 0.
    """
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("RAGOPS_", "ANTHROPIC_", "OTEL_"))}
    env.update({"RAGOPS_DSN": dsn, "RAGOPS_HOST": "127.0.0.1", "RAGOPS_PORT": str(port), **settings})
    url = f"http://127.0.0.1:{port}"
    with log_path.open("ab") as log:
        process = subprocess.Popen([RAGOPS, "serve"], env=env, stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + 120
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"ragops serve exited with {process.returncode}: {log_path.read_text()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"ragops serve was not ready in 120 s: {log_path.read_text()}")
                try:
                    if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    assert process.returncode == 0, log_path.read_text()


@contextmanager
def scratch_database(server_dsn: str, prefix: str) -> Iterator[str]:
    """A new database on the test server for a module's worth of tests (pg_dsn's is per test); dropped after."""
    name = f"{prefix}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_conninfo(server_dsn, dbname=name)
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
