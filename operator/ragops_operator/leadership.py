"""One active operator among replicas: a Lease acquired before Kopf starts handling, kept while it runs.

The decisions are pure (`reconcile.leader`); this module reads and writes the Lease through
`kube.py` and keeps time. A replica that cannot renew within the renew deadline stops leading by
stopping the whole operator (as controller-runtime does): the pod restarts as a standby, and no two
replicas ever reconcile at once, because the deadline ends before the Lease may be taken over.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from .kube import Kube
from .metrics import OperatorMetrics
from .reconcile.leader import LeaseAction, LeaseRecord, LeaseTiming, decide_lease, released

log = logging.getLogger("ragops.operator.leadership")

LEASE_API_VERSION = "coordination.k8s.io/v1"


def _time(value: datetime | None) -> str | None:
    # MicroTime: RFC 3339 with microseconds, in UTC.
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ") if value is not None else None


def _parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def record_from_lease(lease: dict[str, Any]) -> LeaseRecord:
    spec = lease.get("spec") or {}
    return LeaseRecord(
        holder=spec.get("holderIdentity") or None,
        lease_seconds=int(spec.get("leaseDurationSeconds") or 0),
        acquired_at=_parse_time(spec.get("acquireTime")),
        renewed_at=_parse_time(spec.get("renewTime")),
        transitions=int(spec.get("leaseTransitions") or 0),
    )


def lease_manifest(namespace: str, name: str, record: LeaseRecord, resource_version: str | None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if resource_version is not None:
        metadata["resourceVersion"] = resource_version
    spec = {
        "holderIdentity": record.holder,
        "leaseDurationSeconds": record.lease_seconds,
        "acquireTime": _time(record.acquired_at),
        "renewTime": _time(record.renewed_at),
        "leaseTransitions": record.transitions,
    }
    return {
        "apiVersion": LEASE_API_VERSION,
        "kind": "Lease",
        "metadata": metadata,
        "spec": {key: value for key, value in spec.items() if value is not None},
    }


class LeaderElector:
    def __init__(
        self,
        kube: Kube,
        *,
        namespace: str,
        name: str,
        identity: str,
        lease_seconds: int,
        metrics: OperatorMetrics,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._kube, self._namespace, self._name = kube, namespace, name
        self.identity = identity
        self._timing = LeaseTiming(lease_seconds)
        self._metrics = metrics
        self._clock = clock
        self.leading = False

    async def _attempt(self) -> bool:
        """One read-decide-write round; True when we hold the Lease afterwards."""
        now = self._clock()
        lease = await self._kube.get(LEASE_API_VERSION, "Lease", self._namespace, self._name)
        current = record_from_lease(lease) if lease is not None else None
        decision = decide_lease(current, self.identity, self._timing.lease_seconds, now)
        if decision.record is None:
            return False
        if decision.action is LeaseAction.CREATE:
            won = await self._kube.create(lease_manifest(self._namespace, self._name, decision.record, None))
        else:
            version = (lease or {}).get("metadata", {}).get("resourceVersion")
            won = await self._kube.replace(lease_manifest(self._namespace, self._name, decision.record, version))
        if won and decision.action in (LeaseAction.CREATE, LeaseAction.TAKE_OVER):
            previous = current.holder if current is not None else None
            log.info(
                "%s acquired the lease %s/%s (previous holder: %s)",
                self.identity,
                self._namespace,
                self._name,
                previous,
            )
        return won

    async def acquire(self) -> None:
        """Returns once this replica leads; until then it stands by, retrying."""
        log.info("%s waiting for the lease %s/%s", self.identity, self._namespace, self._name)
        while True:
            try:
                if await self._attempt():
                    break
            except Exception as error:  # the apiserver is briefly unreachable: keep standing by
                log.warning("lease %s/%s: %s", self._namespace, self._name, error)
            await asyncio.sleep(self._timing.retry_seconds)
        self.leading = True
        self._metrics.leader.set(1)

    async def keep(self, on_lost: Callable[[], None]) -> None:
        """Renews until cancelled; calls `on_lost` once renewal has failed for the renew deadline."""
        loop = asyncio.get_running_loop()
        renewed = loop.time()
        while self.leading:
            await asyncio.sleep(self._timing.retry_seconds)
            try:
                if await self._attempt():
                    renewed = loop.time()
                    continue
                log.error("%s lost the lease %s/%s to another replica", self.identity, self._namespace, self._name)
            except Exception as error:
                log.warning("renewing lease %s/%s: %s", self._namespace, self._name, error)
                if loop.time() - renewed < self._timing.renew_deadline_seconds:
                    continue
                log.error("%s could not renew the lease for %.0fs", self.identity, loop.time() - renewed)
            self.leading = False
            self._metrics.leader.set(0)
            on_lost()

    async def release(self) -> None:
        """Hands the Lease over at once on a clean stop (instead of making standbys wait it out)."""
        if not self.leading:
            return
        self.leading = False
        self._metrics.leader.set(0)
        lease = await self._kube.get(LEASE_API_VERSION, "Lease", self._namespace, self._name)
        if lease is None:
            return
        current = record_from_lease(lease)
        if current.holder != self.identity:
            return
        version = lease["metadata"].get("resourceVersion")
        record = released(current, self._clock())
        await self._kube.replace(lease_manifest(self._namespace, self._name, record, version))
