"""The operator's own settings, read once at start-up from RAGOPS_OPERATOR_* variables."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_RUNTIME_IMAGE = "ghcr.io/ragops/ragops:0.1.0"
SERVICE_ACCOUNT_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RAGOPS_OPERATOR_", extra="ignore", frozen=True)

    runtime_image: str = Field(
        default=DEFAULT_RUNTIME_IMAGE,
        description="Image of the runtime pods and the build/eval Jobs when a spec names none.",
    )
    trusted_client_header: str = Field(
        default="",
        pattern=r"^([!#$%&'*+.^_`|~0-9A-Za-z-]+)?$",
        max_length=64,
        description="Default of spec.limits.trustedClientHeader for every RagDeployment; empty: the peer address.",
    )
    namespaces: str = Field(
        default="", description="Comma-separated namespaces to watch; empty watches the whole cluster."
    )
    reconcile_seconds: float = Field(
        default=30.0,
        gt=0,
        description=(
            "How often a steady (Healthy) RagDeployment is re-examined anyway, correcting drift made by hand; "
            "one with a change, a rollout, a bake or an SLO check due is examined every 2 s."
        ),
    )
    prometheus_timeout_seconds: float = Field(default=5.0, gt=0, description="Budget of one Prometheus query.")
    lease_name: str = Field(default="ragops-operator", description="Lease the replicas compete for.")
    lease_namespace: str = Field(
        default="", description="Namespace of the Lease; empty: the pod's own namespace (or `default` outside one)."
    )
    lease_seconds: int = Field(
        default=15, ge=2, le=300, description="How long a leader's claim lasts without renewal (client-go's default)."
    )
    pod_name: str = Field(default="", description="This replica's identity in the Lease; empty: host name and pid.")

    @property
    def identity(self) -> str:
        return self.pod_name or f"{socket.gethostname()}-{os.getpid()}"

    @property
    def resolved_lease_namespace(self) -> str:
        if self.lease_namespace:
            return self.lease_namespace
        in_pod = Path(SERVICE_ACCOUNT_NAMESPACE_FILE)
        return in_pod.read_text().strip() if in_pod.is_file() else "default"

    @property
    def namespace_list(self) -> list[str]:
        return [name.strip() for name in self.namespaces.split(",") if name.strip()]
