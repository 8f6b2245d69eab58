"""Handlers of RagDeployment: render the runtime, promote through the gate, watch SLOs, roll back.

One level-based timer per object does the work: it ticks every 2 s and each tick decides whether
a full pass is due. A manual rollout action (the `kubectl ragops` annotations) must not wait for
the next tick, since an abort is meant to take the candidate's weight to 0 at once, so an event
handler runs a pass as soon as one appears. Kopf runs timers and event handlers of one object
concurrently, and two passes planning from the same status once promoted twice (two Events):
so every pass holds the object's lock and plans from the object read afresh inside it, never
from the snapshot its handler was given.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf
from pydantic import ValidationError

from ..api import RagDeploymentSpec, parse_duration
from ..api.common import GROUP, VERSION, Condition
from ..api.conditions import RagDeploymentCondition
from ..controllers import reconcile_rollout
from ..reconcile.progressive import ACTION_ANNOTATION, SET_WEIGHT_ANNOTATION
from ..reconcile.ragdeployment import reconcile_due
from ..reconcile.status import refusal_reported
from .knowledgebaseversion import RETRY_SECONDS, _plain, _post

PLURAL = "ragdeployments"
TICK_SECONDS = 2.0


def _slo_due(body: dict[str, Any], now: datetime) -> bool:
    """An SLO check is due every spec.slo.checkInterval (the timer itself ticks faster)."""
    try:
        spec = RagDeploymentSpec.model_validate(body["spec"])
    except ValidationError:
        return False  # the pass refuses the spec in status (controllers.refused)
    if not spec.monitoring.prometheus_url:
        return False
    checked = ((body.get("status") or {}).get("slo") or {}).get("checkedAt")
    if not checked:
        return True
    return (now - datetime.fromisoformat(checked)) >= parse_duration(spec.slo.check_interval)


@kopf.timer(GROUP, VERSION, PLURAL, interval=TICK_SECONDS)
async def reconcile(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    now = datetime.now(UTC)
    plain = _plain(body)
    uid = body.metadata.uid or ""
    status = plain["status"]
    generation = int(body.metadata.get("generation") or 1)
    conditions = [Condition.model_validate(c) for c in status.get("conditions") or []]
    if not reconcile_due(
        generation=generation,
        observed_generation=status.get("observedGeneration"),
        refused=refusal_reported(conditions, RagDeploymentCondition.AVAILABLE, generation),
        phase=status.get("phase"),
        slo_check_due=_slo_due(plain, now),
        last_pass=memo.last_passes.get(uid),
        now=now,
        resync=timedelta(seconds=memo.config.reconcile_seconds),
    ):
        return
    await _pass(memo, body.metadata.namespace or "", body.metadata.name or "", uid)


def _asks_for_action(annotations: Mapping[str, str], **_: Any) -> bool:
    return ACTION_ANNOTATION in annotations or SET_WEIGHT_ANNOTATION in annotations


@kopf.on.event(GROUP, VERSION, PLURAL, when=_asks_for_action)
async def act(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A manual rollout action: a pass now, not at the next tick (the pass consumes the annotation)."""
    await _pass(memo, body.metadata.namespace or "", body.metadata.name or "", body.metadata.uid or "")


async def _pass(memo: kopf.Memo, namespace: str, name: str, uid: str) -> None:
    async with memo.pass_locks.setdefault(uid, asyncio.Lock()):
        fresh = await memo.kube.get(f"{GROUP}/{VERSION}", "RagDeployment", namespace, name)
        if fresh is None or (fresh.get("metadata") or {}).get("uid") != uid:
            return  # deleted (or deleted and created again) since the handler was called
        now = datetime.now(UTC)
        plain = {"metadata": fresh["metadata"], "spec": fresh["spec"], "status": fresh.get("status") or {}}
        outcome = await reconcile_rollout(
            memo.kube, memo.observers, memo.config, plain, now, check_slo=_slo_due(plain, now)
        )
        await memo.kube.patch_status("RagDeployment", namespace, name, outcome.status)
        memo.last_passes[uid] = now
    _post(kopf.Body(fresh), outcome.events)
    memo.metrics.record_rollout_events(namespace, name, outcome.events)
    if outcome.retry:
        memo.metrics.reconcile_errors.labels("RagDeployment").inc()
        raise kopf.TemporaryError(outcome.retry, delay=RETRY_SECONDS)


@kopf.on.delete(GROUP, VERSION, PLURAL, optional=True)
async def forget(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Drops the object's bookkeeping; `optional`: no finalizer, children are collected by owner."""
    uid = body.metadata.uid or ""
    memo.last_passes.pop(uid, None)
    memo.pass_locks.pop(uid, None)
