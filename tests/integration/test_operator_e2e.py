"""End to end on the real control plane: versions built and gated by Jobs that really run, then served.

The operator runs under KopfRunner; Job pods are executed by the process-backed kubelet against the
test's PostgreSQL (`ragops kb build` / `ragops kb eval` for real); kwok only makes runtime pods Ready.
Asserted on status, conditions, Events and the store's activation pointer.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from ragops_runtime.store import KnowledgeStore
from tests.integration.test_kb import RAGOPS, TOPICS, write_corpus
from tests.integration.test_operator import apply, condition, eventually, get, running_operator
from tests.support.anthropic_messages import DEFAULT_API_KEY, Reply, running_anthropic_server
from tests.support.controlplane import ControlPlane
from tests.support.http_double import free_port
from tests.support.kubelet import ProcessKubelet
from tests.support.prometheus import running_prometheus

LENIENT = {"precisionAtK": 0.1, "recallAtK": 0.8, "mrr": 0.8, "ndcgAtK": 0.8}
STRICT = {"precisionAtK": 0.9, "recallAtK": 0.8, "mrr": 0.8, "ndcgAtK": 0.8}


def config_map_from(plane: ControlPlane, namespace: str, name: str, directory: Path) -> None:
    files = [f"--from-file={path.name}={path}" for path in sorted(directory.iterdir())]
    plane.kubectl("create", "configmap", name, "-n", namespace, *files)


def version(name: str, sources: str, thresholds: dict[str, float]) -> dict[str, Any]:
    return {
        "apiVersion": "ragops.dev/v1alpha1",
        "kind": "KnowledgeBaseVersion",
        "metadata": {"name": name},
        "spec": {
            "knowledgeBase": "docs",
            "store": {"dsnSecretRef": {"name": "pg", "key": "dsn"}},
            "sources": [{"configMap": {"name": sources}}],
            "embedding": {"dimensions": 64},
            "goldenSet": {"configMapRef": {"name": "golden", "key": "cases.yaml"}, "k": 3, "thresholds": thresholds},
        },
    }


def served_template(plane: ControlPlane, namespace: str, name: str = "docs") -> tuple[str, str]:
    """(runtime hash, settings ConfigMap) of the pod template the runtime Deployment runs now."""
    deployment = get(plane, namespace, "deployment", f"{name}-runtime") or {}
    template = deployment.get("spec", {}).get("template", {})
    runtime_hash = template.get("metadata", {}).get("annotations", {}).get("ragops.dev/runtime-hash", "")
    containers = template.get("spec", {}).get("containers") or [{}]
    config_map = (containers[0].get("envFrom") or [{}])[0].get("configMapRef", {}).get("name", "")
    return runtime_hash, config_map


def settings_config_map(plane: ControlPlane, namespace: str, name: str = "docs") -> str:
    return served_template(plane, namespace, name)[1]


def phase(plane: ControlPlane, namespace: str, resource: str, name: str) -> str | None:
    return ((get(plane, namespace, resource, name) or {}).get("status") or {}).get("phase")


def events(plane: ControlPlane, namespace: str, name: str) -> list[tuple[str, str]]:
    items = json.loads(plane.kubectl("get", "events", "-n", namespace, "-o", "json").stdout)["items"]
    return [(e["reason"], e["message"]) for e in items if e["involvedObject"]["name"] == name]


def active_version(dsn: str) -> str | None:
    async def read() -> str | None:
        async with await KnowledgeStore.connect(dsn) as store:
            return (await store.activation("docs")).active

    return asyncio.run(read())


def prepare_sources(plane: ControlPlane, namespace: str, dsn: str, directory: Path) -> None:
    """The store Secret, two corpora (b edits one document of a) and the golden set, as ConfigMaps."""
    plane.kubectl("create", "secret", "generic", "pg", "-n", namespace, f"--from-literal=dsn={dsn}")
    config_map_from(plane, namespace, "corpus-a", write_corpus(directory / "a"))
    config_map_from(plane, namespace, "corpus-b", write_corpus(directory / "b", edited=(2,)))
    cases = [{"id": f"q-{t}", "query": f"{t} trail permit", "relevant": [f"{t}.md"]} for t in TOPICS]
    golden = yaml.safe_dump({"cases": cases})
    plane.kubectl("create", "configmap", "golden", "-n", namespace, f"--from-literal=cases.yaml={golden}")


def test_versions_are_built_gated_promoted_refused_and_protected(
    workloads: ControlPlane, namespace: str, monkeypatch: pytest.MonkeyPatch, pg_dsn: str, tmp_path: Path
) -> None:
    plane = workloads
    prepare_sources(plane, namespace, pg_dsn, tmp_path)

    with ProcessKubelet(plane, [namespace]) as kubelet, running_operator(plane, namespace, monkeypatch):
        apply(plane, namespace, version("docs-v1", "corpus-a", LENIENT))
        eventually("docs-v1 Ready", lambda: phase(plane, namespace, "kbv", "docs-v1") == "Ready", timeout=120)
        v1 = get(plane, namespace, "kbv", "docs-v1")
        assert v1 is not None and v1["status"]["gate"]["passed"] is True and v1["status"]["chunks"] >= 20
        assert v1["status"]["manifest"]["embeddingModel"] == "wordllama-l2-supercat"
        assert condition(v1, "Built")["status"] == condition(v1, "GatePassed")["status"] == "True"
        assert [run.exit_code for run in kubelet.runs_of("docs-v1-build")] == [0]
        reasons = [reason for reason, _ in events(plane, namespace, "docs-v1")]
        assert {"Building", "Evaluating", "GatePassed"} <= set(reasons), reasons

        deployment: dict[str, Any] = {
            "apiVersion": "ragops.dev/v1alpha1",
            "kind": "RagDeployment",
            "metadata": {"name": "docs"},
            "spec": {"knowledgeBase": {"name": "docs", "version": "docs-v1"}, "rollout": {"bakeTime": "2s"}},
        }
        apply(plane, namespace, deployment)
        eventually(
            "docs-v1 served and known-good",
            lambda: (
                ((get(plane, namespace, "ragd", "docs") or {}).get("status") or {}).get("lastKnownGoodVersion")
                == "docs-v1"
            ),
            timeout=60,
        )
        assert active_version(pg_dsn) == "docs-v1"

        # A version below its gate fails and is never promoted.
        apply(plane, namespace, version("docs-v2", "corpus-b", STRICT))
        eventually("docs-v2 Failed", lambda: phase(plane, namespace, "kbv", "docs-v2") == "Failed", timeout=120)
        v2_ready = condition(get(plane, namespace, "kbv", "docs-v2"), "Ready")
        assert v2_ready["reason"] == "GateBelowThreshold" and "precisionAtK=0.333<0.900" in v2_ready["message"]
        apply(
            plane,
            namespace,
            {**deployment, "spec": {**deployment["spec"], "knowledgeBase": {"name": "docs", "version": "docs-v2"}}},
        )
        degraded = eventually(
            "docs-v2 refused",
            lambda: (
                condition(get(plane, namespace, "ragd", "docs"), "Degraded").get("reason") == "VersionFailedGate"
                and condition(get(plane, namespace, "ragd", "docs"), "Degraded")
            ),
        )
        assert "docs-v2 is not promoted: gate below threshold" in degraded["message"]
        assert active_version(pg_dsn) == "docs-v1"
        assert (get(plane, namespace, "ragd", "docs") or {})["status"]["activeVersion"] == "docs-v1"

        # A good version is promoted.
        apply(plane, namespace, version("docs-v3", "corpus-b", LENIENT))
        eventually("docs-v3 Ready", lambda: phase(plane, namespace, "kbv", "docs-v3") == "Ready", timeout=120)
        apply(
            plane,
            namespace,
            {**deployment, "spec": {**deployment["spec"], "knowledgeBase": {"name": "docs", "version": "docs-v3"}}},
        )
        eventually(
            "docs-v3 active",
            lambda: (
                ((get(plane, namespace, "ragd", "docs") or {}).get("status") or {}).get("activeVersion") == "docs-v3"
            ),
            timeout=60,
        )
        assert active_version(pg_dsn) == "docs-v3"
        promoted = [message for reason, message in events(plane, namespace, "docs") if reason == "Promoted"]
        assert any("serving docs-v1" in m for m in promoted) and any("serving docs-v3" in m for m in promoted)

        # A version some deployment serves or would fall back to is never deleted underneath it.
        eventually(
            "docs-v3 known-good",
            lambda: (
                ((get(plane, namespace, "ragd", "docs") or {}).get("status") or {}).get("lastKnownGoodVersion")
                == "docs-v3"
            ),
            timeout=30,
        )
        plane.kubectl("delete", "kbv", "docs-v3", "-n", namespace, "--wait=false")
        in_use = eventually(
            "deletion waiting",
            lambda: (
                condition(get(plane, namespace, "kbv", "docs-v3"), "Ready").get("reason") == "InUse"
                and condition(get(plane, namespace, "kbv", "docs-v3"), "Ready")
            ),
        )
        assert "in use by RagDeployment docs" in in_use["message"]
        assert get(plane, namespace, "kbv", "docs-v3") is not None

        # An unused version is deleted, and its rows with it.
        plane.kubectl("delete", "kbv", "docs-v2", "-n", namespace, "--wait=true", "--timeout=60s")
        assert get(plane, namespace, "kbv", "docs-v2") is None

        async def stored_versions() -> list[str]:
            async with await KnowledgeStore.connect(pg_dsn) as store:
                return [v.version for v in await store.list_versions("docs")]

        assert "docs-v2" not in asyncio.run(stored_versions())


def test_an_slo_breach_rolls_back_to_the_last_known_good_version_and_stays(
    workloads: ControlPlane, namespace: str, monkeypatch: pytest.MonkeyPatch, pg_dsn: str, tmp_path: Path
) -> None:
    """A real runtime process serves the deployment with its rendered settings, a real Prometheus
    scrapes it, and the Anthropic double is made slow once docs-v3 is promoted: the operator must
    roll back to docs-v1 within failureThreshold x checkInterval plus a few seconds, and stay."""
    plane = workloads
    prepare_sources(plane, namespace, pg_dsn, tmp_path)
    plane.kubectl(
        "create", "secret", "generic", "anthropic", "-n", namespace, f"--from-literal=api-key={DEFAULT_API_KEY}"
    )
    runtime_port = free_port()
    check_interval, failure_threshold = 2, 2
    (tmp_path / "prometheus").mkdir()

    with (
        running_anthropic_server() as anthropic,
        running_prometheus([f"127.0.0.1:{runtime_port}"], tmp_path / "prometheus") as prometheus,
        ProcessKubelet(plane, [namespace]),
        running_operator(plane, namespace, monkeypatch),
    ):
        for name, corpus in (("docs-v1", "corpus-a"), ("docs-v3", "corpus-b")):
            apply(plane, namespace, version(name, corpus, LENIENT))
        for name in ("docs-v1", "docs-v3"):

            def ready(name: str = name) -> bool:
                return phase(plane, namespace, "kbv", name) == "Ready"

            eventually(f"{name} Ready", ready, timeout=120)
        deployment: dict[str, Any] = {
            "apiVersion": "ragops.dev/v1alpha1",
            "kind": "RagDeployment",
            "metadata": {"name": "docs"},
            "spec": {
                "knowledgeBase": {"name": "docs", "version": "docs-v1"},
                "generation": {
                    "provider": "anthropic",
                    "model": "claude-haiku-4-5",
                    "apiKeySecretRef": {"name": "anthropic", "key": "api-key"},
                    "timeoutSeconds": 5,
                },
                "cache": {"ttlSeconds": 0},
                "slo": {
                    "p95LatencyMs": 500,
                    "window": "10s",
                    "checkInterval": f"{check_interval}s",
                    "failureThreshold": failure_threshold,
                    "minRequests": 3,
                },
                "rollout": {"bakeTime": "3s"},
                "monitoring": {"prometheusUrl": prometheus.url},
            },
        }
        apply(plane, namespace, deployment)
        settings = eventually(
            "the rendered runtime settings",
            lambda: (get(plane, namespace, "configmap", settings_config_map(plane, namespace)) or {}).get("data"),
        )
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("RAGOPS_", "ANTHROPIC_"))},
            **settings,
            "RAGOPS_DSN": pg_dsn,
            "RAGOPS_ANTHROPIC_API_KEY": DEFAULT_API_KEY,
            "RAGOPS_POD": "docs-runtime-0",
            "RAGOPS_ANTHROPIC_BASE_URL": anthropic.url,
            "RAGOPS_HOST": "127.0.0.1",
            "RAGOPS_PORT": str(runtime_port),
        }
        assert settings["RAGOPS_DEPLOYMENT"] == "docs" and settings["RAGOPS_NAMESPACE"] == namespace
        runtime_log = (tmp_path / "runtime.log").open("wb")  # a file, not a pipe: a full pipe would block it
        runtime = subprocess.Popen([RAGOPS, "serve"], env=env, stdout=runtime_log, stderr=subprocess.STDOUT)
        stop = threading.Event()

        def traffic() -> None:
            with httpx.Client(base_url=f"http://127.0.0.1:{runtime_port}", timeout=30) as client:
                number = 0
                while not stop.is_set():
                    number += 1
                    try:
                        client.post("/v1/query", json={"query": f"{TOPICS[number % 20]} permit question {number}"})
                    except httpx.TransportError:
                        time.sleep(0.2)

        load = threading.Thread(target=traffic, daemon=True)
        try:
            load.start()
            eventually(
                "docs-v1 known-good",
                lambda: (
                    (get(plane, namespace, "ragd", "docs") or {}).get("status", {}).get("lastKnownGoodVersion")
                    == "docs-v1"
                ),
                timeout=90,
            )
            v1_template = served_template(plane, namespace)
            # docs-v3 ships with a runtime change too: the rollback must restore both.
            v3_spec = {
                **deployment["spec"],
                "knowledgeBase": {"name": "docs", "version": "docs-v3"},
                "limits": {"maxQueryChars": 1500},
            }
            apply(plane, namespace, {**deployment, "spec": v3_spec})
            eventually("docs-v3 promoted", lambda: active_version(pg_dsn) == "docs-v3", timeout=30)
            v3_template = eventually(
                "docs-v3's runtime template",
                lambda: (template := served_template(plane, namespace)) != v1_template and template,
            )
            anthropic.script(*[Reply.slow(1.5)] * 10_000)  # docs-v3's answers are now slow
            slow_since = time.monotonic()
            rolled = eventually(
                "the rollback",
                lambda: (
                    condition(get(plane, namespace, "ragd", "docs"), "RolledBack").get("status") == "True"
                    and get(plane, namespace, "ragd", "docs")
                ),
                timeout=60,
            )
            took = time.monotonic() - slow_since
            status = rolled["status"]
            assert status["activeVersion"] == "docs-v1" and active_version(pg_dsn) == "docs-v1"
            assert "p95LatencyMs=" in condition(rolled, "RolledBack")["message"]
            assert [r["outcome"] for r in status["history"]][-1] == "RolledBack"
            assert status["history"][-1]["message"] == condition(rolled, "RolledBack")["message"]
            # The runtime template is v1's again (its own settings ConfigMap), though the spec still says v3's.
            v1_revision = next(r for r in status["history"] if r["kbVersion"] == "docs-v1")
            assert status["runtimeRevision"] == v1_revision["runtimeHash"] != v3_template[0]
            restored = eventually("v1's template restored", lambda: served_template(plane, namespace) == v1_template)
            assert restored and get(plane, namespace, "configmap", v1_template[1]) is not None
            # Within failureThreshold x checkInterval plus the window filling and a scrape or two.
            assert took < failure_threshold * check_interval + 20, took
            anthropic.script()  # fast again: the operator must still not roll forward to docs-v3
            time.sleep(4 * check_interval)
            held = get(plane, namespace, "ragd", "docs")
            assert held is not None and held["status"]["activeVersion"] == "docs-v1"
            assert condition(held, "Degraded")["reason"] == "RolledBack"
            assert active_version(pg_dsn) == "docs-v1"
            assert any(reason == "RolledBack" for reason, _ in events(plane, namespace, "docs"))
        finally:
            stop.set()
            load.join(timeout=10)
            runtime.terminate()
            runtime.wait(timeout=30)
            runtime_log.close()


def test_a_version_built_by_three_pods_turns_ready_with_the_content_of_a_one_pod_build(
    workloads: ControlPlane,
    namespace: str,
    monkeypatch: pytest.MonkeyPatch,
    pg_dsn: str,
    other_pg_dsn: str,
    tmp_path: Path,
) -> None:
    """Issue 18, item 5: spec.build.parallelism 3 runs an Indexed Job whose pods each build a share."""
    plane = workloads
    prepare_sources(plane, namespace, pg_dsn, tmp_path)
    sharded = version("docs-v1", "corpus-a", LENIENT)
    sharded["spec"]["build"] = {"parallelism": 3}

    with ProcessKubelet(plane, [namespace]) as kubelet, running_operator(plane, namespace, monkeypatch):
        apply(plane, namespace, sharded)
        try:
            eventually("docs-v1 Ready", lambda: phase(plane, namespace, "kbv", "docs-v1") == "Ready", timeout=180)
        except pytest.fail.Exception:
            status = (get(plane, namespace, "job", "docs-v1-build") or {}).get("status")
            pytest.fail(f"docs-v1 not Ready; build Job status {status}; runs {kubelet.runs_of('docs-v1-build')}")
        runs = kubelet.runs_of("docs-v1-build")
    job = get(plane, namespace, "job", "docs-v1-build")
    assert job is not None and job["spec"]["completionMode"] == "Indexed" and job["status"]["succeeded"] == 3
    # One process per completion index, the index expanded from the Job controller's env var.
    assert [run.exit_code for run in runs] == [0, 0, 0]
    shards = sorted(run.args[run.args.index("--shard-index") + 1] for run in runs)
    assert shards == ["0", "1", "2"] and all(run.args[run.args.index("--shard-count") + 1] == "3" for run in runs)
    completed = [json.loads(run.stdout) for run in runs]
    assert sum("contentDigest" in output for output in completed) == 1, "one pod completes the version"
    assert sum(output.get("documents", 0) for output in completed if "contentDigest" not in output) < len(TOPICS)

    v1 = get(plane, namespace, "kbv", "docs-v1")
    assert v1 is not None and v1["status"]["gate"]["passed"] is True
    assert condition(v1, "Built")["status"] == "True"
    # The same chunks as one process building the same files (document ids are paths within the source).
    whole = subprocess.run(
        [RAGOPS, "kb", "build", "--kb", "docs", "--version", "local", "--source", str(tmp_path / "a"),
         "--embedding-dimensions", "64", "--json"],
        env={**os.environ, "RAGOPS_DSN": other_pg_dsn}, capture_output=True, text=True, check=True,
    )  # fmt: skip
    manifest = json.loads(whole.stdout)
    published = next(output for output in completed if "contentDigest" in output)
    assert published["contentDigest"] == manifest["contentDigest"]
    assert v1["status"]["manifest"]["sourcesDigest"] == manifest["sourcesDigest"]
    assert v1["status"]["chunks"] == manifest["chunks"]
