"""The only module that calls the Kubernetes API (lightkube), with 404 and 409 mapped in one place.

Children are applied server-side with one field manager and force, so every pass converges drift
made by hand instead of creating once and forgetting. Status is written through the status
subresource only, so the user's spec is never touched (no perpetual diff for GitOps tools).
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightkube import ApiError, AsyncClient, codecs
from lightkube.config.kubeconfig import KubeConfig
from lightkube.core.exceptions import ConfigError
from lightkube.generic_resource import create_namespaced_resource
from lightkube.types import PatchType

from .api.common import GROUP, VERSION
from .api.kinds import KINDS

FIELD_MANAGER = "ragops-operator"
ALL_NAMESPACES = "*"
"""The `namespace` of `Kube.list` that lists across every namespace (lightkube's convention)."""
log = logging.getLogger("ragops.operator")

for _kind in KINDS:
    create_namespaced_resource(GROUP, VERSION, _kind.kind, _kind.plural)
# Prometheus Operator's kind: applied only when its CRD exists in the cluster.
create_namespaced_resource("monitoring.coreos.com", "v1", "ServiceMonitor", "servicemonitors")


class KubeError(Exception):
    """A Kubernetes API call failed; the message is the apiserver's (e.g. 403 Forbidden and why)."""


class ChildRefused(KubeError):
    """The apiserver refused a child rendered from a spec (422 Invalid): its message names the child's field."""


class Kube:
    """Async Kubernetes access for the operator's handlers and the kubectl plugin."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    @classmethod
    def from_environment(cls) -> Kube:
        """In-cluster config in a pod, otherwise $KUBECONFIG or ~/.kube/config."""
        return cls(AsyncClient(field_manager=FIELD_MANAGER))

    @classmethod
    def from_kubeconfig(
        cls, path: Path | None, context: str | None, namespace: str | None, *, field_manager: str
    ) -> tuple[Kube, str]:
        """A client for a kubeconfig file (default: $KUBECONFIG, ~/.kube/config, in-cluster) and context,
        and the namespace to use: the one given, else the context's, else `default` (as kubectl does)."""
        try:
            config = KubeConfig.from_file(path) if path is not None else KubeConfig.from_env()
            single = config.get(context)
        except ConfigError as error:
            raise KubeError(f"no context {context!r} in the kubeconfig" if context else str(error)) from None
        if single is None:
            raise KubeError(f"no context {context!r} in the kubeconfig")
        resolved = namespace or single.namespace or "default"
        return cls(AsyncClient(config=single, namespace=resolved, field_manager=field_manager)), resolved

    async def close(self) -> None:
        await self._client.close()

    async def apply(self, manifest: Mapping[str, Any]) -> None:
        resource = codecs.from_dict(dict(manifest))
        try:
            await self._client.apply(resource, field_manager=FIELD_MANAGER, force=True)
        except ApiError as error:
            if error.status.code != 422:
                raise
            kind, name = manifest.get("kind"), (manifest.get("metadata") or {}).get("name")
            raise ChildRefused(f"the apiserver refused {kind} {name}: {error.status.message}") from None

    async def create(self, manifest: Mapping[str, Any]) -> bool:
        """Creates an object; False when it already exists (a ControllerRevision, a Lease won by another)."""
        try:
            await self._client.create(codecs.from_dict(dict(manifest)), field_manager=FIELD_MANAGER)
        except ApiError as error:
            if error.status.code == 409:
                return False
            raise
        return True

    async def replace(self, manifest: Mapping[str, Any]) -> bool:
        """Replaces an object at the resourceVersion in `manifest`; False when someone wrote it first."""
        try:
            await self._client.replace(codecs.from_dict(dict(manifest)), field_manager=FIELD_MANAGER)
        except ApiError as error:
            if error.status.code == 409:
                return False
            raise
        return True

    async def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        resource_type = _resource_type(api_version, kind)
        try:
            found = await self._client.get(resource_type, name, namespace=namespace)
        except ApiError as error:
            if error.status.code == 404:
                return None
            raise
        return _to_dict(found)

    async def list(
        self,
        api_version: str,
        kind: str,
        namespace: str,
        labels: Mapping[str, str] | None = None,
        fields: Mapping[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        """Every object of `kind` in `namespace` (ALL_NAMESPACES: in all of them) matching the selectors."""
        resource_type = _resource_type(api_version, kind)
        selector: dict[str, Any] | None = dict(labels) if labels else None
        field_selector: dict[str, Any] | None = dict(fields) if fields else None
        return [
            _to_dict(item)
            async for item in self._client.list(
                resource_type, namespace=namespace, labels=selector, fields=field_selector
            )
        ]

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        try:
            await self._client.delete(_resource_type(api_version, kind), name, namespace=namespace)
        except ApiError as error:
            if error.status.code != 404:
                raise

    async def patch_status(self, kind: str, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        """Merge-patches the status subresource of one of our custom resources."""
        resource_type = _resource_type(f"{GROUP}/{VERSION}", kind)
        await self._client.patch(
            resource_type.Status,
            name,
            {"status": dict(status)},
            namespace=namespace,
            patch_type=PatchType.MERGE,
        )

    async def consume_annotations(
        self, api_version: str, kind: str, namespace: str, name: str, expected: Mapping[str, str]
    ) -> bool:
        """Removes annotations if they still hold the `expected` values; False when one changed or is gone.

        A JSON patch that tests each value before removing it: an annotation rewritten between the
        read and this call (a second `kubectl ragops promote`) is not lost, and one consumed twice
        (two passes racing) is applied once.
        """
        operations: list[dict[str, Any]] = []
        for key, value in expected.items():
            pointer = "/metadata/annotations/" + key.replace("~", "~0").replace("/", "~1")
            operations += [{"op": "test", "path": pointer, "value": value}, {"op": "remove", "path": pointer}]
        try:
            await self._client.patch(
                _resource_type(api_version, kind), name, operations, namespace=namespace, patch_type=PatchType.JSON
            )
        except ApiError as error:
            if error.status.code in (404, 409, 422):
                return False
            raise
        return True

    async def annotate(
        self, api_version: str, kind: str, namespace: str, name: str, annotations: Mapping[str, str]
    ) -> dict[str, Any]:
        """Merge-patches annotations onto an object (the kubectl plugin's manual actions); returns the object."""
        try:
            patched = await self._client.patch(
                _resource_type(api_version, kind),
                name,
                {"metadata": {"annotations": dict(annotations)}},
                namespace=namespace,
                patch_type=PatchType.MERGE,
            )
        except ApiError as error:
            raise KubeError(f"{error.status.code} {error.status.reason}: {error.status.message}") from None
        return _to_dict(patched)

    async def secret_value(self, namespace: str, name: str, key: str) -> str | None:
        """The decoded value, or None when the Secret or its key is missing or may not be read.

        A refusal (403) is expected where the chart narrows Secret access to named Secrets
        (`rbac.storeSecretNames`): the object waits for the Secret like a missing one, not crash.
        """
        try:
            secret = await self.get("v1", "Secret", namespace, name)
        except ApiError as error:
            if error.status.code != 403:
                raise
            log.warning(
                "not allowed to read Secret %s/%s: add it to the chart's rbac.storeSecretNames", namespace, name
            )
            return None
        if secret is None:
            return None
        encoded = (secret.get("data") or {}).get(key)
        return base64.b64decode(encoded).decode() if encoded is not None else None

    async def config_map_value(self, namespace: str, name: str, key: str) -> str | None:
        config_map = await self.get("v1", "ConfigMap", namespace, name)
        value = ((config_map or {}).get("data") or {}).get(key)
        return value if isinstance(value, str) else None

    async def has_resource(self, api_version: str, kind: str, namespace: str) -> bool:
        """Whether the API serves `kind` (e.g. ServiceMonitor only where Prometheus Operator is installed)."""
        try:
            async for _ in self._client.list(_resource_type(api_version, kind), namespace=namespace, chunk_size=1):
                break
        except Exception as error:
            if _status_code(error) == 404:
                return False
            raise
        return True


def api_error_message(error: BaseException) -> str | None:
    """The apiserver's words for a failed call ("403 Forbidden: ..."), or None if it is not an API error."""
    if isinstance(error, KubeError):
        return str(error)
    if isinstance(error, ApiError):
        return f"{error.status.code} {error.status.reason}: {error.status.message}"
    return None


def _status_code(error: BaseException) -> int | None:
    """The HTTP status of a failed call: an ApiError, or the HTTP library's error when the apiserver
    answers 404 for a whole API group it does not serve (no Status body to parse)."""
    if isinstance(error, ApiError):
        return int(error.status.code) if error.status.code is not None else None
    response = getattr(error, "response", None)
    code = getattr(response, "status_code", None)
    return int(code) if code is not None else None


def _resource_type(api_version: str, kind: str) -> Any:
    return codecs.resource_registry.load(api_version, kind)


def _to_dict(resource: Any) -> dict[str, Any]:
    data = resource.to_dict() if hasattr(resource, "to_dict") else dict(resource)
    return dict(data)
