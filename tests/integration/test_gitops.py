"""The quick start synced the way Argo CD syncs it, on the real control plane: built, gated, served, and in sync.

Argo CD (with `ServerSideApply=true`, as examples/argocd/application.yaml sets) applies manifests
server-side under the field manager `argocd-controller`. Its diff then compares only the fields the
manifests set: it ignores status and live-only fields (defaults, fields other managers own). So the
operator keeps an Application in sync exactly when it writes none of the applied fields, no label and
no annotation outside its own `ragops.dev/` prefix; `metadata.managedFields` shows what it wrote.

The build and gate Jobs really run (ProcessKubelet, against the test PostgreSQL); kwok readies the
runtime pods. The CloudNativePG Cluster is not applied: there is no CloudNativePG here, so the quick
start's plain-DSN Secret (postgres-dsn.yaml) stands in for it, pointed at the test database.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr

from ragops_runtime.app import create_app
from ragops_runtime.settings import RuntimeSettings
from tests.integration.test_operator import eventually, get, running_operator
from tests.support.controlplane import ControlPlane
from tests.support.http_double import free_port
from tests.support.kubelet import ProcessKubelet
from tests.support.runtime_server import serving
from tests.unit.test_argocd_health import health_script, run_health_script
from tests.unit.test_images import IMAGES, healthcheck_command, stages

REPO_ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = REPO_ROOT / "examples" / "quickstart"
ARGOCD_MANAGER = "argocd-controller"
Doc = dict[str, Any]


def load(name: str) -> list[Doc]:
    return [document for document in yaml.safe_load_all((QUICKSTART / name).read_text()) if document]


def argo_apply(plane: ControlPlane, namespace: str, documents: list[Doc]) -> None:
    stream = "\n---\n".join(json.dumps(document) for document in documents)
    plane.kubectl(
        "apply", "--server-side", f"--field-manager={ARGOCD_MANAGER}", "-n", namespace, "-f", "-", input=stream
    )


def live_object(plane: ControlPlane, namespace: str, document: Doc) -> Doc:
    """The live object, managedFields included (kubectl hides them unless asked)."""
    kind: str = document["kind"]
    resource = {"KnowledgeBaseVersion": "kbv", "RagDeployment": "ragd"}.get(kind, kind.lower())
    name = document["metadata"]["name"]
    out = plane.kubectl("get", "-n", namespace, resource, name, "-o", "json", "--show-managed-fields").stdout
    live: Doc = json.loads(out)
    return live


def unchanged(applied: Any, live: Any, path: str = "") -> list[str]:
    """Every field of `applied` as it is in `live`; `live` may hold more (defaults, status)."""
    if isinstance(applied, dict):
        if not isinstance(live, dict):
            return [f"{path}: {live!r} is not an object"]
        return [
            problem for key, value in applied.items() for problem in unchanged(value, live.get(key), f"{path}.{key}")
        ]
    return [] if applied == live else [f"{path}: applied {applied!r}, live {live!r}"]


def foreign_fields(fields: Doc) -> list[str]:
    """Fields of a managedFields entry that are not the operator's: status, its finalizer, ragops.dev/ annotations."""
    problems = []
    for top, owned in fields.items():
        if top in (".", "f:status"):
            continue
        if top != "f:metadata":
            problems.append(top)
            continue
        for meta, inner in owned.items():
            if meta == "f:finalizers":
                problems += [f"finalizer {key}" for key in inner if key not in (".", 'v:"ragops.dev/finalizer"')]
            elif meta == "f:annotations":
                problems += [f"annotation {key}" for key in inner if key != "." and not key.startswith("f:ragops.dev/")]
            elif meta != ".":
                problems.append(f"metadata {meta}")
    return problems


def run_healthcheck(dockerfile: str, port: int | None, env: dict[str, str] | None = None) -> int:
    """The image's HEALTHCHECK command, with the venv's python for the image's; `port` replaces a fixed 8081."""
    argv = healthcheck_command(stages(dockerfile)[-1])
    assert argv[0] == "python"
    script = argv[2] if port is None else argv[2].replace("8081", str(port))
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, timeout=30).returncode


