"""The quick start as documented: README blocks identical to examples/quickstart/, and the Argo CD example valid.

The objects themselves are applied to a real apiserver, built, gated and served in
tests/integration/test_gitops.py; here is what needs no control plane.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.readme import readme_files

REPO_ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = REPO_ROOT / "examples" / "quickstart"
APPLICATION = REPO_ROOT / "examples" / "argocd" / "application.yaml"
KUBECONFORM = REPO_ROOT / ".tools" / "bin" / "kubeconform"
APPLICATION_CRD = REPO_ROOT / ".tools" / "crds" / "application-crd.yaml"


def test_the_readme_embeds_every_quickstart_file_verbatim() -> None:
    blocks = readme_files()
    files = {str(path.relative_to(REPO_ROOT)): path.read_text() for path in sorted(QUICKSTART.glob("*.yaml"))}
    assert files, "no quick-start files"
    assert blocks == files


def test_the_readme_commands_name_the_quickstart_objects() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme[readme.index("## Quick start") : readme.index("## Argo CD")]
    for path in QUICKSTART.glob("*.yaml"):
        for document in yaml.safe_load_all(path.read_text()):
            if document["kind"] == "KnowledgeBaseVersion":
                assert f"--for=condition=Ready kbv/{document['metadata']['name']} " in section
            if document["kind"] == "RagDeployment":
                assert f"--for=condition=Available ragd/{document['metadata']['name']} " in section
                assert f"svc/{document['metadata']['name']}-runtime " in section
        if path.name != "postgres-dsn.yaml":  # the alternative is shown, not applied
            assert f"-f examples/quickstart/{path.name}\n" in section, path.name


def test_both_database_options_give_the_secret_the_version_reads() -> None:
    (cluster,) = yaml.safe_load_all((QUICKSTART / "postgres-cnpg.yaml").read_text())
    (secret,) = yaml.safe_load_all((QUICKSTART / "postgres-dsn.yaml").read_text())
    kbv = next(
        d
        for d in yaml.safe_load_all((QUICKSTART / "knowledge-base.yaml").read_text())
        if d["kind"] == "KnowledgeBaseVersion"
    )
    reference = kbv["spec"]["store"]["dsnSecretRef"]
    # CloudNativePG names its application Secret <cluster>-app, with the DSN under `uri`.
    assert reference == {"name": f"{cluster['metadata']['name']}-app", "key": "uri"}
    assert secret["metadata"]["name"] == reference["name"] and reference["key"] in secret["stringData"]
    # A "standard" CloudNativePG image (pgvector included), the extension created at bootstrap.
    assert re.fullmatch(r"ghcr\.io/cloudnative-pg/postgresql:\d+\.\d+-standard-\w+", cluster["spec"]["imageName"])
    assert "CREATE EXTENSION IF NOT EXISTS vector" in cluster["spec"]["bootstrap"]["initdb"]["postInitApplicationSQL"]


def application_schema(directory: Path) -> Path:
    """Argo CD's Application CRD as the JSON schema kubeconform reads (what openapi2jsonschema does)."""
    crd: dict[str, Any] = yaml.safe_load(APPLICATION_CRD.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    path = directory / "application-argoproj.io-v1alpha1.json"  # kubeconform lower-cases the kind
    path.write_text(json.dumps(closed(version["schema"]["openAPIV3Schema"])))
    return path


def closed(schema: Any) -> Any:
    """`additionalProperties: false` wherever the CRD lists properties and keeps no unknown fields, as
    openapi2jsonschema's strict mode does: the apiserver would drop (kubectl: refuse) an unknown field."""
    if isinstance(schema, list):
        return [closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    result = {key: closed(value) for key, value in schema.items()}
    if "properties" in result and "additionalProperties" not in result:
        if not result.get("x-kubernetes-preserve-unknown-fields"):
            result["additionalProperties"] = False
    return result


def kubeconform(document_path: Path, schemas: Path) -> subprocess.CompletedProcess[str]:
    location = str(schemas / "{{ .ResourceKind }}-{{ .Group }}-{{ .ResourceAPIVersion }}.json")
    return subprocess.run(
        [str(KUBECONFORM), "-strict", "-summary", "-schema-location", location, str(document_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_example_application_is_valid_for_argo_cd_s_crd(tmp_path: Path) -> None:
    if not KUBECONFORM.exists() or not APPLICATION_CRD.exists():
        pytest.fail("kubeconform or Argo CD's Application CRD is missing: run `make tools` (tools/external-crds.sh)")
    schemas = tmp_path / "schemas"
    schemas.mkdir()
    application_schema(schemas)
    result = kubeconform(APPLICATION, schemas)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Valid: 1" in result.stdout, result.stdout
    # And the same check refuses a misspelt field, so the pass above means something.
    broken = yaml.safe_load(APPLICATION.read_text())
    broken["spec"]["source"]["directroy"] = broken["spec"]["source"].pop("directory")
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(broken))
    refused = kubeconform(tmp_path / "broken.yaml", schemas)
    assert refused.returncode != 0 and "directroy" in refused.stdout, refused.stdout


def test_the_example_application_syncs_the_quickstart() -> None:
    application = yaml.safe_load(APPLICATION.read_text())
    source = application["spec"]["source"]
    assert (REPO_ROOT / source["path"]) == QUICKSTART
    # The plain-DSN Secret would fight CloudNativePG over pg-app: it is not synced.
    assert source["directory"]["exclude"] == "postgres-dsn.yaml" and (QUICKSTART / "postgres-dsn.yaml").exists()
    assert "ServerSideApply=true" in application["spec"]["syncPolicy"]["syncOptions"]
