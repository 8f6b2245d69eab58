"""Shadow retrieval: a share of the queries stable answered is also retrieved on the candidate, never shown.

The user's answer never waits for it: each shadow is a task of its own, started once stable's
retrieval is done, and at most `max_in_flight` run at once per replica; beyond that a shadow is
dropped and counted (`outcome="dropped"`), so a slow candidate can never queue work behind the
users' queries nor take more than its share of the database pool. Shadows never generate (no LLM
cost), never touch the answer cache or the answer log, and their result is only compared: the
overlap of the candidate's top-k with stable's, its latency and whether it found anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from ..observability.metrics import RuntimeMetrics
from ..store import RetrievedChunk, VersionRecord
from .overlap import compare

log = logging.getLogger("ragops.rollout.shadow")

Search = Callable[..., Awaitable[tuple[list[RetrievedChunk], dict[str, float]]]]
"""`QueryService.search(record, query, *, top_k, filters)`: the users' retrieval path."""


class ShadowRunner:
    """Runs shadow retrievals of one replica, bounded, and records what they found."""

    def __init__(
        self,
        *,
        search: Search,
        metrics: RuntimeMetrics,
        max_in_flight: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._search = search
        self._metrics = metrics
        self._max_in_flight = max_in_flight
        self._clock = clock
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def submit(
        self,
        candidate: VersionRecord,
        query: str,
        *,
        top_k: int,
        filters: Mapping[str, Any] | None,
        stable: Sequence[RetrievedChunk],
    ) -> None:
        """Starts a shadow of one query on `candidate`, or drops it when `max_in_flight` already run."""
        if len(self._tasks) >= self._max_in_flight:
            self._metrics.shadow_query("dropped", kb_version=candidate.version)
            return
        task = asyncio.create_task(
            self._run(candidate, query, top_k, filters, tuple(stable)), name=f"ragops-shadow-{candidate.version}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(
        self,
        candidate: VersionRecord,
        query: str,
        top_k: int,
        filters: Mapping[str, Any] | None,
        stable: tuple[RetrievedChunk, ...],
    ) -> None:
        chunks = await measured_search(
            self._search, self._metrics, self._clock, candidate, query, top_k=top_k, filters=filters, role="shadow"
        )
        if chunks is None:
            self._metrics.shadow_query("error", kb_version=candidate.version)
            return
        self._metrics.shadow_query("ok" if chunks else "empty", kb_version=candidate.version)
        if stable:
            self._metrics.overlap(compare(stable, chunks, top_k), kb_version=candidate.version, role="shadow")

    async def drain(self) -> None:
        """Waits for the shadows in flight (tests and benchmarks read their metrics after)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._tasks, return_exceptions=True)


async def measured_search(
    search: Search,
    metrics: RuntimeMetrics,
    clock: Callable[[], float],
    record: VersionRecord,
    query: str,
    *,
    top_k: int,
    filters: Mapping[str, Any] | None,
    role: str,
) -> list[RetrievedChunk] | None:
    """A retrieval that is not a user's (a shadow or a probe), recorded under `role`; None when it failed.

    Its failure is a measurement, never anyone's problem: every exception is counted, none raised.
    """
    labels = {"kb_version": record.version, "role": role}
    started = clock()
    try:
        chunks, timings = await search(record, query, top_k=top_k, filters=filters)
    except asyncio.CancelledError:
        raise
    except Exception as error:
        log.debug("%s retrieval on %s failed: %s", role, record.version, error)
        metrics.observe_query(mode="none", status="error", seconds=clock() - started, stages={}, **labels)
        return None
    metrics.observe_query(
        mode="retrieval_only",
        status="ok",
        seconds=clock() - started,
        stages={stage: ms / 1000 for stage, ms in timings.items()},
        **labels,
    )
    if not chunks:
        metrics.retrieval_empty(**labels)
    return chunks
