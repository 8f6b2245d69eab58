"""The operator (Kopf, via KopfRunner) on the real control plane: status, children, drift, deletion.

These tests need no Job to run: they cover what the operator renders and how it reports. The
build and gate paths, which need the Jobs' commands to really run, are in test_operator_e2e.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from kopf.testing import KopfRunner

from tests.support.cluster_story import wait_for
from tests.support.controlplane import ControlPlane

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@contextmanager
def running_operator(
    plane: ControlPlane, namespace: str, monkeypatch: pytest.MonkeyPatch, extra_args: Sequence[str] = ()
) -> Iterator[KopfRunner]:
    monkeypatch.setenv("KUBECONFIG", str(plane.kubeconfig))
    monkeypatch.setenv("RAGOPS_OPERATOR_RUNTIME_IMAGE", "registry.invalid/ragops:test")
    args = ["run", "--standalone", "-m", "ragops_operator.handlers", "--namespace", namespace, *extra_args]
    runner = KopfRunner(args, timeout=60)
    try:
        with runner:
            yield runner
    except BaseException:
        # Only once the runner has stopped the operator: its output waits for the operator to end.
        print("\n".join(line for line in runner.output.splitlines() if "httpx" not in line)[-6000:])
        raise
    assert runner.exception is None, runner.output[-3000:]


def get(plane: ControlPlane, namespace: str, resource: str, name: str) -> dict[str, Any] | None:
    result = plane.kubectl("get", "-n", namespace, resource, name, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def eventually(description: str, check: Callable[[], Any], timeout: float = 30) -> Any:
    try:
        return wait_for(description, check, timeout=timeout)
    except TimeoutError as error:
        pytest.fail(str(error))


def runtime_settings_name(plane: ControlPlane, namespace: str, name: str) -> str:
    """The settings ConfigMap the runtime Deployment's pod template reads."""
    deployment = get(plane, namespace, "deployment", f"{name}-runtime") or {}
    containers = deployment.get("spec", {}).get("template", {}).get("spec", {}).get("containers") or [{}]
    return str((containers[0].get("envFrom") or [{}])[0].get("configMapRef", {}).get("name", ""))


def condition(body: dict[str, Any] | None, type: str) -> dict[str, Any]:
    return next((c for c in ((body or {}).get("status") or {}).get("conditions") or [] if c["type"] == type), {})


def apply(plane: ControlPlane, namespace: str, document: dict[str, Any]) -> None:
    plane.kubectl(
        "apply", "--server-side", "--field-manager=test", "-n", namespace, "-f", "-", input=json.dumps(document)
    )


def kbv(name: str, sources_config_map: str = "docs-src") -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((EXAMPLES / "knowledgebaseversion.yaml").read_text())
    document["metadata"]["name"] = name
    document["spec"]["sources"] = [{"configMap": {"name": sources_config_map}}]
    return document


def test_a_deployment_waits_for_a_missing_version(
    workloads: ControlPlane, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    plane = workloads
    with running_operator(plane, namespace, monkeypatch):
        plane.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / "ragdeployment-retrieval-only.yaml"))
        body = eventually("a status", lambda: (get(plane, namespace, "ragd", "docs-search") or {}).get("status"))
        assert body["phase"] == "Pending" and body["observedGeneration"] == 1
        progressing = condition(get(plane, namespace, "ragd", "docs-search"), "Progressing")
        assert (progressing["status"], progressing["reason"]) == ("True", "WaitingForVersion")
        assert progressing["message"] == "KnowledgeBaseVersion docs-v1 not found"
        assert get(plane, namespace, "deployment", "docs-search-runtime") is None
    # The user's spec is never mutated: a GitOps tool sees no diff.
    stored = get(plane, namespace, "ragd", "docs-search")
    assert stored is not None and stored["metadata"]["generation"] == 1


