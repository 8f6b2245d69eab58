"""The inputs the builder tests render: the repository's examples, plus helpers to vary them.

Contexts are built from `examples/*.yaml` so the golden files show exactly what the documented
examples deploy; the fixed uid, namespace and image keep the renders deterministic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import AliasChoices, SecretStr
from pydantic.fields import FieldInfo

from ragops_operator.api import KnowledgeBaseVersionSpec, RagDeploymentSpec
from ragops_operator.builders import (
    Manifest,
    RuntimeContext,
    VersionContext,
    build_build_job,
    build_eval_job,
    build_runtime_children,
)
from ragops_runtime.settings import RuntimeSettings

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
NAMESPACE = "docs-team"
IMAGE = "registry.example.com/ragops/ragops:0.1.0"
RAGD_UID = "3f7c9a52-1b0e-4d6a-9c1e-2a7b5e8d0f11"
KBV_UID = "8b2e4c1d-6f3a-4e9b-8d7c-0a1b2c3d4e5f"

RAGD_EXAMPLES = ("ragdeployment.yaml", "ragdeployment-retrieval-only.yaml")
KBV_EXAMPLES = ("knowledgebaseversion.yaml", "knowledgebaseversion-openai.yaml")
SERVED_KBV_EXAMPLE = "knowledgebaseversion.yaml"
"""The version the RagDeployment examples serve (docs-v1): its spec.store is the runtime's store."""


def load_example(file_name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((EXAMPLES / file_name).read_text())
    return document


def merged(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """`base` with `patch` applied recursively (dicts merge, anything else replaces)."""
    out = dict(base)
    for key, value in patch.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def version_spec(file_name: str = SERVED_KBV_EXAMPLE, patch: dict[str, Any] | None = None) -> KnowledgeBaseVersionSpec:
    return KnowledgeBaseVersionSpec.model_validate(merged(load_example(file_name)["spec"], patch or {}))


def runtime_context(
    file_name: str = "ragdeployment.yaml",
    patch: dict[str, Any] | None = None,
    *,
    image: str = IMAGE,
    store_patch: dict[str, Any] | None = None,
    name: str | None = None,
) -> RuntimeContext:
    document = load_example(file_name)
    store = version_spec(patch={"store": store_patch} if store_patch else None).store
    spec = RagDeploymentSpec.model_validate(merged(document["spec"], patch or {}))
    return RuntimeContext(
        name=name or document["metadata"]["name"],
        namespace=NAMESPACE,
        uid=RAGD_UID,
        spec=spec,
        store=store,
        image=image,
        trusted_client_header=spec.limits.trusted_client_header,
    )


def version_context(
    file_name: str = SERVED_KBV_EXAMPLE, patch: dict[str, Any] | None = None, *, name: str | None = None
) -> VersionContext:
    document = load_example(file_name)
    return VersionContext(
        name=name or document["metadata"]["name"],
        namespace=NAMESPACE,
        uid=KBV_UID,
        spec=version_spec(file_name, patch),
        image=IMAGE,
    )


def render_example(file_name: str) -> list[Manifest]:
    """Every object the operator creates for one example resource, in apply order."""
    if file_name in RAGD_EXAMPLES:
        return build_runtime_children(runtime_context(file_name))
    ctx = version_context(file_name)
    return [build_build_job(ctx), build_eval_job(ctx)]


def all_rendered() -> list[tuple[str, Manifest]]:
    """(example, object) for every object of every example: what the cross-cutting tests walk."""
    return [(name, manifest) for name in (*RAGD_EXAMPLES, *KBV_EXAMPLES) for manifest in render_example(name)]


def pod_spec(manifest: Manifest) -> Manifest | None:
    """The pod spec of a Deployment or Job, None for objects without pods."""
    if manifest["kind"] not in ("Deployment", "Job"):
        return None
    spec: Manifest = manifest["spec"]["template"]["spec"]
    return spec


def env_names(field_name: str, field: FieldInfo) -> set[str]:
    """The environment variables RuntimeSettings reads `field_name` from.

    pydantic-settings reads a field with a validation alias from its alias choices only (the
    env prefix does not apply to them); any other field from RAGOPS_<FIELD>.
    """
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        return {choice for choice in alias.choices if isinstance(choice, str)}
    if isinstance(alias, str):
        return {alias}
    return {f"RAGOPS_{field_name.upper()}"}


def is_secret(field: FieldInfo) -> bool:
    return SecretStr in getattr(field.annotation, "__args__", (field.annotation,))


SETTINGS_BY_ENV: dict[str, tuple[str, FieldInfo]] = {
    env: (name, field) for name, field in RuntimeSettings.model_fields.items() for env in env_names(name, field)
}
"""Every environment variable the runtime reads, with the RuntimeSettings field it sets."""

CREDENTIAL_ENV = frozenset(env for env, (_, field) in SETTINGS_BY_ENV.items() if is_secret(field))
"""The variables that carry credentials (RAGOPS_DSN, the API keys), read from the settings contract."""
