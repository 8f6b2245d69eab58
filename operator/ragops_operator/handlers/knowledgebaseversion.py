"""Handlers of KnowledgeBaseVersion: build and gate through Jobs, status from the store, guarded deletion."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import kopf

from ..api.common import GROUP, VERSION
from ..api.conditions import KnowledgeBaseVersionCondition, Reason
from ..controllers import drop_version, reconcile_version, versions_in_use
from ..reconcile.knowledgebaseversion import Event

PLURAL = "knowledgebaseversions"
RECONCILE_SECONDS = 5.0
TERMINAL = ("Ready", "Failed")
RETRY_SECONDS = 10


# A timer only (see handlers/ragdeployment.py): it fires at once for a new object, then until the
# version is Ready or Failed; the spec is immutable, so nothing else can change what a pass does.
@kopf.timer(
    GROUP,
    VERSION,
    PLURAL,
    interval=RECONCILE_SECONDS,
    when=lambda status, **_: (status or {}).get("phase") not in TERMINAL,
)
async def reconcile(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    outcome = await reconcile_version(memo.kube, memo.observers, memo.config, _plain(body), datetime.now(UTC))
    await memo.kube.patch_status(
        "KnowledgeBaseVersion", body.metadata.namespace or "", body.metadata.name or "", outcome.status
    )
    _post(body, outcome.events)
    if outcome.retry:
        memo.metrics.reconcile_errors.labels("KnowledgeBaseVersion").inc()
        raise kopf.TemporaryError(outcome.retry, delay=RETRY_SECONDS)


@kopf.on.delete(GROUP, VERSION, PLURAL)
async def delete(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    namespace, name = body.metadata.namespace or "", body.metadata.name or ""
    users = await versions_in_use(memo.kube, namespace, name)
    if users:
        message = f"in use by RagDeployment {', '.join(users)}: deletion waits until none serves or falls back to it"
        previous = body.status.get("conditions") or []
        ready: dict[str, Any] = next((c for c in previous if c.get("type") == KnowledgeBaseVersionCondition.READY), {})
        if (ready.get("reason"), ready.get("message")) != (Reason.IN_USE, message):
            # Once per change, not at every retry: the condition says the same in between.
            kopf.event(body, type="Warning", reason=Reason.IN_USE, message=message)
        conditions = [c for c in previous if c.get("type") != KnowledgeBaseVersionCondition.READY]
        conditions.append(
            {
                "type": KnowledgeBaseVersionCondition.READY,
                "status": "False",
                "reason": Reason.IN_USE,
                "message": message,
                "lastTransitionTime": datetime.now(UTC).isoformat(),
                "observedGeneration": body.metadata.get("generation", 1),
            }
        )
        await memo.kube.patch_status("KnowledgeBaseVersion", namespace, name, {"conditions": conditions})
        raise kopf.TemporaryError(message, delay=10)
    await drop_version(memo.kube, memo.observers, _plain(body))


def _plain(body: kopf.Body) -> dict[str, Any]:
    return {"metadata": dict(body.metadata), "spec": dict(body.spec), "status": dict(body.status)}


def _post(body: kopf.Body, events: tuple[Event, ...]) -> None:
    for event in events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)
