"""The process-backed kubelet runs Job pods for real, and kwok keeps its hands off them.

On the real control plane: the Job controller must reach Complete or Failed only from exit codes
of processes that ran (backoff limit included), while the runtime Deployment's pods still turn
Ready through kwok alone.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from ragops_operator.api import KnowledgeBaseVersionSpec
from ragops_operator.builders import VersionContext, build_build_job, build_eval_job
from tests.support.cluster_story import wait_for
from tests.support.controlplane import FAKE_NODE_NAME, ControlPlane
from tests.support.kubelet import JOB_NAME_LABEL, VENV_BIN, ProcessKubelet

Manifest = dict[str, Any]


def apply(plane: ControlPlane, namespace: str, *objects: Manifest) -> None:
    plane.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(objects))


def get(plane: ControlPlane, namespace: str, *what: str) -> Manifest:
    document: Manifest = json.loads(plane.kubectl("get", "-n", namespace, *what, "-o", "json").stdout)
    return document


def job(name: str, command: list[str], *, backoff_limit: int = 0, **pod_spec: Any) -> Manifest:
    container: Manifest = {"name": "main", "image": "registry.invalid/ragops:test", "command": command}
    container.update(pod_spec.pop("container", {}))
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": backoff_limit,
            "template": {"spec": {"restartPolicy": "Never", "containers": [container], **pod_spec}},
        },
    }


def job_condition(plane: ControlPlane, namespace: str, name: str) -> dict[str, Manifest]:
    status = get(plane, namespace, "job", name).get("status", {})
    return {c["type"]: c for c in status.get("conditions") or [] if c["status"] == "True"}


def wait_for_job(plane: ControlPlane, namespace: str, name: str, condition: str, timeout: float = 60) -> Manifest:
    plane.kubectl(
        "wait", "-n", namespace, f"--for=condition={condition}", f"job/{name}", f"--timeout={timeout:.0f}s",
        timeout=timeout + 10,
    )  # fmt: skip
    return get(plane, namespace, "job", name)


def job_pods(plane: ControlPlane, namespace: str, name: str) -> list[Manifest]:
    pods: list[Manifest] = get(plane, namespace, "pods", "-l", f"{JOB_NAME_LABEL}={name}")["items"]
    return sorted(pods, key=lambda pod: pod["metadata"]["creationTimestamp"])


def terminated(pod: Manifest) -> Manifest:
    state: Manifest = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    return state


def test_a_job_runs_as_a_process_with_its_secret_env_expanded(
    workloads: ControlPlane, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAGOPS_LEAKED_FROM_THE_TEST", "leaked")
    workloads.kubectl("create", "secret", "generic", "greeting", "-n", namespace, "--from-literal=text=hello there")
    greeter = job(
        "greet",
        ["sh", "-c", "echo $(GREETING) from $(POD); echo ${RAGOPS_LEAKED_FROM_THE_TEST:-isolated}; exit 0"],
        container={
            "env": [
                {"name": "GREETING", "valueFrom": {"secretKeyRef": {"name": "greeting", "key": "text"}}},
                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            ]
        },
    )
    with ProcessKubelet(workloads, [namespace]) as kubelet:
        apply(workloads, namespace, greeter)
        status = wait_for_job(workloads, namespace, "greet", "Complete")["status"]
        run = kubelet.wait_for_run("greet")

    assert status["succeeded"] == 1
    assert run.exit_code == 0, run
    assert run.args == (
        "sh",
        "-c",
        f"echo hello there from {run.pod}; echo ${{RAGOPS_LEAKED_FROM_THE_TEST:-isolated}}; exit 0",
    )
    assert run.stdout == f"hello there from {run.pod}\nisolated\n"
    assert run.env == {"GREETING": "hello there", "POD": run.pod}
    [pod] = job_pods(workloads, namespace, "greet")
    assert pod["status"]["phase"] == "Succeeded"
    assert terminated(pod)["exitCode"] == 0
    assert terminated(pod)["reason"] == "Completed"
    assert kubelet.errors == []


def test_a_failing_process_fails_the_job_with_its_exit_code(workloads: ControlPlane, namespace: str) -> None:
    with ProcessKubelet(workloads, [namespace]) as kubelet:
        apply(workloads, namespace, job("fail", ["sh", "-c", "echo starting; echo 'store unreachable' >&2; exit 3"]))
        status = wait_for_job(workloads, namespace, "fail", "Failed")["status"]
        run = kubelet.wait_for_run("fail")

    assert job_condition(workloads, namespace, "fail")["Failed"]["reason"] == "BackoffLimitExceeded"
    assert status["failed"] == 1
    assert "succeeded" not in status
    assert run.exit_code == 3
    assert (run.stdout, run.stderr) == ("starting\n", "store unreachable\n")
    [pod] = job_pods(workloads, namespace, "fail")
    assert pod["status"]["phase"] == "Failed"
    assert terminated(pod) | {"startedAt": "", "finishedAt": ""} == {
        "exitCode": 3,
        "reason": "Error",
        "message": "store unreachable",
        "startedAt": "",
        "finishedAt": "",
    }
    assert len(kubelet.runs) == 1


def test_a_failed_pod_is_replaced_within_the_backoff_limit(
    workloads: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    marker = tmp_path / "first-attempt-done"
    flaky = job(
        "flaky",
        ["sh", "-c", f"test -e {marker} || {{ touch {marker}; exit 4; }}", "sh", "/scratch/out"],
        backoff_limit=1,
        container={"volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]},
        volumes=[{"name": "scratch", "emptyDir": {}}],
    )
    with ProcessKubelet(workloads, [namespace]) as kubelet:
        apply(workloads, namespace, flaky)
        status = wait_for_job(workloads, namespace, "flaky", "Complete")["status"]
        second = kubelet.wait_for_run("flaky", count=2)

    assert (status["failed"], status["succeeded"]) == (1, 1)
    first = kubelet.runs_of("flaky")[0]
    assert (first.exit_code, second.exit_code) == (4, 0)
    assert first.pod != second.pod
    # Like a container's, a retry's paths are the first attempt's: a resumed build re-registers its
    # version with the same `--source` arguments (per-pod paths once made the store refuse it).
    assert first.args[-1] == second.args[-1] != "/scratch/out"


def test_config_map_and_empty_dir_volumes_are_mounted(workloads: ControlPlane, namespace: str) -> None:
    workloads.kubectl(
        "create", "configmap", "docs-src", "-n", namespace,
        "--from-literal=intro.md=# Intro", "--from-literal=faq.md=# FAQ",
    )  # fmt: skip
    reader = job(
        "read",
        [
            "sh",
            "-c",
            "cat /sources/docs/intro.md; echo; ls /sources/docs; echo scratch > /tmp/x; cat /tmp/x; echo $TMPDIR",
        ],
        container={
            "volumeMounts": [
                {"name": "docs", "mountPath": "/sources/docs", "readOnly": True},
                {"name": "tmp", "mountPath": "/tmp"},
            ]
        },
        volumes=[
            {"name": "docs", "configMap": {"name": "docs-src", "items": [{"key": "intro.md", "path": "intro.md"}]}},
            {"name": "tmp", "emptyDir": {}},
        ],
    )
    with ProcessKubelet(workloads, [namespace]) as kubelet:
        apply(workloads, namespace, reader)
        wait_for_job(workloads, namespace, "read", "Complete")
        run = kubelet.wait_for_run("read")

    intro, listing, scratch, tmpdir = run.stdout.splitlines()
    assert (intro, listing, scratch) == ("# Intro", "intro.md", "scratch")
    assert run.args[2].endswith(f"echo scratch > {tmpdir}/x; cat {tmpdir}/x; echo $TMPDIR")
    assert tmpdir.startswith("/") and tmpdir != "/tmp"


def test_a_pod_the_kubelet_cannot_run_stays_pending_with_the_reason(workloads: ControlPlane, namespace: str) -> None:
    claim = job(
        "claim",
        ["true"],
        container={"volumeMounts": [{"name": "data", "mountPath": "/data"}]},
        volumes=[{"name": "data", "persistentVolumeClaim": {"claimName": "corpus"}}],
        # Placed directly: the scheduler would hold a pod whose claim does not exist.
        nodeName=FAKE_NODE_NAME,
    )
    with ProcessKubelet(workloads, [namespace]) as kubelet:
        apply(workloads, namespace, claim)
        run = kubelet.wait_for_run("claim")

    assert run.exit_code is None
    assert run.error is not None and "PersistentVolumeClaim 'corpus' is not supported" in run.error
    # Pending, not Failed: the harness's limit must not pass for the Job failing.
    [pod] = job_pods(workloads, namespace, "claim")
    assert pod["status"]["phase"] == "Pending"
    waiting = pod["status"]["containerStatuses"][0]["state"]["waiting"]
    assert waiting["reason"] == "CreateContainerError"
    assert "Failed" not in job_condition(workloads, namespace, "claim")


def test_kwok_readies_deployment_pods_but_never_completes_job_pods(workloads: ControlPlane, namespace: str) -> None:
    plane = workloads
    plane.kubectl("create", "deployment", "web", "-n", namespace, "--image=registry.invalid/web:1", "--replicas=1")
    apply(plane, namespace, job("unattended", ["true"]))
    plane.kubectl("rollout", "status", "-n", namespace, "deployment/web", "--timeout=60s")
    wait_for(
        "the Job's pod to be scheduled",
        lambda: any(p["spec"].get("nodeName") for p in job_pods(plane, namespace, "unattended")),
    )

    time.sleep(3)  # kwok's pod stages act within milliseconds; give them ample time to misbehave
    [pod] = job_pods(plane, namespace, "unattended")
    assert pod["status"]["phase"] == "Pending"
    assert "containerStatuses" not in pod["status"]
    status = get(plane, namespace, "job", "unattended")["status"]
    assert status["active"] == 1
    assert not {"Complete", "Failed"} & set(job_condition(plane, namespace, "unattended"))

    # Deleting still works with no kubelet: kwok's pod-delete stage applies to every pod.
    plane.kubectl("delete", "-n", namespace, "job", "unattended", "--cascade=foreground", "--timeout=60s")
    wait_for("the Job's pod to go", lambda: not job_pods(plane, namespace, "unattended"))


def test_the_operators_build_and_eval_jobs_run_ragops_against_postgres(
    workloads: ControlPlane, namespace: str, pg_dsn: str
) -> None:
    plane = workloads
    topics = ["glacier", "volcano", "harbor", "orchard"]
    documents = {
        f"{t}.md": f"# The {t} handbook\n\nThe {t} trail needs a {t} permit in every season.\n" for t in topics
    }
    cases = [{"id": f"q-{t}", "query": f"{t} trail permit", "relevant": [f"{t}.md"]} for t in topics]
    spec: Manifest = {
        "knowledgeBase": "docs",
        "store": {"dsnSecretRef": {"name": "pg", "key": "dsn"}},
        "sources": [{"configMap": {"name": "docs-src"}}],
        "chunking": {"strategy": "recursive", "size": 512, "overlap": 64},
        "embedding": {"provider": "hashing", "dimensions": 64, "batchSize": 16},
        "index": {"type": "hnsw", "m": 16, "efConstruction": 64, "distance": "cosine"},
        "goldenSet": {
            "configMapRef": {"name": "docs-golden", "key": "cases.yaml"},
            "k": 3,
            "thresholds": {"precisionAtK": 0, "recallAtK": 0, "mrr": 0, "ndcgAtK": 0},
        },
    }
    apply(
        plane,
        namespace,
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "pg"}, "stringData": {"dsn": pg_dsn}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "docs-src"}, "data": documents},
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "docs-golden"},
            "data": {"cases.yaml": yaml.safe_dump({"cases": cases})},
        },
        {
            "apiVersion": "ragops.dev/v1alpha1",
            "kind": "KnowledgeBaseVersion",
            "metadata": {"name": "docs-v1"},
            "spec": spec,
        },
    )
    # The Jobs' owner must exist, or the garbage collector deletes them as orphans.
    uid = get(plane, namespace, "knowledgebaseversion", "docs-v1")["metadata"]["uid"]
    ctx = VersionContext(
        name="docs-v1",
        namespace=namespace,
        uid=uid,
        spec=KnowledgeBaseVersionSpec.model_validate(spec),
        image="registry.invalid/ragops:test",
    )
    build, evaluation = build_build_job(ctx), build_eval_job(ctx)

    with ProcessKubelet(plane, [namespace]) as kubelet:
        apply(plane, namespace, build)
        wait_for_job(plane, namespace, build["metadata"]["name"], "Complete", timeout=120)
        apply(plane, namespace, evaluation)
        wait_for_job(plane, namespace, evaluation["metadata"]["name"], "Complete", timeout=120)
        built = kubelet.wait_for_run(build["metadata"]["name"])
        evaluated = kubelet.wait_for_run(evaluation["metadata"]["name"])

    assert built.args[:3] == (str(VENV_BIN / "ragops"), "kb", "build")
    assert "/sources/configmap/docs-src" not in built.args  # the mounted ConfigMap's host directory instead
    assert json.loads(built.stdout)["documents"] == len(topics)
    assert pg_dsn not in " ".join(built.args)  # the DSN reaches the CLI through its environment only
    assert built.env["RAGOPS_DSN"] == pg_dsn
    report = json.loads(evaluated.stdout)
    assert report["passed"] is True
    assert len(kubelet.runs) == 2


def test_a_missing_secret_holds_the_pod_pending_until_it_exists(workloads: ControlPlane, namespace: str) -> None:
    waiting = job(
        "waiting",
        ["sh", "-c", "echo $(TOKEN)"],
        container={"env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "late", "key": "token"}}}]},
    )
    with ProcessKubelet(workloads, [namespace]) as kubelet:
        apply(workloads, namespace, waiting)

        def held() -> bool:
            pods = job_pods(workloads, namespace, "waiting")
            statuses: list[Manifest] = pods[0]["status"].get("containerStatuses", []) if pods else []
            reason = statuses[0]["state"].get("waiting", {}).get("reason") if statuses else None
            return bool(reason == "CreateContainerConfigError")

        wait_for("the pod to wait for its Secret", held)
        assert kubelet.runs == []
        workloads.kubectl("create", "secret", "generic", "late", "-n", namespace, "--from-literal=token=t0ken")
        wait_for_job(workloads, namespace, "waiting", "Complete")
        run = kubelet.wait_for_run("waiting")

    assert run.stdout == "t0ken\n"


def test_a_process_is_stopped_when_its_pod_is_deleted_or_runs_too_long(workloads: ControlPlane, namespace: str) -> None:
    with ProcessKubelet(workloads, [namespace], timeout=3) as kubelet:
        apply(workloads, namespace, job("slow", ["sleep", "60"]), job("deleted", ["sleep", "60"]))
        wait_for(
            "the doomed pod to run",
            lambda: job_pods(workloads, namespace, "deleted")[0]["status"]["phase"] == "Running",
        )
        workloads.kubectl("delete", "-n", namespace, "job", "deleted", "--cascade=background")
        deleted = kubelet.wait_for_run("deleted", timeout=20)
        wait_for_job(workloads, namespace, "slow", "Failed")
        slow = kubelet.wait_for_run("slow")

    assert deleted.error == "pod deleted"
    assert deleted.exit_code == 143  # SIGTERM
    assert slow.error == "killed by ProcessKubelet after 3s"
    [pod] = job_pods(workloads, namespace, "slow")
    assert terminated(pod)["exitCode"] == 143


def test_the_pods_of_an_indexed_job_get_their_index_and_share_their_config_map_paths(
    workloads: ControlPlane, namespace: str
) -> None:
    """As a real kubelet: JOB_COMPLETION_INDEX from the index annotation, one container path per volume."""
    workloads.kubectl("create", "configmap", "docs-src", "-n", namespace, "--from-literal=intro.md=# Intro")
    indexed = job(
        "shards",
        ["sh", "-c", "echo shard $(JOB_COMPLETION_INDEX) of /sources/docs; cat /sources/docs/intro.md; echo > /tmp/x"],
        container={
            "volumeMounts": [
                {"name": "docs", "mountPath": "/sources/docs", "readOnly": True},
                {"name": "tmp", "mountPath": "/tmp"},
            ]
        },
        volumes=[{"name": "docs", "configMap": {"name": "docs-src"}}, {"name": "tmp", "emptyDir": {}}],
    )
    indexed["spec"].update(completionMode="Indexed", completions=3, parallelism=3, backoffLimitPerIndex=0)
    del indexed["spec"]["backoffLimit"]
    with ProcessKubelet(workloads, [namespace]) as kubelet:
        apply(workloads, namespace, indexed)
        assert wait_for_job(workloads, namespace, "shards", "Complete")["status"]["succeeded"] == 3
        kubelet.wait_for_run("shards", count=3)
        runs = kubelet.runs_of("shards")

    assert sorted(run.env["JOB_COMPLETION_INDEX"] for run in runs) == ["0", "1", "2"]
    outputs = sorted(run.stdout for run in runs)
    paths = {output.split()[3] for output in outputs}
    assert len(paths) == 1 and all(output.rstrip().endswith("# Intro") for output in outputs), outputs
