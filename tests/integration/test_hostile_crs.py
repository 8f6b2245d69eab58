"""The hostile custom resources on the real kube-apiserver: every invalid one refused naming its field,
every valid edge case accepted, stored as the models default it, and buildable into children the
apiserver accepts too.

The cases are tests/support/hostile_crs.py; tests/unit/test_hostile_models.py holds the models to
the same fields. Objects are sent as kubectl sends them (fieldValidation=Strict) with dryRun=All,
so nothing is stored and the cases need no clean-up; what a client that does not ask for strict
validation gets is shown by the pruning tests at the end.
"""

from __future__ import annotations

import json
import re
import ssl
import urllib.error
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from ragops_operator.api import KnowledgeBaseVersionSpec, RagDeploymentSpec
from ragops_operator.builders import (
    Manifest,
    RuntimeContext,
    VersionContext,
    build_build_job,
    build_controller_revision,
    build_eval_job,
    build_runtime_children,
    runtime_template_hash,
)
from tests.support.controlplane import ApiResponse, ControlPlane
from tests.support.hostile_crs import (
    INVALID,
    KBV,
    PLURALS,
    RAGD,
    VALID,
    Deep,
    Invalid,
    Valid,
    apply_changes,
    document_of,
    encode,
    example,
    python_value,
)

pytestmark = pytest.mark.cluster

IMAGE = "ghcr.io/ragops/ragops:0.1.0"
_UNKNOWN_FIELD = re.compile(r'unknown field \\?"([^"\\]+)\\?"')


@pytest.fixture(scope="module")
def hostile_namespace(control_plane: ControlPlane) -> Iterator[str]:
    """One namespace for every case: with dryRun nothing is stored, so the cases cannot meet."""
    name = f"hostile-{uuid.uuid4().hex[:6]}"
    control_plane.kubectl("create", "namespace", name)
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)


def submit(plane: ControlPlane, namespace: str, kind: str, body: str, validation: str = "Strict") -> ApiResponse:
    path = f"/apis/ragops.dev/v1alpha1/namespaces/{namespace}/{PLURALS[kind]}"
    return plane.request("POST", f"{path}?dryRun=All&fieldValidation={validation}", body)


def named_fields(response: ApiResponse) -> set[str]:
    """The fields a refusal names: its causes, and the unknown fields of a strict decoding error."""
    causes = (response.body.get("details") or {}).get("causes") or []
    fields = {cause["field"] for cause in causes if cause.get("field") and cause["field"] != "<nil>"}
    return fields | set(_UNKNOWN_FIELD.findall(response.body.get("message", "")))


def names(field: str, named: set[str]) -> bool:
    return any(path == field or path.startswith((f"{field}.", f"{field}[")) for path in named)


@pytest.mark.parametrize("case", INVALID, ids=[case.id for case in INVALID])
def test_each_hostile_resource_is_refused_naming_the_field(
    control_plane: ControlPlane, hostile_namespace: str, case: Invalid
) -> None:
    response = submit(control_plane, hostile_namespace, case.kind, encode(document_of(case)))
    assert response.status in (400, 422), f"accepted ({response.status}): {case.changes}"
    named = named_fields(response)
    assert names(case.field, named), f"expected {case.field}, the apiserver named {sorted(named)}: {response.body}"


def _children(case: Valid, spec: dict[str, Any], namespace: str) -> list[Manifest]:
    name, uid = document_of(case)["metadata"]["name"], str(uuid.uuid4())
    if case.kind == KBV:
        version = VersionContext(name, namespace, uid, KnowledgeBaseVersionSpec.model_validate(spec), IMAGE)
        return [build_build_job(version), build_eval_job(version)]
    deployment = RagDeploymentSpec.model_validate(spec)
    store = KnowledgeBaseVersionSpec.model_validate(example(KBV)["spec"]).store
    runtime = RuntimeContext(name, namespace, uid, deployment, store, deployment.runtime.image or IMAGE)
    children = [child for child in build_runtime_children(runtime) if child["kind"] != "ServiceMonitor"]
    return [*children, build_controller_revision(runtime, runtime_template_hash(runtime), revision=1)]


