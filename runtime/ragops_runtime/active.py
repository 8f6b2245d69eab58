"""Follows the activation pointer of the served knowledge base, so a switch reaches every replica fast.

A dedicated connection LISTENs on the activation channel (a switch arrives in milliseconds), and
the pointer is also re-read every `poll_seconds`, so a lost notification or a dropped connection
delays a switch by at most that long. When the database goes away the watcher keeps the version
it has, reports the outage, and reconnects by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable

import psycopg
from psycopg import sql

from .store import ACTIVATION_CHANNEL, KnowledgeStore, VersionRecord

log = logging.getLogger("ragops.active")


SwitchCallback = Callable[[VersionRecord | None, VersionRecord], Awaitable[None]]


class ActiveVersionWatcher:
    """Holds the version currently served and replaces it when the pointer moves."""

    def __init__(
        self,
        dsn: str,
        knowledge_base: str,
        *,
        poll_seconds: float,
        on_switch: SwitchCallback,
    ) -> None:
        self._dsn = dsn
        self._kb = knowledge_base
        self._poll_seconds = poll_seconds
        self._on_switch = on_switch
        self._current: VersionRecord | None = None
        self._problem: str | None = "not started"
        self._task: asyncio.Task[None] | None = None
        self._store: KnowledgeStore | None = None
        self._wake = asyncio.Event()

    @property
    def current(self) -> VersionRecord | None:
        return self._current

    @property
    def problem(self) -> str | None:
        """Why no version is served or the pointer cannot be followed right now (None when fine)."""
        return self._problem

    async def start(self) -> None:
        await self._refresh_once()
        self._task = asyncio.create_task(self._run(), name="ragops-active-version")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._store is not None:
            await self._store.close()

    async def _run(self) -> None:
        listener = asyncio.create_task(self._listen(), name="ragops-activation-listener")
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._poll_seconds):
                        await self._wake.wait()
                self._wake.clear()
                await self._refresh_once()
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    async def _listen(self) -> None:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self._dsn, autocommit=True) as connection:
                    await connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(ACTIVATION_CHANNEL)))
                    self._wake.set()  # catch up on anything missed while disconnected
                    async for note in connection.notifies():
                        with contextlib.suppress(ValueError, KeyError):
                            if json.loads(note.payload)["kb"] == self._kb:
                                self._wake.set()
            except psycopg.Error as error:
                log.warning("activation listener lost its connection: %s", _first_line(error))
                await asyncio.sleep(min(self._poll_seconds * 4, 5.0))

    async def _refresh_once(self) -> None:
        try:
            if self._store is None:
                self._store = await KnowledgeStore.connect(self._dsn)
            await self._follow(self._store)
        except Exception as error:
            # Anything failing here is an outage to report through /readyz, never a reason to crash
            # the task that keeps the served version current.
            self._problem = f"database unreachable: {_first_line(error)}"
            if self._store is not None:
                with contextlib.suppress(Exception):
                    await self._store.close()
                self._store = None

    async def _follow(self, store: KnowledgeStore) -> None:
        activation = await store.activation(self._kb)
        if activation.active is None:
            self._problem = f"knowledge base {self._kb!r} has no active version"
            return
        if self._current is not None and self._current.version == activation.active:
            self._problem = None
            return
        record = await store.get_version(self._kb, activation.active)
        if record is None:
            self._problem = f"active version {activation.active!r} is missing from the store"
            return
        previous, self._current = self._current, record
        self._problem = None
        log.info(
            "serving knowledge base version",
            extra={"kb": self._kb, "version": record.version, "previous": previous.version if previous else None},
        )
        await self._on_switch(previous, record)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
