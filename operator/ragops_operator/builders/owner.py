"""Owner references: how every child is tied to the custom resource it was built for.

Pure; this module must not do I/O or import a Kubernetes client.
"""

from __future__ import annotations

from typing import Any


def owner_reference(api_version: str, kind: str, name: str, uid: str) -> dict[str, Any]:
    """A controller owner reference to the custom resource `kind`/`name`.

    `controller: true` makes the child count as managed by exactly this owner, so another
    controller will not adopt it; `blockOwnerDeletion: true` makes foreground deletion of the
    owner wait for the child, so a deleted RagDeployment is not reported gone while its pods
    still serve.
    """
    return {
        "apiVersion": api_version,
        "kind": kind,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }
