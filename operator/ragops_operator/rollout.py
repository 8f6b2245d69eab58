"""Progressive delivery in a RagDeployment's reconcile pass: observe, plan (reconcile.progressive), apply.

`controllers.reconcile_rollout` calls `plan_pass` before it plans revisions (so a rollout in flight
holds the stable version, and the stable version's SLO watch reads the stable version's series
only), and `apply_traffic` + `rollout_status` after the activation pointer is settled. Observing
means: the manual-action annotations (consumed, so each applies once), the candidate's analysis
reading from Prometheus when one is due, and the store's current split. Applying means writing the
split the plan asks for (with the probe plan built from the candidate's golden set and recorded
queries) or clearing it. Deciding is the pure machine's job, never this module's.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ragops_runtime.kb.evaluation import GoldenSetError, parse_golden_set
from ragops_runtime.store import KnowledgeStore, ProbePlan, ProbeQuery, TrafficSplit

from .api import KnowledgeBaseVersionSpec, RagDeploymentSpec
from .api.common import GROUP, VERSION, Condition
from .api.conditions import Reason
from .api.rollout import CanaryStrategy, RolloutStatus
from .kube import Kube
from .prometheus import PrometheusClient, PrometheusUnavailable
from .reconcile.knowledgebaseversion import Event
from .reconcile.progressive import (
    ACTION_ANNOTATION,
    SET_WEIGHT_ANNOTATION,
    ManualAction,
    ProgressiveObservation,
    ProgressivePlan,
    TrafficChange,
    TrafficTarget,
    in_flight,
    measurement_due,
    measurement_window,
    parse_actions,
    plan_progressive,
)
from .reconcile.ragdeployment import DesiredVersion, Revision, VersionReadiness, current_revision, was_rolled_back
from .reconcile.status import set_condition
from .settings import OperatorSettings

log = logging.getLogger("ragops.operator.rollout")

PROGRESSIVE_CONDITIONS = ("Promoted", "Aborted", "Paused")
SHADOW_TOLERANCE = 1e-3
"""The store keeps the shadow share as a PostgreSQL real: 33.3 reads back as 33.29999923706055."""


@dataclass(frozen=True)
class ProgressivePass:
    plan: ProgressivePlan
    desired: DesiredVersion
    """What the revision planner may promote: the candidate, or the stable version while held."""
    slo_version: str | None
    """Narrow the stable revision's SLO watch to this version (a split runs), or None."""


def previous_rollout(body: Mapping[str, Any]) -> RolloutStatus | None:
    stored = (body.get("status") or {}).get("rollout")
    return RolloutStatus.model_validate(stored) if stored else None


async def plan_pass(
    kube: Kube,
    config: OperatorSettings,
    body: Mapping[str, Any],
    spec: RagDeploymentSpec,
    desired: DesiredVersion,
    history: tuple[Revision, ...],
    runtime_hash: str,
    now: datetime,
) -> ProgressivePass:
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    previous = previous_rollout(body)
    actions = await _consume_actions(kube, namespace, name, meta.get("annotations") or {})
    serving = current_revision(history)

    measured, reading, unavailable = False, None, ""
    strategy = spec.rollout.strategy.progressive()
    prometheus_url = spec.monitoring.prometheus_url
    if (
        strategy is not None
        and previous is not None
        and prometheus_url
        and measurement_due(previous, spec.rollout.strategy, now)
        and previous.stable_version
        and previous.canary_version
    ):
        measured = True
        async with PrometheusClient(prometheus_url, timeout_seconds=config.prometheus_timeout_seconds) as prometheus:
            try:
                reading = await prometheus.analysis(
                    namespace,
                    name,
                    stable=previous.stable_version,
                    canary=previous.canary_version,
                    window=measurement_window(previous, strategy.analysis, now),
                    overlap_level=strategy.analysis.overlap_level,
                    overlap_measure=strategy.analysis.overlap_measure,
                )
            except PrometheusUnavailable as error:
                unavailable = str(error)

    plan = plan_progressive(
        ProgressiveObservation(
            strategy=spec.rollout.strategy,
            slo=spec.slo,
            candidate=desired,
            stable=serving.kb_version if serving else None,
            stable_baking=serving is not None and serving.outcome == "Baking",
            rolled_back=was_rolled_back(history, desired.name, runtime_hash),
            previous=previous,
            now=now,
            actions=actions,
            measured=measured,
            reading=reading,
            unavailable=unavailable,
        )
    )
    held = DesiredVersion(serving.kb_version, VersionReadiness.READY) if plan.hold and serving else desired
    return ProgressivePass(plan, held, previous.stable_version if in_flight(previous) and previous else None)


