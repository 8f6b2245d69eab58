"""Observability of the runtime: Prometheus metrics labelled with the deployment they come from."""

from __future__ import annotations

from ragops_runtime.observability.metrics import (
    COST_SERVICES,
    STAGES,
    TOKEN_DIRECTIONS,
    DeploymentIdentity,
    RuntimeMetrics,
)

__all__ = ["COST_SERVICES", "STAGES", "TOKEN_DIRECTIONS", "DeploymentIdentity", "RuntimeMetrics"]
