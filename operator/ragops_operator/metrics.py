"""The operator's own Prometheus metrics: leadership, and the transitions dashboards and alerts follow."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge

from .api.conditions import Reason
from .reconcile.knowledgebaseversion import Event


class OperatorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.leader = Gauge(
            "ragops_operator_leader", "1 on the replica that holds the lease and reconciles.", registry=self.registry
        )
        self.rollbacks = Counter(
            "ragops_operator_rollbacks",
            "Automatic rollbacks to the last known-good revision.",
            ["namespace", "ragdeployment"],
            registry=self.registry,
        )
        self.promotions = Counter(
            "ragops_operator_promotions",
            "Revisions promoted through the gate.",
            ["namespace", "ragdeployment"],
            registry=self.registry,
        )
        self.rollout_aborts = Counter(
            "ragops_operator_rollout_aborts",
            "Progressive rollouts (canary, shadow) aborted, automatically or by hand.",
            ["namespace", "ragdeployment"],
            registry=self.registry,
        )
        self.reconcile_errors = Counter(
            "ragops_operator_reconcile_errors",
            "Reconcile passes that failed and will be retried.",
            ["kind"],
            registry=self.registry,
        )

    def record_rollout_events(self, namespace: str, name: str, events: Iterable[Event]) -> None:
        for event in events:
            if event.reason == Reason.ROLLED_BACK:
                self.rollbacks.labels(namespace, name).inc()
            elif event.reason == Reason.PROMOTED:
                self.promotions.labels(namespace, name).inc()
            elif event.reason == Reason.ROLLOUT_ABORTED:
                self.rollout_aborts.labels(namespace, name).inc()
