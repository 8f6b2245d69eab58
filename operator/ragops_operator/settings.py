"""The operator's own settings, read once at start-up from RAGOPS_OPERATOR_* variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_RUNTIME_IMAGE = "ghcr.io/ragops/ragops:0.1.0"


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RAGOPS_OPERATOR_", extra="ignore", frozen=True)

    runtime_image: str = Field(
        default=DEFAULT_RUNTIME_IMAGE,
        description="Image of the runtime pods and the build/eval Jobs when a spec names none.",
    )
    namespaces: str = Field(
        default="", description="Comma-separated namespaces to watch; empty watches the whole cluster."
    )
    reconcile_seconds: float = Field(default=5.0, gt=0, description="How often resources are re-examined.")
    prometheus_timeout_seconds: float = Field(default=5.0, gt=0, description="Budget of one Prometheus query.")
    peering: str = Field(default="ragops", description="Kopf peering name: replicas elect one active operator.")

    @property
    def namespace_list(self) -> list[str]:
        return [name.strip() for name in self.namespaces.split(",") if name.strip()]
