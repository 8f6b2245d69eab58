"""A real `ragops serve` process on a database of the test's, for tests that talk to it as clients do."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import psycopg
from bench.common import runtime_processes
from psycopg import sql
from psycopg.conninfo import make_conninfo


@contextmanager
def ragops_serve(dsn: str, settings: Mapping[str, str], log_path: Path) -> Iterator[str]:
    """One `ragops serve` on `dsn` with these `RAGOPS_*` settings (the bench's launcher); its URL once ready.

    Stopped with SIGTERM afterwards, and it must have stopped cleanly (exit 0).
    """
    with runtime_processes(dsn, 1, dict(settings), log_path) as [replica]:
        yield replica.url
    assert replica.process.returncode == 0, log_path.read_text()


@contextmanager
def fresh_database(server_dsn: str, label: str) -> Iterator[str]:
    """A new, empty database on the server at `server_dsn` (its DSN), dropped afterwards."""
    name = "t_" + re.sub(r"[^a-z0-9]+", "_", label.lower())[:40] + "_" + uuid.uuid4().hex[:6]
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_conninfo(server_dsn, dbname=name)
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