def test_runtime_objects_are_rendered_corrected_and_collected(
    workloads: ControlPlane, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    plane = workloads
    # The apiserver itself proves the pod spec complies with the restricted Pod Security level.
    plane.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    plane.kubectl("create", "secret", "generic", "pg", "-n", namespace, "--from-literal=dsn=postgresql://unused")
    plane.kubectl("create", "configmap", "docs-src", "-n", namespace, "--from-literal=a.md=# A")
    with running_operator(plane, namespace, monkeypatch):
        apply(plane, namespace, kbv("docs-v1"))
        plane.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / "ragdeployment-retrieval-only.yaml"))
        deployment = eventually(
            "the runtime Deployment", lambda: get(plane, namespace, "deployment", "docs-search-runtime")
        )
        owner = deployment["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["name"], owner["controller"]) == ("RagDeployment", "docs-search", True)
        pod_spec = deployment["spec"]["template"]["spec"]
        assert pod_spec["securityContext"]["runAsNonRoot"] is True
        env = {e["name"]: e for e in pod_spec["containers"][0]["env"]}
        assert env["RAGOPS_DSN"]["valueFrom"]["secretKeyRef"] == {"name": "pg", "key": "dsn"}
        for kind in ("service", "serviceaccount", "poddisruptionbudget", "networkpolicy"):
            assert get(plane, namespace, kind, "docs-search-runtime") is not None, kind
        runtime_hash = deployment["spec"]["template"]["metadata"]["annotations"]["ragops.dev/runtime-hash"]
        settings_name = pod_spec["containers"][0]["envFrom"][0]["configMapRef"]["name"]
        assert settings_name == f"docs-search-runtime-{runtime_hash}"
        record = get(plane, namespace, "controllerrevision", settings_name)
        assert record is not None
        assert record["data"]["podTemplate"]["metadata"]["annotations"]["ragops.dev/runtime-hash"] == runtime_hash
        eventually(
            "two runtime pods admitted and Ready",
            lambda: (
                (get(plane, namespace, "deployment", "docs-search-runtime") or {})
                .get("status", {})
                .get("readyReplicas")
                == 2
            ),
        )

        # Drift made by hand is corrected on the next pass.
        plane.kubectl("scale", "-n", namespace, "deployment/docs-search-runtime", "--replicas=5")
        eventually(
            "the replica count restored",
            lambda: (get(plane, namespace, "deployment", "docs-search-runtime") or {})["spec"]["replicas"] == 2,
        )
        config = get(plane, namespace, "configmap", settings_name)
        assert config is not None and config["data"]["RAGOPS_KNOWLEDGE_BASE"] == "docs" and config["immutable"]

        # A runtime change is a new template with its own settings; the old one's objects are pruned
        # once no revision can return to it (nothing was promoted here: no version exists).
        change = '{"spec":{"limits":{"maxQueryChars":1500}}}'
        plane.kubectl("patch", "-n", namespace, "ragd/docs-search", "--type=merge", "-p", change)
        new_settings = eventually(
            "the new template's settings",
            lambda: (
                (name := runtime_settings_name(plane, namespace, "docs-search")) != settings_name
                and get(plane, namespace, "configmap", name)
            ),
        )
        assert new_settings["data"]["RAGOPS_MAX_QUERY_CHARS"] == "1500"
        eventually("the old template pruned", lambda: get(plane, namespace, "configmap", settings_name) is None)
        assert get(plane, namespace, "controllerrevision", settings_name) is None

        status = eventually(
            "the status to follow the restored rollout",
            lambda: (
                (s := (get(plane, namespace, "ragd", "docs-search") or {})["status"]) and s["readyReplicas"] == 2 and s
            ),
        )
        assert status["phase"] == "Pending"  # docs-v1 is not built, so nothing is served yet

        plane.kubectl("delete", "-n", namespace, "ragd", "docs-search", "--wait=true", "--timeout=60s")
        eventually(
            "children garbage-collected",
            lambda: (
                get(plane, namespace, "deployment", "docs-search-runtime") is None
                and get(plane, namespace, "service", "docs-search-runtime") is None
            ),
        )


def test_an_unreachable_store_is_reported_and_starts_nothing(
    workloads: ControlPlane, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    plane = workloads
    plane.kubectl(
        "create",
        "secret",
        "generic",
        "pg",
        "-n",
        namespace,
        "--from-literal=dsn=postgresql://ragops:secret@127.0.0.1:1/none?connect_timeout=1",
    )
    plane.kubectl("create", "configmap", "docs-src", "-n", namespace, "--from-literal=a.md=# A")
    with running_operator(plane, namespace, monkeypatch):
        apply(plane, namespace, kbv("docs-v1"))

        def store_unavailable() -> dict[str, Any]:
            ready = condition(get(plane, namespace, "kbv", "docs-v1"), "Ready")
            return ready if ready.get("reason") == "StoreUnavailable" else {}

        ready = eventually("the StoreUnavailable condition", store_unavailable)
        assert ready["message"].startswith("the store is unreachable: cannot connect to PostgreSQL")
        assert "secret" not in ready["message"]
        assert get(plane, namespace, "job", "docs-v1-build") is None


def test_a_version_s_build_job_is_created_once_across_operator_restarts(
    workloads: ControlPlane, namespace: str, monkeypatch: pytest.MonkeyPatch, pg_dsn: str
) -> None:
    plane = workloads
    plane.kubectl("create", "secret", "generic", "pg", "-n", namespace, f"--from-literal=dsn={pg_dsn}")
    plane.kubectl("create", "configmap", "docs-src", "-n", namespace, "--from-literal=a.md=# A")
    with running_operator(plane, namespace, monkeypatch):
        apply(plane, namespace, kbv("docs-v1"))
        job = eventually("the build Job", lambda: get(plane, namespace, "job", "docs-v1-build"))
        assert job["metadata"]["ownerReferences"][0]["name"] == "docs-v1"
        building = eventually(
            "phase Building", lambda: (get(plane, namespace, "kbv", "docs-v1") or {}).get("status", {}).get("phase")
        )
        assert building == "Building"
    uid = job["metadata"]["uid"]
    with running_operator(plane, namespace, monkeypatch):
        time.sleep(3)
        jobs = json.loads(plane.kubectl("get", "jobs", "-n", namespace, "-o", "json").stdout)["items"]
        assert [j["metadata"]["uid"] for j in jobs] == [uid]
