"""Properties every object the builders render must have, checked over every example's objects."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from ragops_operator.builders import RUNTIME_HASH_LABEL, Manifest, build_runtime_children, common_labels

from .scenarios import (
    CREDENTIAL_ENV,
    KBV_UID,
    NAMESPACE,
    RAGD_UID,
    all_rendered,
    load_example,
    pod_spec,
    runtime_context,
)

RENDERED = all_rendered()
IDS = [f"{example}:{manifest['kind']}:{manifest['metadata']['name']}" for example, manifest in RENDERED]

# What a credential looks like if one ever leaks into a manifest: a DSN with a password, an
# Anthropic or OpenAI key, or a shell/kubelet expansion of a credential variable into argv.
LEAK_PATTERNS = [
    re.compile(r"postgres(ql)?://[^\s/]*:[^\s/]*@"),
    re.compile(r"\bsk-(ant-)?[A-Za-z0-9_-]{8,}"),
    re.compile(r"\$[({]?(" + "|".join(sorted(CREDENTIAL_ENV)) + r")\b"),
]


def strings(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(path, string) for every string in a manifest, dict keys included."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield f"{path}.{key}(key)", key
            yield from strings(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from strings(item, f"{path}[{index}]")


def test_the_credential_set_is_what_the_pods_need() -> None:
    assert {"RAGOPS_DSN", "RAGOPS_EMBEDDING_API_KEY", "RAGOPS_ANTHROPIC_API_KEY"} <= CREDENTIAL_ENV
    assert "RAGOPS_KNOWLEDGE_BASE" not in CREDENTIAL_ENV


@pytest.mark.parametrize(("example", "manifest"), RENDERED, ids=IDS)
def test_no_string_anywhere_looks_like_a_credential(example: str, manifest: Manifest) -> None:
    for path, text in strings(manifest):
        for pattern in LEAK_PATTERNS:
            assert not pattern.search(text), f"{path}: {text!r}"


@pytest.mark.parametrize(("example", "manifest"), RENDERED, ids=IDS)
def test_credentials_appear_only_as_secret_key_ref_env_vars(example: str, manifest: Manifest) -> None:
    for path, text in strings(manifest):
        if text in CREDENTIAL_ENV:
            assert re.fullmatch(r".*\.env\[\d+\]\.name", path), f"{text} at {path}"
    if manifest["kind"] == "ConfigMap":
        assert not set(manifest["data"]) & CREDENTIAL_ENV
    spec = pod_spec(manifest)
    for container in spec["containers"] if spec else ():
        for entry in container.get("env", []):
            if entry["name"] in CREDENTIAL_ENV:
                assert set(entry) == {"name", "valueFrom"}
                assert set(entry["valueFrom"]) == {"secretKeyRef"}


def test_secret_references_name_the_secrets_of_the_specs() -> None:
    # The Secrets the examples reference do appear (by name and key), which proves the walk
    # above sees the env vars at all.
    referenced = {
        (entry["valueFrom"]["secretKeyRef"]["name"], entry["valueFrom"]["secretKeyRef"]["key"])
        for _, manifest in RENDERED
        if (spec := pod_spec(manifest))
        for container in spec["containers"]
        for entry in container.get("env", [])
        if "secretKeyRef" in entry.get("valueFrom", {})
    }
    assert referenced == {("pg", "dsn"), ("pg-ro", "dsn"), ("anthropic", "api-key"), ("openai", "api-key")}


POD_TEMPLATES = [(example, manifest) for example, manifest in RENDERED if pod_spec(manifest)]


@pytest.mark.parametrize(
    ("example", "manifest"),
    POD_TEMPLATES,
    ids=[f"{example}:{manifest['kind']}:{manifest['metadata']['name']}" for example, manifest in POD_TEMPLATES],
)
def test_every_pod_template_is_restricted(example: str, manifest: Manifest) -> None:
    spec = pod_spec(manifest)
    assert spec is not None
    security = spec["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == 65532
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    assert {"name": "tmp", "emptyDir": {"sizeLimit": spec["volumes"][-1]["emptyDir"]["sizeLimit"]}} in spec["volumes"]
    for container in spec["containers"] + spec.get("initContainers", []):
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["readOnlyRootFilesystem"] is True
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
        assert "privileged" not in context
    assert not any("hostPath" in volume for volume in spec["volumes"])


def test_pod_templates_were_found_for_every_example() -> None:
    assert sorted((example, manifest["kind"]) for example, manifest in POD_TEMPLATES) == sorted(
        [
            ("ragdeployment.yaml", "Deployment"),
            ("ragdeployment-retrieval-only.yaml", "Deployment"),
            ("knowledgebaseversion.yaml", "Job"),
            ("knowledgebaseversion.yaml", "Job"),
            ("knowledgebaseversion-openai.yaml", "Job"),
            ("knowledgebaseversion-openai.yaml", "Job"),
        ]
    )


@pytest.mark.parametrize(("example", "manifest"), RENDERED, ids=IDS)
def test_every_object_is_owned_labelled_and_namespaced(example: str, manifest: Manifest) -> None:
    document = load_example(example)
    kind, name = document["kind"], document["metadata"]["name"]
    uid = RAGD_UID if kind == "RagDeployment" else KBV_UID
    metadata = manifest["metadata"]
    assert metadata["namespace"] == NAMESPACE
    assert metadata["ownerReferences"] == [
        {
            "apiVersion": "ragops.dev/v1alpha1",
            "kind": kind,
            "name": name,
            "uid": uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    component = metadata["labels"]["app.kubernetes.io/component"]
    # Per-template objects also carry their template's hash, so stale ones can be found and pruned.
    labels = {key: value for key, value in metadata["labels"].items() if key != RUNTIME_HASH_LABEL}
    assert labels == common_labels(kind, name, component)
    spec = pod_spec(manifest)
    if spec is not None:
        assert manifest["spec"]["template"]["metadata"]["labels"] == metadata["labels"]


def test_objects_of_one_kind_never_share_a_name() -> None:
    keys = [(manifest["kind"], manifest["metadata"]["name"]) for _, manifest in RENDERED]
    assert len(keys) == len(set(keys))


def test_renders_are_independent_copies() -> None:
    # Server-side apply callers may mutate what they are given; nothing may leak between renders.
    first = build_runtime_children(runtime_context())
    deployment = next(child for child in first if child["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] = "9Gi"
    deployment["metadata"]["labels"]["x"] = "y"
    assert build_runtime_children(runtime_context()) != first