def test_the_quickstart_synced_like_argo_cd_is_built_served_healthy_and_in_sync(
    workloads: ControlPlane, namespace: str, monkeypatch: pytest.MonkeyPatch, pg_dsn: str
) -> None:
    plane = workloads
    (secret,) = load("postgres-dsn.yaml")
    secret["stringData"]["uri"] = pg_dsn
    knowledge_base = load("knowledge-base.yaml")
    (deployment,) = load("ragdeployment.yaml")
    operator_image = next(image for image in IMAGES if image.dockerfile == "operator.Dockerfile")
    liveness = free_port()

    with (
        ProcessKubelet(plane, [namespace]),
        running_operator(plane, namespace, monkeypatch, ["--liveness", f"http://127.0.0.1:{liveness}/healthz"]),
    ):
        argo_apply(plane, namespace, [secret, *knowledge_base])
        version = next(d for d in knowledge_base if d["kind"] == "KnowledgeBaseVersion")["metadata"]["name"]
        # The README's own commands.
        plane.kubectl("wait", "-n", namespace, "--for=condition=Ready", f"kbv/{version}", "--timeout=150s", timeout=160)
        argo_apply(plane, namespace, [deployment])
        name = deployment["metadata"]["name"]
        plane.kubectl(
            "wait", "-n", namespace, "--for=condition=Available", f"ragd/{name}", "--timeout=90s", timeout=100
        )

        # Argo CD's health of the live objects, by the shipped Lua.
        live_version = get(plane, namespace, "kbv", version)
        assert live_version is not None
        version_health = run_health_script(health_script("KnowledgeBaseVersion"), live_version)
        assert version_health["status"] == "Healthy", version_health
        live_deployment = get(plane, namespace, "ragd", name)
        assert live_deployment is not None
        deployment_health = run_health_script(health_script("RagDeployment"), live_deployment)
        # Promoted and serving, then baking for the default 10m: Progressing until it is known-good.
        assert deployment_health == {
            "status": "Progressing",
            "message": f"Baking: revision 1 ({version}) is baking",
        }, deployment_health

        # The operator image's HEALTHCHECK against the live operator's liveness endpoint.
        assert run_healthcheck(operator_image.dockerfile, liveness) == 0
        assert run_healthcheck(operator_image.dockerfile, free_port()) != 0

        # What Argo CD would diff: the manifests against the live objects, server-side, as argocd-controller.
        manifests = [secret, *knowledge_base, deployment]
        stream = "\n---\n".join(json.dumps(document) for document in manifests)

        def in_sync() -> bool:
            result = plane.kubectl(
                "diff",
                "--server-side",
                f"--field-manager={ARGOCD_MANAGER}",
                "-n",
                namespace,
                "-f",
                "-",
                input=stream,
                check=False,
            )
            assert result.returncode in (0, 1), result.stderr
            return result.returncode == 0

        # Retried only because a status write landing between kubectl's read and its dry run shows as a diff.
        eventually("kubectl diff to show no difference", in_sync, timeout=20)

    for document in (*knowledge_base, deployment):
        live = live_object(plane, namespace, document)
        what = f"{document['kind']}/{document['metadata']['name']}"
        assert unchanged({k: v for k, v in document.items() if k != "metadata"}, live) == [], what
        assert unchanged(document["metadata"], live["metadata"]) == [], what
        assert live["metadata"].get("labels") == document["metadata"].get("labels"), f"{what}: labels added"
        if document["kind"] in ("KnowledgeBaseVersion", "RagDeployment"):
            assert live["metadata"]["generation"] == 1, f"{what}: the spec was written"
            entries = live["metadata"]["managedFields"]
            argocd = [e for e in entries if e["manager"] == ARGOCD_MANAGER]
            assert [e["operation"] for e in argocd] == ["Apply"] and "f:spec" in argocd[0]["fieldsV1"], what
            others = [e for e in entries if e["manager"] != ARGOCD_MANAGER]
            assert others, f"{what}: the operator wrote nothing (no status?)"
            status_writers = {e["manager"] for e in others if "f:status" in e["fieldsV1"]}
            assert "ragops-operator" in status_writers, f"{what}: status written by {status_writers}"
            for entry in others:
                assert foreign_fields(entry["fieldsV1"]) == [], f"{what}: {entry['manager']} owns {entry['fieldsV1']}"
            assert live["status"]["observedGeneration"] == 1


def test_the_runtime_image_healthcheck_passes_on_a_live_runtime_only(pg_dsn: str) -> None:
    runtime_image = next(image for image in IMAGES if image.dockerfile == "runtime.Dockerfile")
    settings = RuntimeSettings(
        dsn=SecretStr(pg_dsn), knowledge_base="handbook", deployment="handbook", namespace="test"
    )
    with serving(create_app(settings, dsn=pg_dsn)) as url:
        port = url.rsplit(":", 1)[1]
        # The image's command as is: it reads RAGOPS_PORT, as the runtime itself does.
        assert run_healthcheck(runtime_image.dockerfile, None, env={"RAGOPS_PORT": port}) == 0
    assert run_healthcheck(runtime_image.dockerfile, None, env={"RAGOPS_PORT": str(free_port())}) != 0
