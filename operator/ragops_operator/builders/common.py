"""Pieces every builder shares: object metadata, the restricted pod security profile, hashing.

Pure: typed values in, plain dicts out. This module must not do I/O, read the clock, or import
Kopf or a Kubernetes client.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, TypeAlias

from ..api.common import SecretKeyRef

Manifest: TypeAlias = dict[str, Any]
"""A Kubernetes object as the API server's JSON: what server-side apply sends."""

RUN_AS_USER = 65532
"""The non-root UID every ragops container runs as: the images' USER, distroless's "nonroot" (65532)."""


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: equal values always give equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def content_hash(value: Any, length: int = 12) -> str:
    """The first `length` hex digits of the SHA-256 of `value`'s canonical JSON."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()[:length]


def object_meta(
    name: str,
    namespace: str,
    labels: dict[str, str],
    owner: dict[str, Any],
    annotations: dict[str, str] | None = None,
) -> Manifest:
    meta: Manifest = {
        "name": name,
        "namespace": namespace,
        "labels": dict(labels),
        "ownerReferences": [dict(owner)],
    }
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


def restricted_pod_security_context() -> Manifest:
    """The pod half of the Pod Security Standards' `restricted` profile, plus a fixed UID.

    A numeric UID lets the kubelet verify runAsNonRoot even when the image names its user.
    """
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def restricted_container_security_context() -> Manifest:
    """The container half of the `restricted` profile, with a read-only root filesystem."""
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


TMP_VOLUME_NAME = "tmp"


def tmp_volume(size_limit: str) -> Manifest:
    """A bounded emptyDir for /tmp: the root filesystem is read-only, Python still needs scratch.

    The size limit makes a runaway temporary file evict this pod rather than fill the node's disk.
    """
    return {"name": TMP_VOLUME_NAME, "emptyDir": {"sizeLimit": size_limit}}


def tmp_mount() -> Manifest:
    return {"name": TMP_VOLUME_NAME, "mountPath": "/tmp"}


def secret_env(name: str, ref: SecretKeyRef) -> Manifest:
    """An env var read from a Secret key: the only way a credential reaches a ragops pod.

    The object then names the Secret, never its value, so `kubectl get -o yaml` of the
    Deployment or Job, and anything that logs it, never shows a credential.
    """
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}
