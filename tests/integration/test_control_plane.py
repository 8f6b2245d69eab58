"""The workloads tier of the test control plane does what the operator's tests will rely on."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.support.cluster_story import wait_for
from tests.support.controlplane import FAKE_NODE_NAME, ControlPlane
from tests.support.kubelet import ProcessKubelet

pytestmark = [pytest.mark.cluster, pytest.mark.workloads]


def test_deployment_pods_are_scheduled_and_ready(workloads: ControlPlane, namespace: str) -> None:
    workloads.kubectl("create", "deployment", "web", "-n", namespace, "--image=registry.invalid/web:1", "--replicas=2")
    workloads.kubectl("rollout", "status", "-n", namespace, "deployment/web", "--timeout=60s")
    pods = json.loads(workloads.kubectl("get", "pods", "-n", namespace, "-o", "json").stdout)["items"]
    assert len(pods) == 2
    for pod in pods:
        assert pod["spec"]["nodeName"] == FAKE_NODE_NAME
        ready = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
        assert ready["Ready"] == "True"


def test_jobs_complete_only_by_really_running(workloads: ControlPlane, namespace: str) -> None:
    # kwok leaves Job pods alone; the process-backed kubelet runs their command for real.
    with ProcessKubelet(workloads, [namespace]) as kubelet:
        workloads.kubectl("create", "job", "build", "-n", namespace, "--image=registry.invalid/ragops:1", "--", "true")
        workloads.kubectl("wait", "-n", namespace, "--for=condition=Complete", "job/build", "--timeout=60s")
        assert [run.exit_code for run in kubelet.runs_of("build")] == [0]


def test_objects_owned_by_a_custom_resource_are_garbage_collected(workloads: ControlPlane, namespace: str) -> None:
    plane = workloads
    plane.kubectl(
        "create",
        "-n",
        namespace,
        "-f",
        "-",
        input=yaml.safe_dump(
            {
                "apiVersion": "ragops.dev/v1alpha1",
                "kind": "RagDeployment",
                "metadata": {"name": "docs"},
                "spec": {"knowledgeBase": {"name": "docs", "version": "docs-v1"}},
            }
        ),
    )
    owner = json.loads(plane.kubectl("get", "-n", namespace, "ragd", "docs", "-o", "json").stdout)
    plane.kubectl(
        "create",
        "-n",
        namespace,
        "-f",
        "-",
        input=yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": "docs-runtime",
                    "ownerReferences": [
                        {
                            "apiVersion": "ragops.dev/v1alpha1",
                            "kind": "RagDeployment",
                            "name": "docs",
                            "uid": owner["metadata"]["uid"],
                            "controller": True,
                            "blockOwnerDeletion": True,
                        }
                    ],
                },
                "data": {"x": "1"},
            }
        ),
    )
    plane.kubectl("delete", "-n", namespace, "ragd", "docs", "--wait=true", "--timeout=60s")

    def gone() -> bool:
        return plane.kubectl("get", "-n", namespace, "configmap", "docs-runtime", check=False).returncode != 0

    wait_for("the owned ConfigMap to be garbage collected", gone)


def test_restricted_pod_security_is_enforced(workloads: ControlPlane, namespace: str) -> None:
    plane = workloads
    plane.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    result = plane.kubectl(
        "run", "root", "-n", namespace, "--image=registry.invalid/x:1", "--restart=Never", check=False
    )
    assert result.returncode != 0
    assert 'violates PodSecurity "restricted:latest"' in result.stderr
