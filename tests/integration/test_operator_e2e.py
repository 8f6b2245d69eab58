"""End to end on the real control plane: versions built and gated by Jobs that really run, then served.

The operator runs under KopfRunner; Job pods are executed by the process-backed kubelet against the
test's PostgreSQL (`ragops kb build` / `ragops kb eval` for real); kwok only makes runtime pods Ready.
Asserted on status, conditions, Events and the store's activation pointer.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from ragops_runtime.store import KnowledgeStore
from tests.integration.test_kb import TOPICS, write_corpus
from tests.integration.test_operator import apply, condition, eventually, get, running_operator
from tests.support.controlplane import ControlPlane
from tests.support.kubelet import ProcessKubelet

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


def test_versions_are_built_gated_promoted_refused_and_protected(
    workloads: ControlPlane, namespace: str, monkeypatch: pytest.MonkeyPatch, pg_dsn: str, tmp_path: Path
) -> None:
    plane = workloads
    plane.kubectl("create", "secret", "generic", "pg", "-n", namespace, f"--from-literal=dsn={pg_dsn}")
    config_map_from(plane, namespace, "corpus-a", write_corpus(tmp_path / "a"))
    config_map_from(plane, namespace, "corpus-b", write_corpus(tmp_path / "b", edited=(2,)))
    cases = [{"id": f"q-{t}", "query": f"{t} trail permit", "relevant": [f"{t}.md"]} for t in TOPICS]
    plane.kubectl(
        "create",
        "configmap",
        "golden",
        "-n",
        namespace,
        f"--from-literal=cases.yaml={yaml.safe_dump({'cases': cases})}",
    )

    with ProcessKubelet(plane, [namespace]) as kubelet, running_operator(plane, namespace, monkeypatch):
        apply(plane, namespace, version("docs-v1", "corpus-a", LENIENT))
        eventually("docs-v1 Ready", lambda: phase(plane, namespace, "kbv", "docs-v1") == "Ready", timeout=120)
        v1 = get(plane, namespace, "kbv", "docs-v1")
        assert v1 is not None and v1["status"]["gate"]["passed"] is True and v1["status"]["chunks"] >= 20
        assert v1["status"]["manifest"]["embeddingModel"] == "hashing-v1"
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
