"""Handlers of RagDeployment: render the runtime, promote through the gate, watch SLOs, roll back.

One level-based timer per object, not create/update handlers beside it: Kopf runs timers and event
handlers of the same object concurrently, and two passes planning from the same status promoted
twice (two Events). The timer ticks every 2 s; each tick decides whether a full pass is due.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import kopf

from ..api import RagDeploymentSpec, parse_duration
from ..api.common import GROUP, VERSION
from ..controllers import reconcile_rollout
from ..reconcile.ragdeployment import reconcile_due
from .knowledgebaseversion import RETRY_SECONDS, _plain, _post

PLURAL = "ragdeployments"
TICK_SECONDS = 2.0


def _slo_due(body: dict[str, Any], now: datetime) -> bool:
    """An SLO check is due every spec.slo.checkInterval (the timer itself ticks faster)."""
    spec = RagDeploymentSpec.model_validate(body["spec"])
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
    slo_due = _slo_due(plain, now)
    uid = body.metadata.uid or ""
    status = plain["status"]
    if not reconcile_due(
        generation=int(body.metadata.get("generation") or 1),
        observed_generation=status.get("observedGeneration"),
        phase=status.get("phase"),
        slo_check_due=slo_due,
        last_pass=memo.last_passes.get(uid),
        now=now,
        resync=timedelta(seconds=memo.config.reconcile_seconds),
    ):
        return
    outcome = await reconcile_rollout(memo.kube, memo.observers, memo.config, plain, now, check_slo=slo_due)
    await memo.kube.patch_status(
        "RagDeployment", body.metadata.namespace or "", body.metadata.name or "", outcome.status
    )
    memo.last_passes[uid] = now
    _post(body, outcome.events)
    memo.metrics.record_rollout_events(body.metadata.namespace or "", body.metadata.name or "", outcome.events)
    if outcome.retry:
        memo.metrics.reconcile_errors.labels("RagDeployment").inc()
        raise kopf.TemporaryError(outcome.retry, delay=RETRY_SECONDS)


@kopf.on.delete(GROUP, VERSION, PLURAL, optional=True)
async def forget(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Drops the object's bookkeeping; `optional`: no finalizer, children are collected by owner."""
    memo.last_passes.pop(body.metadata.uid or "", None)
