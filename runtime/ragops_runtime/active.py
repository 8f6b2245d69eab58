"""Follows the activation pointer and traffic split of the served knowledge base: changes reach every replica fast.

A dedicated connection LISTENs on the activation channel (a switch, a new canary weight or an
abort arrives in milliseconds), and the pointer and split are also re-read every `poll_seconds`,
so a lost notification or a dropped connection delays a change by at most that long. When the
database goes away the watcher keeps the split it has, reports the outage, and reconnects by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable

import psycopg
from psycopg import sql

from .errors import first_line
from .rollout import ServedSplit
from .store import ACTIVATION_CHANNEL, KnowledgeStore, VersionRecord

log = logging.getLogger("ragops.active")


ChangeCallback = Callable[[ServedSplit | None, ServedSplit], Awaitable[None]]
"""Called with the previous split (None at start) and the new one, whenever anything in it changed."""


class ActiveVersionWatcher:
    """Holds the split currently served (stable version, candidate, weights) and replaces it when it moves."""

    def __init__(
        self,
        dsn: str,
        knowledge_base: str,
        *,
        poll_seconds: float,
        on_change: ChangeCallback,
    ) -> None:
        self._dsn = dsn
        self._kb = knowledge_base
        self._poll_seconds = poll_seconds
        self._on_change = on_change
        self._served: ServedSplit | None = None
        self._problem: str | None = "not started"
        self._task: asyncio.Task[None] | None = None
        self._store: KnowledgeStore | None = None
        self._wake = asyncio.Event()

    @property
    def current(self) -> VersionRecord | None:
        """The stable version: the one the activation pointer names."""
        return self._served.stable if self._served is not None else None

    @property
    def served(self) -> ServedSplit:
        """The whole split, read once per query so one query sees one consistent split."""
        return self._served if self._served is not None else ServedSplit(stable=None)

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
                log.warning("activation listener lost its connection: %s", first_line(error))
                await asyncio.sleep(min(self._poll_seconds * 4, 5.0))

    async def _refresh_once(self) -> None:
        try:
            if self._store is None:
                self._store = await KnowledgeStore.connect(self._dsn)
            await self._follow(self._store)
        except Exception as error:
            # Anything failing here is an outage to report through /readyz, never a reason to crash
            # the task that keeps the served version current.
            self._problem = f"database unreachable: {first_line(error)}"
            if self._store is not None:
                with contextlib.suppress(Exception):
                    await self._store.close()
                self._store = None

    async def _follow(self, store: KnowledgeStore) -> None:
        split = await store.traffic(self._kb)
        if split.stable is None:
            self._problem = f"knowledge base {self._kb!r} has no active version"
            return
        previous = self._served
        known = (previous.stable, previous.canary) if previous is not None else ()
        stable = await self._record(store, split.stable, known)
        if stable is None:
            self._problem = f"active version {split.stable!r} is missing from the store"
            return
        canary = await self._record(store, split.canary, known) if split.canary is not None else None
        served = ServedSplit(
            stable=stable,
            canary=canary,
            canary_weight=split.canary_weight if canary is not None else 0,
            shadow_percent=split.shadow_percent if canary is not None else 0.0,
            split_id=split.split_id,
            probe=split.probe if canary is not None else None,
        )
        self._problem = None
        if served == previous:
            return
        self._served = served
        if previous is None or previous.stable != stable:
            log.info(
                "serving knowledge base version",
                extra={
                    "kb": self._kb,
                    "version": stable.version,
                    "previous": previous.stable.version if previous and previous.stable else None,
                },
            )
        if _shares(previous) != _shares(served):
            log.info(
                f"traffic split: canary {canary.version if canary else None} at {served.canary_weight} %, "
                f"shadow {served.shadow_percent:g} %, step {served.split_id}",
                extra={"kb": self._kb},
            )
        await self._on_change(previous, served)

    async def _record(
        self, store: KnowledgeStore, version: str, known: tuple[VersionRecord | None, ...]
    ) -> VersionRecord | None:
        """The record of `version`, reusing one already held (versions are immutable once built)."""
        for record in known:
            if record is not None and record.version == version:
                return record
        return await store.get_version(self._kb, version)


def _shares(split: ServedSplit | None) -> tuple[object, ...]:
    """What a split log line reports; nothing for no split."""
    if split is None or split.canary is None:
        return ()
    return (split.canary.version, split.canary_weight, split.shadow_percent, split.split_id)
