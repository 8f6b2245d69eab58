"""The generated CRDs are structural, documented, and exactly what the models say."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, Field

from ragops_operator import crdgen
from ragops_operator.api import KINDS, KNOWLEDGE_BASE_VERSION, RAG_DEPLOYMENT

REPO_ROOT = Path(__file__).resolve().parents[2]


def walk(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from walk(sub, f"{path}.{name}")
    if "items" in schema:
        yield from walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk(schema["additionalProperties"], f"{path}{{}}")


def root_schema(kind_index: int) -> dict[str, Any]:
    crd = crdgen.build_crd(KINDS[kind_index])
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


@pytest.mark.parametrize("kind_index", range(len(KINDS)))
def test_schema_is_structural(kind_index: int) -> None:
    for path, node in walk(root_schema(kind_index)):
        assert "$ref" not in node and "$defs" not in node, path
        assert "title" not in node, path
        if "anyOf" in node:
            assert node.get("x-kubernetes-int-or-string") is True, f"{path}: only int-or-string may use anyOf"
        else:
            assert "type" in node, f"{path}: every node needs a type"
        if "properties" in node:
            assert "additionalProperties" not in node, path


@pytest.mark.parametrize("kind_index", range(len(KINDS)))
def test_every_field_is_documented(kind_index: int) -> None:
    for path, node in walk(root_schema(kind_index)):
        if path.startswith(".metadata") or path == "" or path.endswith("{}") or path.endswith("[]"):
            continue
        assert node.get("description"), f"{path} has no description"


def test_optional_fields_are_nullable_and_required_fields_listed() -> None:
    spec = root_schema(1)["properties"]["spec"]
    assert spec["required"] == ["knowledgeBase"]
    autoscaling = spec["properties"]["runtime"]["properties"]["autoscaling"]
    assert autoscaling["nullable"] is True and autoscaling["required"] == ["maxReplicas"]
    assert root_schema(0)["properties"]["spec"]["required"] == [
        "goldenSet",
        "knowledgeBase",
        "sources",
        "store",
    ]


def test_bounds_enums_and_defaults_come_from_the_models() -> None:
    spec = root_schema(0)["properties"]["spec"]["properties"]
    dimensions = spec["embedding"]["properties"]["dimensions"]
    assert (dimensions["minimum"], dimensions["maximum"]) == (8, 2000)
    assert "default" not in dimensions  # the provider decides: 256 for static, 384 for the others
    assert spec["embedding"]["properties"]["provider"]["default"] == "static"
    assert spec["chunking"]["properties"]["strategy"]["enum"] == ["recursive", "fixed"]
    # Nested defaults never carry nulls (an Optional field without a value is simply absent).
    thresholds = spec["goldenSet"]["properties"]["thresholds"]["default"]
    assert thresholds == {"precisionAtK": 0.6, "recallAtK": 0.8, "mrr": 0.5, "ndcgAtK": 0.6}


def test_cel_rules_are_attached_where_declared() -> None:
    spec = root_schema(1)["properties"]["spec"]["properties"]
    rules = spec["retrieval"]["x-kubernetes-validations"]
    assert rules == [
        {
            "rule": "self.rerankTopK <= self.topK",
            "message": "rerankTopK must be less than or equal to topK",
            "fieldPath": ".rerankTopK",
        }
    ]
    kbv_spec = root_schema(0)["properties"]["spec"]
    assert {
        "rule": "self == oldSelf",
        "message": "spec is immutable: create a new KnowledgeBaseVersion instead",
    } in (kbv_spec["x-kubernetes-validations"])


def test_conditions_are_a_list_map_keyed_by_type() -> None:
    conditions = root_schema(1)["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert set(conditions["items"]["required"]) == {"type", "status", "reason", "lastTransitionTime"}


def test_names_subresources_and_columns() -> None:
    for kind, short in ((KNOWLEDGE_BASE_VERSION, "kbv"), (RAG_DEPLOYMENT, "ragd")):
        crd = crdgen.build_crd(kind)
        assert crd["spec"]["scope"] == "Namespaced"
        assert crd["spec"]["names"]["shortNames"] == [short]
        assert crd["spec"]["names"]["categories"] == ["ragops"]
        version = crd["spec"]["versions"][0]
        assert version["subresources"] == {"status": {}}
        columns = {column["name"] for column in version["additionalPrinterColumns"]}
        assert {"Phase", "Ready", "Age"} <= columns


def test_committed_crds_match_the_models() -> None:
    assert crdgen.stale_crds(REPO_ROOT / "crds") == []


def test_check_mode_reports_a_stale_and_a_stray_file(tmp_path: Path) -> None:
    crdgen.write_crds(tmp_path)
    target = tmp_path / crdgen.crd_filename(RAG_DEPLOYMENT)
    target.write_text(target.read_text().replace("Candidates retrieved per query.", "Edited by hand."))
    (tmp_path / "ragops.dev_removedkinds.yaml").write_text("{}")
    problems = crdgen.stale_crds(tmp_path)
    assert len(problems) == 2
    assert "not rendered from any model" in problems[0]
    assert "-                    description: Edited by hand." in problems[1]


def test_cli_check_fails_on_stale_files(tmp_path: Path) -> None:
    ragops = str(Path(sys.executable).parent / "ragops")
    dirs = ["--output-dir", str(tmp_path / "crds"), "--chart-dir", str(tmp_path / "chart")]
    fresh = subprocess.run([ragops, "crds", *dirs], capture_output=True, text=True)
    assert fresh.returncode == 0
    assert (tmp_path / "chart" / crdgen.CHART_CRD_DIR / crdgen.crd_filename(RAG_DEPLOYMENT)).exists()
    ok = subprocess.run([ragops, "crds", "--check", *dirs], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    # Either copy going stale fails the check: the plain CRDs, then the chart's.
    for stale_file in (
        tmp_path / "crds" / crdgen.crd_filename(KNOWLEDGE_BASE_VERSION),
        tmp_path / "chart" / crdgen.CHART_CRD_DIR / crdgen.crd_filename(KNOWLEDGE_BASE_VERSION),
    ):
        stale_file.unlink()
        stale = subprocess.run([ragops, "crds", "--check", *dirs], capture_output=True, text=True)
        assert stale.returncode == 1
        assert "are stale: run `ragops crds`" in stale.stderr and f"{stale_file} (committed)" in stale.stderr
        subprocess.run([ragops, "crds", *dirs], capture_output=True, text=True, check=True)


class _Undocumented(BaseModel):
    count: int = Field(default=1)


class _Union(BaseModel):
    value: int | str | None = Field(default=None, description="A union that is not Optional[X].")


def test_refuses_undocumented_fields_and_non_structural_unions() -> None:
    with pytest.raises(crdgen.CrdSchemaError, match=r"_Undocumented\.count: every field needs a description"):
        crdgen.openapi_schema(_Undocumented)
    with pytest.raises(crdgen.CrdSchemaError, match="unions other than Optional"):
        crdgen.openapi_schema(_Union)


class _Unbounded(BaseModel):
    name: str = Field(default="", description="A string without max_length.")


class _UnboundedList(BaseModel):
    names: list[int] = Field(default=[], description="A list without max_length.")


def test_refuses_unbounded_strings_and_lists() -> None:
    # The apiserver costs CEL rules from these bounds, and refuses a CRD whose rules could cost too much.
    with pytest.raises(crdgen.CrdSchemaError, match=r"_Unbounded\.name: a string needs a maxLength"):
        crdgen.openapi_schema(_Unbounded)
    with pytest.raises(crdgen.CrdSchemaError, match=r"_UnboundedList\.names: a list needs a maxItems"):
        crdgen.openapi_schema(_UnboundedList)


@pytest.mark.parametrize("kind_index", range(len(KINDS)))
def test_every_string_list_and_map_is_bounded(kind_index: int) -> None:
    for path, node in walk(root_schema(kind_index)):
        if path in ("", ".apiVersion", ".kind", ".metadata"):
            continue
        if node.get("type") == "string" and "enum" not in node and node.get("format") != "date-time":
            assert "maxLength" in node, path
        if node.get("type") == "array":
            assert "maxItems" in node, path
        if isinstance(node.get("additionalProperties"), dict):
            assert "maxProperties" in node, path


class _Item(BaseModel):
    path: str = Field(default="/", max_length=10, description="A defaulted field of a list item.")


class _WithList(BaseModel):
    items: list[_Item] = Field(default=[], max_length=3, description="A list of items.")


def test_refuses_a_default_inside_a_spec_list_item(monkeypatch: pytest.MonkeyPatch) -> None:
    # The apiserver would write it into the user's list, and Argo CD's diff would never settle.
    kind = dataclasses.replace(RAG_DEPLOYMENT, spec_model=_WithList)
    with pytest.raises(
        crdgen.CrdSchemaError, match=r"RagDeployment\.spec\.items\[\]\.path: a default inside a list item"
    ):
        crdgen.build_crd(kind)
