"""The demo's canary act: the operator's rollout machine (`reconcile.progressive`) driving a real split.

Two candidates go through the same canary steps (10 % of users, then 50 % of stable's queries
mirrored for a shadow comparison, an analysis, 50 % of users, a last analysis, promotion): v4, whose
chunk table is slowed by the fault proxy (an injected fault: it passes the golden-set gate, which
measures relevance, not speed, and stays inside the absolute p95 objective), and v5, a healthy
re-index. Each pass of the loop is what the operator's RagDeployment pass does: when a measurement
is due, read the analysis from two scrapes of the runtime's /metrics bounding the window (what
`prometheus.analysis_queries` asks Prometheus for), plan with `plan_progressive`, then write the split
(`KnowledgeStore.set_traffic`/`clear_traffic`) or promote (`activate`) as the plan says. Between
passes, users (distinct client ids, so the sticky assignment spreads them) ask real questions, and
every answer's `kbVersion` is counted: the blast radius is how many of them the candidate answered.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
from rich.console import Console

from ragops_operator.api.conditions import RolloutPhase
from ragops_operator.api.ragdeployment import SloSpec
from ragops_operator.api.rollout import AnalysisStatus, RolloutStatus, RolloutStrategy
from ragops_operator.prometheus import analysis_reading
from ragops_operator.reconcile.progressive import (
    ProgressiveObservation,
    TrafficChange,
    describe_step,
    measurement_due,
    measurement_window,
    plan_progressive,
)
from ragops_operator.reconcile.ragdeployment import DesiredVersion, VersionReadiness
from ragops_runtime.store import KnowledgeStore

from .measure import SeriesKey, analysis_results_between, parse_series

CLIENTS = 400
"""Distinct client ids: at a 10 % weight about 40 of them are sticky to the candidate."""
PASS_SECONDS = 1.0
"""User traffic between two passes of the rollout machine."""
MAX_PASSES = 120


def canary_strategy(latency_tolerance_ms: int) -> RolloutStrategy:
    """The steps both candidates run; limits sized for a demo's few hundred queries, not production's.

    The latency tolerance is twice the stable version's own p95 on this machine: a p95 over a
    dozen queries moves by that much on a loaded machine, and a healthy candidate must not fail on noise.
    """
    return RolloutStrategy.model_validate(
        {
            "canary": {
                "steps": [
                    {"setWeight": 10},
                    {"shadow": {"percent": 50}},
                    {"analysis": {"duration": "6s"}},
                    {"setWeight": 50},
                    {"analysis": {"duration": "4s"}},
                ],
                "analysis": {
                    "interval": "2s",
                    "window": "1m",
                    "minRequests": 10,
                    "minShadowQueries": 20,
                    "latencyToleranceMs": latency_tolerance_ms,
                    "failureLimit": 2,
                    "maxInconclusive": 15,
                },
                # The demo's users are the traffic; golden probes are shown by the end-to-end tests.
                "probes": {"perMinute": 0},
                "timeout": "5m",
            }
        }
    )


@dataclass
class CanaryOutcome:
    phase: str
    reason: str
    message: str
    served_by_candidate: int
    user_queries: int
    steps_seen: list[str]
    analysis: AnalysisStatus | None
    seconds: float

    @property
    def share(self) -> float:
        return self.served_by_candidate / self.user_queries if self.user_queries else 0.0


class CanaryRun:
    """One candidate's rollout, pass by pass, against the running runtime and the store."""

    def __init__(
        self,
        *,
        store: KnowledgeStore,
        client: httpx.AsyncClient,
        console: Console,
        knowledge_base: str,
        namespace: str,
        deployment: str,
        stable: str,
        candidate: str,
        slo: SloSpec,
        questions: Sequence[str],
        concurrency: int,
        latency_tolerance_ms: int,
    ) -> None:
        self.store = store
        self.client = client
        self.console = console
        self.knowledge_base = knowledge_base
        self.namespace = namespace
        self.deployment = deployment
        self.stable = stable
        self.candidate = candidate
        self.slo = slo
        self.questions = questions
        self.concurrency = concurrency
        self.strategy = canary_strategy(latency_tolerance_ms)
        self.served_by_candidate = 0
        self.user_queries = 0
        self._asked = 0

    async def run(self, on_pass: Callable[[RolloutStatus], None] | None = None) -> CanaryOutcome:
        steps = self.strategy.progressive()
        assert steps is not None
        started = time.monotonic()
        previous: RolloutStatus | None = None
        split_scrape: dict[SeriesKey, float] = {}
        split_marker: tuple[int, float, str | None] | None = None
        for _ in range(MAX_PASSES):
            now = datetime.now(UTC)
            measured = measurement_due(previous, self.strategy, now)
            reading = None
            if measured and previous is not None:
                after = await self._scrape()
                reading = analysis_reading(
                    analysis_results_between(
                        split_scrape,
                        after,
                        overlap_level=steps.analysis.overlap_level,
                        overlap_measure=steps.analysis.overlap_measure,
                    ),
                    stable=self.stable,
                    canary=self.candidate,
                    window=measurement_window(previous, steps.analysis, now),
                )
            plan = plan_progressive(
                ProgressiveObservation(
                    strategy=self.strategy,
                    slo=self.slo,
                    candidate=DesiredVersion(self.candidate, VersionReadiness.READY),
                    stable=self.stable,
                    stable_baking=False,
                    rolled_back=False,
                    previous=previous,
                    now=now,
                    measured=measured,
                    reading=reading,
                )
            )
            for event in plan.events:
                self.console.print(f"   event {event.type:7} {event.reason}: {event.message}", highlight=False)
            status = plan.status
            assert status is not None
            if measured and status.analysis is not None:
                self._print_check(status.analysis)
            if plan.promote:
                await self.store.activate(self.knowledge_base, self.candidate, reason=f"demo canary: {status.message}")
                await self._wait_split(None)
                return self._outcome(status, "Promoted", started)
            if plan.traffic is TrafficChange.CLEAR or plan.target is None:
                await self.store.clear_traffic(self.knowledge_base, reason=f"demo canary: {status.message}")
                await self._wait_split(None)
                if status.phase is RolloutPhase.ABORTED:
                    reason = status.abort.reason if status.abort else "Aborted"
                    return self._outcome(status, reason, started)
            elif plan.traffic is TrafficChange.SET:
                target = plan.target
                marker = (target.weight, target.shadow_percent, target.split_id)
                if marker != split_marker:
                    await self.store.set_traffic(
                        self.knowledge_base,
                        canary=target.canary,
                        weight=target.weight,
                        shadow_percent=target.shadow_percent,
                        split_id=target.split_id,
                        reason=f"demo canary: {status.message}",
                    )
                    await self._wait_split(target.weight)
                    split_scrape = await self._scrape()
                    split_marker = marker
                    self.console.print(
                        f"   split: {self.candidate} answers {target.weight}% of users, "
                        f"{target.shadow_percent:g}% of stable's queries mirrored to it",
                        highlight=False,
                    )
            if on_pass is not None:
                on_pass(status)
            previous = status
            await self._users(PASS_SECONDS)
        raise RuntimeError(f"the rollout of {self.candidate} did not finish in {MAX_PASSES} passes")

    def _outcome(self, status: RolloutStatus, reason: str, started: float) -> CanaryOutcome:
        steps = self.strategy.progressive()
        assert steps is not None
        reached = len(steps.steps) if status.abort is None else (status.abort.step_index or 0) + 1
        return CanaryOutcome(
            phase=status.phase.value,
            reason=reason,
            message=status.message,
            served_by_candidate=self.served_by_candidate,
            user_queries=self.user_queries,
            steps_seen=[describe_step(step) for step in steps.steps[:reached]],
            analysis=status.analysis,
            seconds=time.monotonic() - started,
        )

    def _print_check(self, analysis: AnalysisStatus) -> None:
        colour = {"Pass": "green", "Fail": "red"}.get(analysis.verdict.value, "yellow")
        self.console.print(
            f"   analysis over {analysis.window_seconds:.0f} s: [{colour}]{analysis.verdict.value}[/] "
            f"(failed in a row {analysis.consecutive_failures}, absolute SLOs {analysis.slo_verdict or '-'})",
            highlight=False,
        )
        for objective in analysis.objectives:
            values = f"canary {_value(objective.canary)} vs stable {_value(objective.stable)}"
            self.console.print(
                f"      {objective.name:28} {objective.verdict.value:12} {values} (limit {objective.limit}; "
                f"{objective.samples})",
                highlight=False,
                markup=False,
            )

    async def _scrape(self) -> dict[SeriesKey, float]:
        response = await self.client.get("/metrics")
        response.raise_for_status()
        return parse_series(response.text, namespace=self.namespace, deployment=self.deployment)

    async def _wait_split(self, weight: int | None) -> None:
        """Until the runtime applies the split (weight) or serves without one (None)."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            traffic = (await self.client.get("/v1/info")).json().get("traffic")
            if (weight is None and traffic is None) or (traffic is not None and traffic["canaryWeight"] == weight):
                return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"the runtime did not apply the split (weight {weight}) within 30 s")

    async def _users(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds

        async def user() -> None:
            while time.monotonic() < deadline:
                self._asked += 1
                number = self._asked
                question = self.questions[number % len(self.questions)]
                response = await self.client.post(
                    "/v1/query", json={"query": question}, headers={"X-Client-Id": f"user-{number % CLIENTS}"}
                )
                if response.status_code == 200:
                    self.user_queries += 1
                    if response.json()["kbVersion"] == self.candidate:
                        self.served_by_candidate += 1

        await asyncio.gather(*(user() for _ in range(self.concurrency)))


def _value(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"
