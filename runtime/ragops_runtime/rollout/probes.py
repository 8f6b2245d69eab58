"""Golden probes: one replica of a deployment sends the split's probe queries to both versions at the plan's rate.

At low or zero user traffic an analysis has nothing to compare; probes give it data. When the
split carries a probe plan, exactly one replica of the RagDeployment (the holder of a PostgreSQL
session advisory lock keyed by namespace/deployment/knowledge base) sends each probe query,
round-robin through the plan, to the stable and the candidate version, `per_minute` times a
minute per version. When the holder dies its session ends, the lock is free, and another replica
takes over within `LOCK_RETRY_SECONDS`.

Why the runtime sends them, not the operator:
- no network path from the operator to the runtime pods is needed (NetworkPolicies that only
  admit the ingress, a multi-cluster operator, a port-forward in development all stay as they are);
- probes take the very code path users take (`QueryService.search`: the version's own embedding
  space, hybrid retrieval, the retrieval budget), so probe latency is comparable with user latency;
- probes keep running while the operator restarts or fails over, so a step's analysis window is
  not emptied by an operator restart; the runtime only reports, the operator still judges.

Probes are retrieval-only (no generation: no LLM cost, never billed to anyone), bypass the answer
cache and the client rate limit, are never written to the answer log, and every series they touch
is labelled `role="probe"`: user SLOs and satisfaction leave them out. Per probe and version they
record latency, errors and empty results; golden probes (with relevant documents) record whether
the top-k held one of them (`ragops_probe_hits_total`); each pair records the overlap of the
candidate's top-k with stable's (`ragops_shadow_overlap{role="probe"}`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import psycopg

from ..errors import first_line
from ..observability.metrics import RuntimeMetrics
from ..store import ProbePlan, ProbeQuery, RetrievedChunk, VersionRecord
from .assignment import ServedSplit
from .overlap import compare
from .shadow import Search, measured_search

log = logging.getLogger("ragops.rollout.probes")

LOCK_RETRY_SECONDS = 1.0
"""How often a replica without the lock tries to take it: the longest a dead holder's probes pause."""
LOCK_CHECK_SECONDS = 1.0
"""How often the holder checks that its lock session is still alive."""


def next_probe_at(previous_due: float | None, now: float, per_minute: float) -> float:
    """When the next probe is due: on a grid of 60 / per_minute seconds, never before `now`.

    A probe that ran late (a slow candidate, a busy replica) is not caught up with a burst: the
    grid restarts from `now`, so probes never add load just when a version struggles.
    """
    if previous_due is None:
        return now
    return max(previous_due + 60.0 / per_minute, now)


class ProbeRunner:
    """Runs the probes of one deployment from whichever replica holds the probe lock."""

    def __init__(
        self,
        *,
        dsn: str,
        scope: str,
        served: Callable[[], ServedSplit],
        search: Search,
        metrics: RuntimeMetrics,
        clock: Callable[[], float] = time.monotonic,
        lock_retry_seconds: float = LOCK_RETRY_SECONDS,
    ) -> None:
        self._dsn = dsn
        self._scope = scope
        self._served = served
        self._search = search
        self._metrics = metrics
        self._clock = clock
        self._lock_retry_seconds = lock_retry_seconds
        self._lock: psycopg.AsyncConnection[Any] | None = None
        self._lock_checked = 0.0
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._plan_key: tuple[str | None, ProbePlan] | None = None
        self._due: float | None = None
        self._next_query = 0
        self.sent = 0
        """Probe rounds this replica sent (each to both versions)."""

    @property
    def running_here(self) -> bool:
        """True while this replica holds the probe lock of a split with a probe plan."""
        return self._lock is not None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ragops-probes")

    def split_changed(self) -> None:
        """The watcher saw a new split: re-read it now (an abort stops probes at once)."""
        self._changed.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._release()

    async def _run(self) -> None:
        while True:
            try:
                await self._step()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                # The lock session or the database is gone: another replica may take over meanwhile.
                log.warning("golden probes paused: %s", first_line(error))
                await self._release()
                await self._wait(self._lock_retry_seconds)

    async def _step(self) -> None:
        split = self._served()
        plan = split.probe
        if plan is None or split.stable is None or split.canary is None:
            await self._release()
            self._plan_key = None
            await self._wait(None)
            return
        if self._lock is None and not await self._acquire():
            await self._wait(self._lock_retry_seconds)
            return
        await self._check_lock()
        if self._plan_key != (split.split_id, plan):
            self._plan_key = (split.split_id, plan)
            self._due, self._next_query = None, 0
        now = self._clock()
        due = next_probe_at(self._due, now, plan.per_minute)
        if due > now:
            if await self._wait(due - now):
                return  # the split changed while waiting: look at it again first
        self._due = due
        probe = plan.queries[self._next_query % len(plan.queries)]
        self._next_query += 1
        await self._probe(split.stable, split.canary, probe, plan.top_k)
        self.sent += 1

    async def _probe(self, stable: VersionRecord, canary: VersionRecord, probe: ProbeQuery, top_k: int) -> None:
        stable_chunks, canary_chunks = await asyncio.gather(
            self._one(stable, probe, top_k), self._one(canary, probe, top_k)
        )
        if stable_chunks and canary_chunks is not None:
            self._metrics.overlap(compare(stable_chunks, canary_chunks, top_k), kb_version=canary.version, role="probe")

    async def _one(self, record: VersionRecord, probe: ProbeQuery, top_k: int) -> list[RetrievedChunk] | None:
        chunks = await measured_search(
            self._search, self._metrics, self._clock, record, probe.query, top_k=top_k, filters=None, role="probe"
        )
        if chunks is not None and probe.relevant_documents:
            relevant = set(probe.relevant_documents)
            hit = any(chunk.document_id in relevant for chunk in chunks[:top_k])
            self._metrics.probe_hit(hit, kb_version=record.version)
        return chunks

    async def _acquire(self) -> bool:
        connection = await psycopg.AsyncConnection.connect(self._dsn, autocommit=True)
        try:
            cursor = await connection.execute(
                "SELECT pg_try_advisory_lock(hashtext('ragops.probes'), hashtext(%s))", (self._scope,)
            )
            row = await cursor.fetchone()
        except BaseException:
            await connection.close()
            raise
        if not (row and row[0]):
            await connection.close()
            return False
        self._lock, self._lock_checked = connection, self._clock()
        log.info("golden probes run on this replica", extra={"kb": self._scope})
        return True

    async def _check_lock(self) -> None:
        """Raises when the lock session died (the database restarted, the connection broke)."""
        if self._lock is None or self._clock() - self._lock_checked < LOCK_CHECK_SECONDS:
            return
        await self._lock.execute("SELECT 1")
        self._lock_checked = self._clock()

    async def _release(self) -> None:
        if self._lock is None:
            return
        connection, self._lock = self._lock, None
        with contextlib.suppress(psycopg.Error):
            await connection.close()  # ends the session, and with it the lock

    async def _wait(self, seconds: float | None) -> bool:
        """Sleeps `seconds` (None: until the split changes); True when woken by a split change."""
        try:
            async with asyncio.timeout(seconds):
                await self._changed.wait()
        except TimeoutError:
            return False
        self._changed.clear()
        return True
