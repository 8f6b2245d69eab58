"""Handlers of RagDeployment: render the runtime, promote through the gate, watch SLOs, roll back."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import kopf

from ..api import RagDeploymentSpec, parse_duration
from ..api.common import GROUP, VERSION
from ..controllers import reconcile_rollout
from .knowledgebaseversion import RETRY_SECONDS, _plain, _post

PLURAL = "ragdeployments"
RECONCILE_SECONDS = 2.0


def _slo_due(body: dict[str, Any], now: datetime) -> bool:
    """An SLO check is due every spec.slo.checkInterval (the timer itself ticks faster)."""
    spec = RagDeploymentSpec.model_validate(body["spec"])
    if not spec.monitoring.prometheus_url:
        return False
    checked = ((body.get("status") or {}).get("slo") or {}).get("checkedAt")
    if not checked:
        return True
    return (now - datetime.fromisoformat(checked)) >= parse_duration(spec.slo.check_interval)


@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.timer(GROUP, VERSION, PLURAL, interval=RECONCILE_SECONDS)
async def reconcile(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    now = datetime.now(UTC)
    plain = _plain(body)
    outcome = await reconcile_rollout(memo.kube, memo.config, plain, now, check_slo=_slo_due(plain, now))
    await memo.kube.patch_status(
        "RagDeployment", body.metadata.namespace or "", body.metadata.name or "", outcome.status
    )
    _post(body, outcome.events)
    memo.metrics.record_rollout_events(body.metadata.namespace or "", body.metadata.name or "", outcome.events)
    if outcome.retry:
        memo.metrics.reconcile_errors.labels("RagDeployment").inc()
        raise kopf.TemporaryError(outcome.retry, delay=RETRY_SECONDS)
