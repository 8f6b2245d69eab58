"""Pure manifest builders: typed specs in, plain Kubernetes object dicts out.

`runtime` renders a RagDeployment's runtime (Deployment, Service, ConfigMap, PDB, HPA,
NetworkPolicy, ServiceMonitor, ServiceAccount); `jobs` renders a KnowledgeBaseVersion's build and
eval Jobs; `naming` and `owner` are the one place names, labels and owner references come from.
Nothing in this package does I/O, reads the clock, imports Kopf or a Kubernetes client, or reads
operator settings: callers pass everything in (the image included) and apply the result.
"""

from .common import Manifest
from .jobs import VersionContext, build_build_job, build_eval_job
from .naming import child_name, common_labels, label_value, selector_labels
from .owner import owner_reference
from .runtime import (
    RUNTIME_HASH_ANNOTATION,
    RUNTIME_HASH_LABEL,
    RuntimeContext,
    StoredTemplate,
    build_config_map,
    build_controller_revision,
    build_deployment,
    build_horizontal_pod_autoscaler,
    build_network_policy,
    build_pod_disruption_budget,
    build_runtime_children,
    build_service,
    build_service_account,
    build_service_monitor,
    runtime_secret_env,
    runtime_settings_env,
    runtime_template_hash,
    template_object_name,
)

__all__ = [
    "RUNTIME_HASH_ANNOTATION",
    "RUNTIME_HASH_LABEL",
    "Manifest",
    "RuntimeContext",
    "StoredTemplate",
    "VersionContext",
    "build_build_job",
    "build_config_map",
    "build_controller_revision",
    "build_deployment",
    "build_eval_job",
    "build_horizontal_pod_autoscaler",
    "build_network_policy",
    "build_pod_disruption_budget",
    "build_runtime_children",
    "build_service",
    "build_service_account",
    "build_service_monitor",
    "child_name",
    "common_labels",
    "label_value",
    "owner_reference",
    "runtime_secret_env",
    "runtime_settings_env",
    "runtime_template_hash",
    "selector_labels",
    "template_object_name",
]
