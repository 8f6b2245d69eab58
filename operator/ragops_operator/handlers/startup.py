"""Operator start-up: settings into Kopf's memo, annotation prefixes, probes, leadership, one Kubernetes client.

Kopf starts watching only after start-up handlers return, so a standby replica waits here (probes
served, nothing reconciled) until it wins the Lease. Leader election is on when the `ragops operator
run` command asks for it through the memo; `kopf run` (the tests' KopfRunner) leaves it off.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from ..controllers import Observers
from ..health import HealthServer
from ..kube import Kube
from ..leadership import LeaderElector
from ..metrics import OperatorMetrics
from ..settings import OperatorSettings

log = logging.getLogger("ragops.operator")


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    config = OperatorSettings()
    # Kopf's bookkeeping lives in annotations under our own prefix, never in status.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="ragops.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="ragops.dev", key="last-handled-configuration"
    )
    settings.persistence.finalizer = "ragops.dev/finalizer"
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 60
    settings.networking.request_timeout = 30
    if getattr(memo, "namespaced", False):
        # Watching named namespaces needs no cluster-wide discovery: the chart's namespaced RBAC grants none.
        settings.scanning.disabled = True
    memo.config = config
    memo.kube = Kube.from_environment()
    memo.observers = Observers()
    memo.last_passes = {}
    memo.pass_locks = {}  # uid -> asyncio.Lock: one RagDeployment pass at a time (handlers/ragdeployment.py)
    memo.metrics = getattr(memo, "metrics", None) or OperatorMetrics()
    elector: LeaderElector | None = None
    if getattr(memo, "leader_election", False):
        elector = LeaderElector(
            memo.kube,
            namespace=config.resolved_lease_namespace,
            name=config.lease_name,
            identity=config.identity,
            lease_seconds=config.lease_seconds,
            metrics=memo.metrics,
        )
    memo.elector = elector

    def role() -> str:
        return "leader" if elector is None or elector.leading else "standby"

    health_address = getattr(memo, "health_address", None)
    if health_address:
        memo.health = HealthServer(health_address, memo.metrics, role)
        await memo.health.start()
    if elector is None:
        memo.metrics.leader.set(1)
        return
    await elector.acquire()
    stop_flag = getattr(memo, "stop_flag", None)

    def lost() -> None:
        memo.lost_leadership = True
        if stop_flag is not None:
            stop_flag.set()

    memo.renewal = asyncio.create_task(elector.keep(lost))


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    renewal = getattr(memo, "renewal", None)
    if renewal is not None:
        renewal.cancel()
    elector: LeaderElector | None = getattr(memo, "elector", None)
    if elector is not None and not getattr(memo, "lost_leadership", False):
        try:
            await elector.release()
        except Exception as error:  # standbys take over when the lease expires instead
            log.warning("could not release the lease: %s", error)
    health = getattr(memo, "health", None)
    if health is not None:
        await health.stop()
    observers: Observers | None = getattr(memo, "observers", None)
    if observers is not None:
        await observers.stores.close()
    kube = getattr(memo, "kube", None)
    if kube is not None:
        await kube.close()
