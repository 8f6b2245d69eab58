"""The hostile custom resources against the operator's own models: the Python half of every rule.

Each invalid case of tests/support/hostile_crs.py must be refused by the spec model naming the same
field as the apiserver (tests/integration/test_hostile_crs.py checks that side), each valid edge case
accepted, and every validation rule in the CRDs must be the reason at least one case is refused.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from ragops_operator import crdgen
from ragops_operator.api import KINDS, KnowledgeBaseVersionSpec, RagDeploymentSpec
from tests.support.hostile_crs import INVALID, KBV, RAGD, VALID, Invalid, Valid, document_of, python_value
from tests.unit.test_crdgen import walk

MODELS: dict[str, type[BaseModel]] = {KBV: KnowledgeBaseVersionSpec, RAGD: RagDeploymentSpec}
_UNION_BRANCH = re.compile(r"^(constrained-\w+|function-\w+\[.*\]|int|str|float|bool|none)$")
_RULE_FIELD = re.compile(r"^Value error, ([A-Za-z][A-Za-z0-9]*(\.[A-Za-z][A-Za-z0-9]*)*): ")


def named_fields(error: ValidationError) -> dict[str, list[str]]:
    """Field path (as the apiserver writes it, "spec.sources[1].url") -> the messages about it."""
    named: dict[str, list[str]] = {}
    for detail in error.errors():
        path = "spec"
        for part in detail["loc"]:
            if isinstance(part, int):
                path += f"[{part}]"
            elif not _UNION_BRANCH.match(part):
                path += f".{part}"
        message = detail["msg"]
        # A model-level Rule with a field_path prefixes its message with the field, as the CRD's fieldPath does.
        rule_field = _RULE_FIELD.match(message)
        if rule_field:
            path += f".{rule_field.group(1)}"
        named.setdefault(path, []).append(message)
    return named


def names(field: str, named: dict[str, list[str]]) -> bool:
    """Whether the error names `field`, or a path within it ("spec.runtime.replicas.value" for an object given)."""
    return any(path == field or path.startswith((f"{field}.", f"{field}[")) for path in named)


def refusal(case: Invalid) -> dict[str, list[str]]:
    with pytest.raises(ValidationError) as caught:
        MODELS[case.kind].model_validate(python_value(document_of(case))["spec"])
    return named_fields(caught.value)


MIRRORED = [case for case in INVALID if case.python]


@pytest.mark.parametrize("case", MIRRORED, ids=[case.id for case in MIRRORED])
def test_the_models_refuse_each_hostile_spec_naming_the_field(case: Invalid) -> None:
    named = refusal(case)
    assert names(case.field, named), f"expected {case.field}, the models named {sorted(named)}"


@pytest.mark.parametrize("case", VALID, ids=[case.id for case in VALID])
def test_the_models_accept_each_valid_edge_case(case: Valid) -> None:
    MODELS[case.kind].model_validate(python_value(document_of(case))["spec"])


def test_the_suite_is_big_enough_for_both_kinds() -> None:
    for kind in (KBV, RAGD):
        assert sum(case.kind == kind for case in INVALID) >= 50, kind
        assert sum(case.kind == kind for case in VALID) >= 10, kind
    assert len(INVALID) >= 100 and len(VALID) >= 20
    ids = [case.id for case in INVALID] + [case.id for case in VALID]
    assert len(set(ids)) == len(ids), "ids are unique"


def _rules(spec: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(field path with [] for any index or key, message) of every validation rule in a CRD's spec."""
    for path, node in walk(spec, "spec"):
        for rule in node.get("x-kubernetes-validations", []):
            if "oldSelf" not in rule["rule"]:  # transition rules: test_crds_on_apiserver's update test
                yield path.replace("{}", "[]") + rule.get("fieldPath", ""), rule["message"]


def _generic(path: str) -> str:
    return re.sub(r"\[[^\]]*\]", "[]", path)


def test_every_rule_in_the_crds_is_the_reason_some_case_is_refused() -> None:
    # A new rule cannot ship without a hostile case proving it refuses what it should, at the
    # field it names: the message must be the models' reason for refusing that field.
    refused: set[tuple[str, str]] = set()
    for case in MIRRORED:
        for path, messages in refusal(case).items():
            refused |= {(_generic(path), message) for message in messages}
    missing = []
    for kind in KINDS:
        spec = crdgen.build_crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        for path, message in _rules(spec):
            if not any(where == path and message in text for where, text in refused):
                missing.append(f"{kind.kind} {path}: {message}")
    assert missing == []
