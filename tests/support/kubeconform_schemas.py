"""JSON schemas for kubeconform, made offline from a real apiserver's OpenAPI and from CRDs.

kubeconform normally downloads its schemas (yannh/kubernetes-json-schema); tests have no internet,
and the apiserver the tests run serves the authoritative OpenAPI of the exact Kubernetes version
anyway. `write_schemas` converts what kubeconform's own `openapi2jsonschema.py` converts, the same
way: every `$ref` inlined, `int-or-string` and quantities as string-or-number, and, for strict
validation, `additionalProperties: false` on every object that lists its properties (so an
undocumented or misspelt field fails, as kubectl's validation would). Custom resources come from
their CRDs' `openAPIV3Schema`, `nullable` and `x-kubernetes-int-or-string` translated.

Files land where `SCHEMA_LOCATION` (kubeconform's `-schema-location` template) looks for them:
`<dir>/<group or "v1">/<kind>_<version>.json`.

Test infrastructure, not product code: no part of ragops imports it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

Schema = dict[str, Any]

SCHEMA_LOCATION = "{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json"
"""Relative to the schema directory; kubeconform fills in the group ("v1" for the core group)."""

_INT_OR_STRING: Schema = {"oneOf": [{"type": "string"}, {"type": "integer"}]}
_QUANTITY: Schema = {"oneOf": [{"type": "string"}, {"type": "number"}]}
_QUANTITY_DEFINITION = "io.k8s.apimachinery.pkg.api.resource.Quantity"


def schema_path(directory: Path, api_version: str, kind: str) -> Path:
    group, _, version = api_version.rpartition("/")
    return directory / (group or version) / f"{kind.lower()}_{version}.json"


def builtin_schema(openapi_v2: Mapping[str, Any], api_version: str, kind: str) -> Schema:
    """The standalone strict schema of a built-in kind, from the apiserver's /openapi/v2 document."""
    group, _, version = api_version.rpartition("/")
    definitions: Mapping[str, Schema] = openapi_v2["definitions"]
    for name, definition in definitions.items():
        for gvk in definition.get("x-kubernetes-group-version-kind") or []:
            if (gvk["group"], gvk["version"], gvk["kind"]) == (group, version, kind):
                return _strict(_inline(definition, definitions, (name,)), root=True)
    raise KeyError(f"the apiserver's OpenAPI has no {api_version} {kind}")


def crd_schemas(crd: Mapping[str, Any]) -> dict[tuple[str, str], Schema]:
    """(apiVersion, kind) -> strict schema of every version a CustomResourceDefinition serves."""
    spec = crd["spec"]
    schemas = {}
    for version in spec["versions"]:
        root = dict(version["schema"]["openAPIV3Schema"])
        schemas[(f"{spec['group']}/{version['name']}", spec["names"]["kind"])] = _strict(_crd_node(root), root=True)
    return schemas


def write_schemas(
    directory: Path,
    wanted: Iterable[tuple[str, str]],
    openapi_v2: Mapping[str, Any],
    crds: Iterable[Mapping[str, Any]],
) -> None:
    """Writes the schema of every wanted (apiVersion, kind): a CRD's when one defines it, else the
    apiserver's. A kind neither knows raises: kubeconform must never skip a resource silently."""
    custom: dict[tuple[str, str], Schema] = {}
    for crd in crds:
        custom.update(crd_schemas(crd))
    for api_version, kind in sorted(set(wanted)):
        schema = custom.get((api_version, kind)) or builtin_schema(openapi_v2, api_version, kind)
        target = schema_path(directory, api_version, kind)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(schema), encoding="utf-8")


def _inline(node: Any, definitions: Mapping[str, Schema], seen: tuple[str, ...]) -> Any:
    if isinstance(node, list):
        return [_inline(item, definitions, seen) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str):
        name = ref.rsplit("/", 1)[-1]
        if name == _QUANTITY_DEFINITION:
            return dict(_QUANTITY)
        if name in seen:
            # JSONSchemaProps refers to itself (a CRD's schema inside a CRD): accept anything below.
            return {}
        return _inline(definitions[name], definitions, (*seen, name))
    if node.get("format") == "int-or-string":
        return dict(_INT_OR_STRING)
    return {key: _inline(value, definitions, seen) for key, value in node.items()}


def _crd_node(node: Any) -> Any:
    if isinstance(node, list):
        return [_crd_node(item) for item in node]
    if not isinstance(node, dict):
        return node
    if node.get("x-kubernetes-int-or-string"):
        return dict(_INT_OR_STRING)
    out = {key: _crd_node(value) for key, value in node.items() if key != "nullable"}
    if node.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


def _strict(schema: Schema, *, root: bool = False) -> Schema:
    """Closes every object that lists its properties, as kubeconform's -strict schemas do.

    The root stays open (apiVersion/kind/metadata are listed anyway), and objects that keep
    unknown fields on purpose (`x-kubernetes-preserve-unknown-fields`) stay open. Walks schema
    positions only, so a field named "properties" is never mistaken for a schema keyword.
    """
    out = dict(schema)
    if isinstance(out.get("properties"), dict):
        out["properties"] = {name: _strict(sub) for name, sub in out["properties"].items()}
    for key in ("items", "additionalProperties", "not"):
        if isinstance(out.get(key), dict):
            out[key] = _strict(out[key])
    for key in ("oneOf", "anyOf", "allOf"):
        if isinstance(out.get(key), list):
            out[key] = [_strict(sub) for sub in out[key]]
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
        and not root
    ):
        out["additionalProperties"] = False
    return out