async def _consume_actions(
    kube: Kube, namespace: str, name: str, annotations: Mapping[str, str]
) -> tuple[ManualAction, ...]:
    """The manual actions asked for, removed from the object first so each applies exactly once."""
    present = {key: annotations[key] for key in (SET_WEIGHT_ANNOTATION, ACTION_ANNOTATION) if key in annotations}
    if not present:
        return ()
    if not await kube.consume_annotations(f"{GROUP}/{VERSION}", "RagDeployment", namespace, name, present):
        return ()  # rewritten meanwhile: the next pass reads the new value
    return parse_actions(present)


async def apply_traffic(
    kube: Kube,
    store: KnowledgeStore,
    namespace: str,
    knowledge_base: str,
    plan: ProgressivePlan,
    candidate: KnowledgeBaseVersionSpec | None,
    strategy: CanaryStrategy | None,
    *,
    reason: str,
) -> list[Event]:
    """Makes the store's split what the plan asks for; the events say what could not be done (probes)."""
    if plan.traffic is TrafficChange.LEAVE:
        return []  # the promotion's activation ends the split in its own transaction
    split = await store.traffic(knowledge_base)
    target = plan.target
    if plan.traffic is TrafficChange.CLEAR or target is None:
        if split.active:
            await store.clear_traffic(knowledge_base, reason=reason)
        return []
    if _holds(split, target):
        return []
    events: list[Event] = []
    probe = None
    if target.probes and strategy is not None and candidate is not None:
        probe, problem = await _probe_plan(kube, namespace, candidate, strategy)
        if problem:
            events.append(Event("Warning", Reason.PROBES_UNAVAILABLE, problem))
    await store.set_traffic(
        knowledge_base,
        canary=target.canary,
        weight=target.weight,
        shadow_percent=target.shadow_percent,
        split_id=target.split_id,
        probe=probe,
        reason=reason,
    )
    return events


def _holds(split: TrafficSplit, target: TrafficTarget) -> bool:
    return (
        split.canary == target.canary
        and split.canary_weight == target.weight
        and abs(split.shadow_percent - target.shadow_percent) < SHADOW_TOLERANCE
        and split.split_id == target.split_id
        and (split.probe is not None) == target.probes
    )


async def _probe_plan(
    kube: Kube, namespace: str, candidate: KnowledgeBaseVersionSpec, strategy: CanaryStrategy
) -> tuple[ProbePlan | None, str]:
    """The probe plan from the candidate's golden set and the recorded queries; (None, why) if neither reads."""
    probes = strategy.probes
    queries: list[ProbeQuery] = []
    problems: list[str] = []
    if probes.golden_set:
        ref = candidate.golden_set.config_map_ref
        text = await kube.config_map_value(namespace, ref.name, ref.key)
        if text is None:
            problems.append(f"golden set ConfigMap {ref.name} (key {ref.key}) not found")
        else:
            try:
                cases = parse_golden_set(text, Path(ref.name) / ref.key)
            except GoldenSetError as error:
                problems.append(str(error))
            else:
                queries += [ProbeQuery(query=c.query, relevant_documents=c.relevant) for c in cases]
    if probes.recorded_queries is not None:
        ref = probes.recorded_queries
        text = await kube.config_map_value(namespace, ref.name, ref.key)
        if text is None:
            problems.append(f"recorded queries ConfigMap {ref.name} (key {ref.key}) not found")
        else:
            queries += [ProbeQuery(query=line.strip()) for line in recorded_queries(text)]
    problem = "; ".join(problems)
    if problem:
        problem = f"golden probes run without some queries: {problem}" if queries else f"no probes: {problem}"
    if not queries:
        return None, problem
    return ProbePlan(queries=tuple(queries), per_minute=probes.per_minute, top_k=candidate.golden_set.k), problem


def recorded_queries(text: str) -> list[str]:
    """Recorded production queries, one per line; blank lines and # comments are skipped."""
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def rollout_status(
    plan: ProgressivePlan, conditions: list[dict[str, Any]], generation: int, now: datetime
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """status.rollout and the conditions with Promoted, Aborted and Paused set (or removed, for blueGreen)."""
    current = [Condition.model_validate(c) for c in conditions]
    if plan.conditions is None:
        current = [c for c in current if c.type not in PROGRESSIVE_CONDITIONS]
    else:
        for change in plan.conditions:
            current = set_condition(
                current,
                type=change.type,
                status=change.status,
                reason=change.reason,
                message=change.message,
                observed_generation=generation,
                now=now,
            )
    # Nulls kept: status is written by JSON merge patch, where a key left out keeps its old value and
    # only null removes it (a retried rollout must not keep its old abort, a resumed one its pausedAt).
    rollout = None if plan.status is None else plan.status.model_dump(mode="json", by_alias=True)
    return rollout, [c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in current]