@pytest.mark.parametrize("case", VALID, ids=[case.id for case in VALID])
def test_each_valid_edge_case_is_accepted_stored_as_the_models_say_and_buildable(
    control_plane: ControlPlane, hostile_namespace: str, case: Valid
) -> None:
    response = submit(control_plane, hostile_namespace, case.kind, encode(document_of(case)))
    assert response.status == 201, response.body
    stored = response.body["spec"]
    model = KnowledgeBaseVersionSpec if case.kind == KBV else RagDeploymentSpec
    parsed = model.model_validate(python_value(document_of(case))["spec"])
    # The apiserver defaults exactly as the models do, and the operator reads back what it would compute.
    assert stored == parsed.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert model.model_validate(stored) == parsed
    # What the schema accepts, the operator can reconcile: every child is valid on this apiserver.
    # (ServiceMonitor is left out: its CRD belongs to Prometheus Operator, not to this cluster.)
    children = _children(case, stored, hostile_namespace)
    result = control_plane.kubectl(
        "create",
        "--dry-run=server",
        "-n",
        hostile_namespace,
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": children}),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == len(children)


# ---- what a client that does not ask for strict validation gets ---------------------------------------


def test_unknown_fields_are_refused_by_kubectl_and_pruned_with_a_warning_otherwise(
    control_plane: ControlPlane, hostile_namespace: str
) -> None:
    document = apply_changes(example(RAGD), {"spec.runtime.replica": 3, "spec.cache.extra": Deep(500)})
    strict = submit(control_plane, hostile_namespace, RAGD, encode(document))
    assert strict.status == 400 and {"spec.runtime.replica", "spec.cache.extra"} <= named_fields(strict)
    # fieldValidation=Warn is the apiserver's default for clients that do not say (kubectl says
    # Strict): the object is stored without the unknown fields, and the client gets a warning it may
    # never show. The operator then acts on the spec without them: only strict clients are safe.
    for validation in ("Warn", ""):
        lenient = submit(control_plane, hostile_namespace, RAGD, encode(document), validation=validation)
        assert lenient.status == 201, lenient.body
        assert "replica" not in lenient.body["spec"]["runtime"] and "extra" not in lenient.body["spec"]["cache"]
        assert any('unknown field \\"spec.runtime.replica\\"' in warning for warning in lenient.warnings)
    ignored = submit(control_plane, hostile_namespace, RAGD, encode(document), validation="Ignore")
    assert ignored.status == 201 and ignored.warnings == []


def test_a_null_is_pruned_and_defaulted_not_refused(control_plane: ControlPlane, hostile_namespace: str) -> None:
    # Structural schemas drop a null for a field that is not nullable, then default it: a null is
    # "use the default", never a crash in the operator.
    document = apply_changes(example(KBV), {"spec.chunking.size": None})
    response = submit(control_plane, hostile_namespace, KBV, encode(document))
    assert response.status == 201, response.body
    assert response.body["spec"]["chunking"]["size"] == 512


def test_nesting_beyond_the_decoder_limit_is_refused_before_any_field(
    control_plane: ControlPlane, hostile_namespace: str
) -> None:
    # Past 10,000 levels the apiserver's JSON decoder stops: refused whole, no field to name.
    document = apply_changes(example(RAGD), {"spec.runtime.extra": Deep(20_000)})
    response = submit(control_plane, hostile_namespace, RAGD, encode(document))
    assert response.status == 400 and "exceeded max depth" in response.body["message"]


def test_a_body_over_the_request_limit_is_refused(control_plane: ControlPlane, hostile_namespace: str) -> None:
    # 413, or the connection cut while the body is still being sent: either way nothing is decoded.
    document = apply_changes(example(RAGD), {"spec.generation.model": "m" * (4 << 20)})
    try:
        status = submit(control_plane, hostile_namespace, RAGD, encode(document)).status
    except urllib.error.URLError as error:
        assert isinstance(error.reason, ssl.SSLError | ConnectionError), error
    else:
        assert status == 413
