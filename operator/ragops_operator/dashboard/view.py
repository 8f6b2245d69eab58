"""What the dashboard shows, assembled from the objects the cluster returned and the time: pure.

`build_snapshot` turns RagDeployments, KnowledgeBaseVersions and the RagDeployments' Events (as
the API returns them, plain dicts) into the page's JSON; `chart_series` turns Prometheus range
results into one line per knowledge-base version. Nothing here reads the cluster, Prometheus or the
clock, and nothing here decides anything about a rollout: the operator does; this only shows what
it wrote (status.rollout, status.history, conditions, Events) and which buttons can apply.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from ..api.common import parse_duration
from ..api.knowledgebaseversion import GateThresholds
from ..api.rollout import CanaryStep, RolloutStrategy
from ..plugin import step_states
from ..prometheus import RangeSeries

ACTIONS = ("promote", "promote-full", "pause", "resume", "abort", "retry")
"""The buttons: each writes the ragops.dev/rollout-action annotation `kubectl ragops <action>` writes."""
IN_FLIGHT = ("Progressing", "Paused")
EVENTS_SHOWN = 12
GATE_METRICS = ("precisionAtK", "recallAtK", "mrr", "ndcgAtK", "hitRate", "answerPassRate")
ROLLBACK_REASONS = ("RolledBack", "RolloutAborted")
"""Event reasons that record a rollback (to the last known-good revision) or an aborted rollout, and why."""

Json = dict[str, Any]


def build_snapshot(
    deployments: Sequence[Mapping[str, Any]],
    versions: Sequence[Mapping[str, Any]],
    events: Sequence[Mapping[str, Any]],
    now: datetime,
) -> Json:
    """The page's state: one card per RagDeployment, sorted by namespace and name."""
    cards = [
        _deployment(obj, versions, _events_of(events, obj), now)
        for obj in sorted(deployments, key=lambda o: (_meta(o).get("namespace", ""), _meta(o).get("name", "")))
    ]
    return {"generatedAt": now.isoformat(), "deployments": cards}


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def _events_of(events: Sequence[Mapping[str, Any]], obj: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    meta = _meta(obj)
    uid, name, namespace = meta.get("uid"), meta.get("name"), meta.get("namespace")
    mine = []
    for event in events:
        involved = event.get("involvedObject") or {}
        if involved.get("kind") != "RagDeployment" or involved.get("name") != name:
            continue
        if (event.get("metadata") or {}).get("namespace", namespace) != namespace:
            continue
        # An object deleted and created again under the same name has a new uid: its Events only.
        if uid and involved.get("uid") and involved["uid"] != uid:
            continue
        mine.append(event)
    return sorted(mine, key=_event_time)


def _event_time(event: Mapping[str, Any]) -> str:
    return str(
        event.get("lastTimestamp")
        or event.get("eventTime")
        or event.get("firstTimestamp")
        or (event.get("metadata") or {}).get("creationTimestamp")
        or ""
    )


def _strategy(spec: Mapping[str, Any]) -> RolloutStrategy | None:
    try:
        return RolloutStrategy.model_validate((spec.get("rollout") or {}).get("strategy") or {})
    except ValidationError:
        return None  # the apiserver's schema refuses these; an old object must not break the page


def _deployment(
    obj: Mapping[str, Any], versions: Sequence[Mapping[str, Any]], events: Sequence[Mapping[str, Any]], now: datetime
) -> Json:
    meta, spec, status = _meta(obj), obj.get("spec") or {}, obj.get("status") or {}
    strategy = _strategy(spec)
    rollout_status = status.get("rollout") or {}
    knowledge_base = (spec.get("knowledgeBase") or {}).get("name")
    return {
        "key": f"{meta.get('namespace')}/{meta.get('name')}",
        "namespace": meta.get("namespace"),
        "name": meta.get("name"),
        "phase": status.get("phase"),
        "strategy": strategy.name if strategy is not None else "invalid",
        "knowledgeBase": knowledge_base,
        "serving": rollout_status.get("stableVersion") or status.get("activeVersion"),
        "desired": (spec.get("knowledgeBase") or {}).get("version"),
        "lastKnownGood": status.get("lastKnownGoodVersion"),
        "replicas": {"ready": status.get("readyReplicas"), "existing": status.get("replicas")},
        "prometheusUrl": (spec.get("monitoring") or {}).get("prometheusUrl"),
        "conditions": [
            {key: c.get(key) for key in ("type", "status", "reason", "message", "lastTransitionTime")}
            for c in status.get("conditions") or []
        ],
        "slo": _slo(spec, status),
        "rollout": _rollout(strategy, rollout_status, now),
        "actions": available_actions(strategy, rollout_status),
        "versions": _versions(versions, meta.get("namespace"), knowledge_base, status, spec, rollout_status),
        "history": _history(status, events),
        "rollbacks": _rollbacks(rollout_status, events),
        "events": [
            {
                "at": _event_time(e),
                "type": e.get("type"),
                "reason": e.get("reason"),
                "message": e.get("message"),
                "count": e.get("count") or 1,
            }
            for e in events[-EVENTS_SHOWN:]
        ][::-1],
    }


def _slo(spec: Mapping[str, Any], status: Mapping[str, Any]) -> Json:
    limits = spec.get("slo") or {}
    return {
        "limits": {
            "p95LatencyMs": limits.get("p95LatencyMs", 1000),
            "errorRate": limits.get("maxErrorRate", 0.01),
            "satisfaction": limits.get("minSatisfaction", 0.65),
            "costPerQueryUsd": limits.get("maxCostPerQueryUsd", 0.01),
        },
        "measured": status.get("slo"),
    }


def available_actions(strategy: RolloutStrategy | None, rollout: Mapping[str, Any]) -> dict[str, bool]:
    """Which buttons can apply now. The operator still judges each request (and records an ignored
    one in status.rollout.lastAction); this only keeps buttons off that would certainly be ignored."""
    if strategy is None or strategy.progressive() is None:
        return dict.fromkeys(ACTIONS, False)
    phase = rollout.get("phase")
    in_flight = phase in IN_FLIGHT and bool(rollout.get("rolloutId"))
    return {
        "promote": in_flight,
        "promote-full": in_flight,
        "pause": in_flight and phase == "Progressing",
        "resume": phase == "Paused" and rollout.get("pauseReason") == "Manual",
        "abort": in_flight,
        "retry": phase == "Aborted",
    }


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def _step_duration(step: CanaryStep) -> timedelta | None:
    duration = step.analysis.duration if step.analysis else step.pause.duration if step.pause else None
    return parse_duration(duration) if duration else None


def _rollout(strategy: RolloutStrategy | None, rollout: Mapping[str, Any], now: datetime) -> Json | None:
    if not rollout:
        return None
    steps = strategy.progressive() if strategy is not None else None
    index = rollout.get("currentStepIndex")
    phase = rollout.get("phase")
    paused_at = _parse_time(rollout.get("pausedAt"))
    # While held, the clock stops: the operator moves the step's start on by the time held.
    clock = paused_at if phase == "Paused" and paused_at is not None else now
    step_left: float | None = None
    if steps is not None and isinstance(index, int) and index < len(steps.steps) and phase in IN_FLIGHT:
        duration = _step_duration(steps.steps[index])
        step_started = _parse_time(rollout.get("stepStartedAt"))
        if duration is not None and step_started is not None:
            step_left = max(0.0, (step_started + duration - clock).total_seconds())
    timeout_left: float | None = None
    started = _parse_time(rollout.get("startedAt"))
    if steps is not None and started is not None and phase in IN_FLIGHT:
        elapsed = clock - started - timedelta(seconds=float(rollout.get("heldSeconds") or 0))
        timeout_left = max(0.0, (parse_duration(steps.timeout) - elapsed).total_seconds())
    states = step_states(strategy, rollout) if strategy is not None else []
    analysis = rollout.get("analysis")
    return {
        "phase": phase,
        "message": rollout.get("message") or "",
        "stable": rollout.get("stableVersion"),
        "canary": rollout.get("canaryVersion"),
        "weight": rollout.get("weight", 0),
        "shadowPercent": rollout.get("shadowPercent", 0),
        "rolloutId": rollout.get("rolloutId"),
        "startedAt": rollout.get("startedAt"),
        "pauseReason": rollout.get("pauseReason"),
        "steps": [{"number": n + 1, "text": text, "state": state} for n, (text, state) in enumerate(states)],
        "currentStep": index + 1 if isinstance(index, int) else None,
        "stepCount": len(states) or rollout.get("steps"),
        "stepSecondsLeft": step_left,
        "timeoutSecondsLeft": timeout_left,
        "analysis": None
        if not analysis
        else {
            "verdict": analysis.get("verdict"),
            "checkedAt": analysis.get("checkedAt"),
            "windowSeconds": analysis.get("windowSeconds"),
            "message": analysis.get("message") or "",
            "sloVerdict": analysis.get("sloVerdict"),
            "sloMessage": analysis.get("sloMessage") or "",
            "objectives": [
                {
                    key: o.get(key)
                    for key in ("name", "source", "stable", "canary", "limit", "verdict", "samples", "message")
                }
                for o in analysis.get("objectives") or []
            ],
        },
        "abort": rollout.get("abort"),
        "lastAction": rollout.get("lastAction"),
    }


def _versions(
    versions: Sequence[Mapping[str, Any]],
    namespace: str | None,
    knowledge_base: str | None,
    status: Mapping[str, Any],
    spec: Mapping[str, Any],
    rollout: Mapping[str, Any],
) -> list[Json]:
    """The versions of the deployment's knowledge base, newest first, with their gate and their role here."""
    roles = {
        "serving": rollout.get("stableVersion") or status.get("activeVersion"),
        "canary": rollout.get("canaryVersion"),
        "desired": (spec.get("knowledgeBase") or {}).get("version"),
        "lastKnownGood": status.get("lastKnownGoodVersion"),
    }
    rolled_back = {r.get("kbVersion") for r in status.get("history") or [] if r.get("outcome") == "RolledBack"}
    rows = []
    for obj in versions:
        meta, version_spec, version_status = _meta(obj), obj.get("spec") or {}, obj.get("status") or {}
        if meta.get("namespace") != namespace or version_spec.get("knowledgeBase") != knowledge_base:
            continue
        name = meta.get("name")
        gate = version_status.get("gate") or {}
        metrics = gate.get("metrics") or {}
        rows.append(
            {
                "name": name,
                "phase": version_status.get("phase"),
                "created": meta.get("creationTimestamp"),
                "roles": [role for role, holder in roles.items() if holder == name]
                + (["rolledBack"] if name in rolled_back else []),
                "gate": None
                if not gate
                else {
                    "passed": gate.get("passed"),
                    "cases": gate.get("cases"),
                    "failed": gate.get("failedMetrics") or [],
                    "metrics": {key: metrics.get(key) for key in GATE_METRICS},
                    "k": (version_spec.get("goldenSet") or {}).get("k", 5),
                    "thresholds": _thresholds(version_spec),
                },
                "documents": version_status.get("documents"),
                "chunks": version_status.get("chunks"),
            }
        )
    return sorted(rows, key=lambda row: (str(row["created"] or ""), str(row["name"])), reverse=True)


def _thresholds(spec: Mapping[str, Any]) -> Json | None:
    """The gate's thresholds with their defaults filled in, as the gate applied them."""
    try:
        thresholds = GateThresholds.model_validate((spec.get("goldenSet") or {}).get("thresholds") or {})
    except ValidationError:
        return None
    return thresholds.model_dump(by_alias=True, exclude_none=True)


def _history(status: Mapping[str, Any], events: Sequence[Mapping[str, Any]]) -> list[Json]:
    """status.history, newest first; a rolled-back revision with its reason: the one status keeps, else
    (a revision rolled back by an operator from before it kept them) the one its RolledBack Event gave."""
    rows = []
    for revision in reversed(status.get("history") or []):
        reason = revision.get("message")
        if reason is None and revision.get("outcome") == "RolledBack":
            prefix = f"rolled back {revision.get('kbVersion')} to "
            reason = next(
                (
                    str(e.get("message"))
                    for e in reversed(events)
                    if e.get("reason") == "RolledBack" and str(e.get("message", "")).startswith(prefix)
                ),
                None,
            )
        rows.append(
            {**{key: revision.get(key) for key in ("revision", "kbVersion", "promotedAt", "outcome")}, "reason": reason}
        )
    return rows


def _rollbacks(rollout: Mapping[str, Any], events: Sequence[Mapping[str, Any]]) -> list[Json]:
    """Rollbacks and aborted rollouts with their reasons, newest first: from Events (which the apiserver
    keeps for its --event-ttl, an hour by default) and the current abort in status.rollout."""
    rows = [
        {"at": _event_time(e), "kind": e.get("reason"), "message": e.get("message"), "count": e.get("count") or 1}
        for e in events
        if e.get("reason") in ROLLBACK_REASONS
    ]
    abort = rollout.get("abort")
    if abort and not any(abort.get("reason") and str(row["message"]).startswith(f"{abort['reason']}:") for row in rows):
        rows.append(
            {
                "at": abort.get("at"),
                "kind": "RolloutAborted",
                "message": f"{abort.get('reason')}: {abort.get('message')}",
                "count": 1,
            }
        )
    return sorted(rows, key=lambda row: str(row["at"] or ""), reverse=True)


# ---- charts -------------------------------------------------------------------------------------------


def chart_series(results: Mapping[str, Iterable[RangeSeries]]) -> dict[str, list[Json]]:
    """Prometheus range results (chart -> series grouped by kb_version) as lines: one per version,
    sorted by version name, points as [unix seconds, value]; a series without a version is left out."""
    charts: dict[str, list[Json]] = {}
    for chart, series in results.items():
        lines = [
            {"version": labels["kb_version"], "points": [[at, value] for at, value in points]}
            for labels, points in series
            if labels.get("kb_version") and points
        ]
        charts[chart] = sorted(lines, key=lambda line: str(line["version"]))
    return charts


def chart_step(span: timedelta, points: int = 120) -> timedelta:
    """The step between chart points: `points` over `span`, never under a second."""
    return max(timedelta(seconds=1), span / points)


def chart_rate_window(step: timedelta) -> timedelta:
    """The range each point's rate reads: four steps, at least a minute (two scrapes at the usual 30s)."""
    return max(timedelta(minutes=1), step * 4)
