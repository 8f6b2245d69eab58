"""`helm install` of the chart on a real node: the operator, its Jobs and the runtime run from the built images.

A control plane of its own (no kwok) with one real kubelet (tests/support/node.py) that runs pods
with containerd and runc from the images `make images` built, imported into containerd as a
registry pull would leave them. The chart goes into namespaces that enforce PodSecurity
`restricted`, with the built image references; then everything runs for real: both operator
replicas start from the operator image and pass their probes, one takes the Lease; a
KnowledgeBaseVersion's build and eval Jobs run `ragops kb build / eval` in the runtime image
against the host's embedded PostgreSQL; the RagDeployment's runtime pods turn Ready on /readyz
once the version is promoted, and answer a query at their pod IP.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from psycopg.conninfo import make_conninfo

from tests.integration.test_chart import CHART, RELEASE, RESTRICTED, helm
from tests.integration.test_operator import apply, eventually, get
from tests.integration.test_operator_e2e import LENIENT, phase, prepare_sources, version
from tests.support.controlplane import ControlPlane
from tests.support.node import RealNode, unavailable_reason
from tests.support.podman import BuiltImage, postgres_over_tcp


@pytest.fixture(scope="module")
def real_node(images: dict[str, BuiltImage], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealNode]:
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(f"real node: {reason}")
    workdir = tmp_path_factory.mktemp("real-node")
    with ControlPlane.start(workdir / "control-plane") as plane:
        plane.start_controllers()
        node = RealNode(plane, workdir / "node", [image.archive for image in images.values()])
        with node:
            yield node


def pods(plane: ControlPlane, namespace: str, selector: str) -> list[dict[str, Any]]:
    result = plane.kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "json")
    items: list[dict[str, Any]] = json.loads(result.stdout)["items"]
    return items


def terminated_job_pod(plane: ControlPlane, namespace: str, job: str) -> dict[str, Any] | None:
    for pod in pods(plane, namespace, f"batch.kubernetes.io/job-name={job}"):
        if any("terminated" in status["state"] for status in pod["status"].get("containerStatuses", [])):
            return pod
    return None


def ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions", []))


def describe(node: RealNode, namespaces: list[str]) -> str:
    """Pods, their states and logs, events and the kubelet's log tail: what a failure needs."""
    plane, parts = node.plane, []
    for namespace in namespaces:
        for pod in json.loads(plane.kubectl("get", "pods", "-n", namespace, "-o", "json").stdout)["items"]:
            name = pod["metadata"]["name"]
            parts.append(f"--- {namespace}/{name}: {json.dumps(pod.get('status', {}).get('containerStatuses'))}")
            for container in pod["spec"]["containers"]:
                parts.append(node.pod_log(namespace, name, container["name"])[-3000:])
        parts.append(plane.kubectl("get", "events", "-n", namespace, check=False).stdout[-3000:])
    parts.append("--- kubelet\n" + node.log_tail("kubelet"))
    return "\n".join(parts)


def test_helm_install_runs_the_operator_its_jobs_and_the_runtime_on_a_real_node(
    real_node: RealNode, images: dict[str, BuiltImage], pg_dsn: str, tmp_path: Path
) -> None:
    node, plane = real_node, real_node.plane
    namespace, apps = "ragops-system", "docs"
    for name in (namespace, apps):
        plane.kubectl("create", "namespace", name)
        plane.kubectl("label", "namespace", name, RESTRICTED)
    operator, runtime = images["operator"], images["runtime"]
    values = [
        f"--set=image.repository={operator.repository}",
        f"--set=image.tag={operator.tag}",
        f"--set=runtimeImage.repository={runtime.repository}",
        f"--set=runtimeImage.tag={runtime.tag}",
        "--set=watch.mode=namespaces",
        f"--set=watch.namespaces={{{apps}}}",
    ]
    try:
        # --wait: both operator pods started from the image and passed their startup and readiness probes.
        helm(plane, tmp_path, "install", RELEASE, str(CHART), "-n", namespace, "--wait", "--timeout=180s", *values)
        operators = pods(plane, namespace, f"app.kubernetes.io/instance={RELEASE}")
        assert len(operators) == 2 and all(ready(pod) for pod in operators)
        for pod in operators:
            (status,) = pod["status"]["containerStatuses"]
            assert status["image"].endswith(operator.reference) and status["containerID"].startswith("containerd://")
            assert pod["spec"]["nodeName"] == node.name
        lease = get(plane, namespace, "lease", RELEASE)
        assert lease is not None and lease["spec"]["holderIdentity"] in {pod["metadata"]["name"] for pod in operators}

        # The store: the host's embedded PostgreSQL, reached by the pods at the bridge's gateway.
        with postgres_over_tcp(pg_dsn) as host_dsn:
            prepare_sources(plane, apps, make_conninfo(host_dsn, host=node.host_address), tmp_path / "sources")
            apply(plane, apps, version("docs-v1", "corpus-a", LENIENT))
            eventually("docs-v1 built and gated", lambda: phase(plane, apps, "kbv", "docs-v1") == "Ready", timeout=240)
            for job in ("docs-v1-build", "docs-v1-eval"):
                # The gate's verdict is read from the store, so the version can turn Ready a moment
                # before the kubelet reports the eval container terminated.
                pod = eventually(f"{job} pod terminated", partial(terminated_job_pod, plane, apps, job), timeout=60)
                (status,) = pod["status"]["containerStatuses"]
                log = node.pod_log(apps, pod["metadata"]["name"], status["name"])
                assert status["state"]["terminated"]["exitCode"] == 0, log
                assert status["image"].endswith(runtime.reference) and pod["spec"]["nodeName"] == node.name

            apply(
                plane,
                apps,
                {
                    "apiVersion": "ragops.dev/v1alpha1",
                    "kind": "RagDeployment",
                    "metadata": {"name": "docs"},
                    "spec": {"knowledgeBase": {"name": "docs", "version": "docs-v1"}, "rollout": {"bakeTime": "2s"}},
                },
            )
            served = eventually(
                "the runtime pods Ready on /readyz",
                lambda: [pod for pod in pods(plane, apps, "app.kubernetes.io/component=runtime") if ready(pod)],
                timeout=180,
            )
            url = f"http://{served[0]['status']['podIP']}:8080/v1/query"
            answer = httpx.post(url, json={"query": "harbor trail permit"}, timeout=30)
            assert answer.status_code == 200, answer.text
            assert answer.json()["kbVersion"] == "docs-v1"
            assert answer.json()["citations"][0]["documentId"] == "harbor.md"
            status = (get(plane, apps, "ragd", "docs") or {}).get("status") or {}
            assert status.get("activeVersion") == "docs-v1", status

        # Everything the chart and the operator created ran under `restricted`: the namespaces enforce
        # it, so the API server admitted no pod that breaks it (a plain pod is refused).
        plain = plane.kubectl("run", "plain", "-n", apps, "--image=registry.invalid/x", "--dry-run=server", check=False)
        assert 'violates PodSecurity "restricted:latest"' in plain.stderr, plain.stderr
    except BaseException:
        print(describe(node, [namespace, apps]))
        raise
