"""Progressive delivery end to end: the operator, a real runtime process, a real Prometheus scraping it.

Versions are built and gated by Jobs that really run (the process kubelet, real PostgreSQL); a
`ragops serve` process runs with the settings the operator rendered for the runtime pod (kwok only
readies the pod objects), answers real queries, routes them by the split the operator writes into
the store, sends the golden probes and shadow retrievals itself, and is scraped by Prometheus,
which the operator reads for its analysis. The candidate with a regression is a real one: built
from a corpus in which 4 of the 20 documents lost their text to an extraction bug (a scanner's
placeholder in its place), it passes a lenient gate yet misses a fifth of the golden queries.
Assertions read status, conditions, Events, the store's split and history, the runtime's /v1/info
and Prometheus, never the operator's own functions.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from ragops_runtime.store import KnowledgeStore
from tests.integration.test_kb import TOPICS, write_corpus
from tests.integration.test_operator import apply, condition, eventually, get, running_operator
from tests.integration.test_operator_e2e import config_map_from, events, phase, settings_config_map
from tests.integration.test_rollout import kubectl_ragops, rollout, traffic, wait_condition
from tests.support.cluster_story import running_runtime, wait_for
from tests.support.controlplane import ControlPlane
from tests.support.http_double import free_port
from tests.support.kubelet import ProcessKubelet
from tests.support.prometheus import RunningPrometheus, running_prometheus

# Lenient enough that the candidate with 4 of 20 documents garbled (recall 0.8) passes its gate.
THRESHOLDS = {"precisionAtK": 0.1, "recallAtK": 0.7, "mrr": 0.7, "ndcgAtK": 0.7}
GARBLED = TOPICS[-4:]
CLIENTS = 200


def prepare(plane: ControlPlane, namespace: str, dsn: str, directory: Path) -> None:
    """The store Secret, the golden set, and three corpora: full, one document edited, 4 documents garbled."""
    plane.kubectl("create", "secret", "generic", "pg", "-n", namespace, f"--from-literal=dsn={dsn}")
    config_map_from(plane, namespace, "corpus-a", write_corpus(directory / "a"))
    config_map_from(plane, namespace, "corpus-b", write_corpus(directory / "b", edited=(2,)))
    regressed = write_corpus(directory / "c")
    # The golden set must still find every document it names (the gate refuses it otherwise).
    for topic in GARBLED:
        placeholder = " ".join(f"Scanned page {n} could not be converted to text." for n in range(12))
        (regressed / f"{topic}.md").write_text(f"# Scan {topic[:2]}\n\n{placeholder}\n")
    config_map_from(plane, namespace, "corpus-c", regressed)
    cases = [{"id": f"q-{t}", "query": f"{t} trail permit", "relevant": [f"{t}.md"]} for t in TOPICS]
    plane.kubectl(
        "create",
        "configmap",
        "golden",
        "-n",
        namespace,
        f"--from-literal=cases.yaml={yaml.safe_dump({'cases': cases})}",
    )


def version(name: str, corpus: str) -> dict[str, Any]:
    return {
        "apiVersion": "ragops.dev/v1alpha1",
        "kind": "KnowledgeBaseVersion",
        "metadata": {"name": name},
        "spec": {
            "knowledgeBase": "docs",
            "store": {"dsnSecretRef": {"name": "pg", "key": "dsn"}},
            "sources": [{"configMap": {"name": corpus}}],
            "embedding": {"dimensions": 64},
            "goldenSet": {"configMapRef": {"name": "golden", "key": "cases.yaml"}, "k": 3, "thresholds": THRESHOLDS},
        },
    }


def deployment(kb_version: str, prometheus_url: str, canary: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "ragops.dev/v1alpha1",
        "kind": "RagDeployment",
        "metadata": {"name": "docs"},
        "spec": {
            "knowledgeBase": {"name": "docs", "version": kb_version},
            "cache": {"ttlSeconds": 0},
            "limits": {"requestsPerMinutePerClient": 100_000},
            "rollout": {"bakeTime": "2s", "strategy": {"canary": canary}},
            "monitoring": {"prometheusUrl": prometheus_url},
        },
    }


def analysis_limits(**overrides: Any) -> dict[str, Any]:
    # A wide latency tolerance: this suite judges retrieval, on a machine whose load moves latencies.
    return {"interval": "3s", "window": "1m", "minRequests": 20, "latencyToleranceMs": 500, **overrides}


@dataclass
class Users:
    """Users with `CLIENTS` distinct client ids asking the runtime back to back; answers counted per version."""

    url: str
    workers: int = 3
    served: Counter[str] = field(default_factory=Counter)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _run(self, worker: int) -> None:
        number = worker
        with httpx.Client(base_url=self.url, timeout=60) as client:
            while not self._stop.is_set():
                number += self.workers
                topic = TOPICS[number % len(TOPICS)]
                try:
                    response = client.post(
                        "/v1/query",
                        json={"query": f"{topic} trail permit question {number}"},
                        headers={"X-Client-Id": f"user-{number % CLIENTS}"},
                    )
                except httpx.TransportError:
                    self._stop.wait(0.2)
                    continue
                if response.status_code == 200:
                    with self._lock:
                        self.served[response.json()["kbVersion"]] += 1

    def __enter__(self) -> Users:
        for worker in range(self.workers):
            thread = threading.Thread(target=self._run, args=(worker,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=70)


@dataclass
class Stack:
    plane: ControlPlane
    namespace: str
    dsn: str
    prometheus: RunningPrometheus
    runtime_url: str = ""


@contextmanager
def canary_stack(
    plane: ControlPlane,
    namespace: str,
    monkeypatch: pytest.MonkeyPatch,
    dsn: str,
    tmp_path: Path,
    versions: dict[str, str],
    first: dict[str, Any],
) -> Iterator[Stack]:
    """Versions Ready, the operator serving `first` (a RagDeployment), its runtime process up and scraped."""
    prepare(plane, namespace, dsn, tmp_path)
    port = free_port()
    (tmp_path / "prometheus").mkdir()
    with ExitStack() as stack:
        kubelet = stack.enter_context(ProcessKubelet(plane, [namespace]))
        prometheus = stack.enter_context(running_prometheus([f"127.0.0.1:{port}"], tmp_path / "prometheus"))
        stack.enter_context(running_operator(plane, namespace, monkeypatch))
        for name, corpus in versions.items():
            apply(plane, namespace, version(name, corpus))
        for name in versions:

            def ready(name: str = name) -> bool:
                return phase(plane, namespace, "kbv", name) == "Ready"

            try:
                wait_for(f"{name} Ready", ready, timeout=240)
            except TimeoutError as error:
                # What the next look needs: every version's conditions and every Job pod's run with its log.
                conditions = plane.kubectl(
                    "get", "kbv", "-n", namespace, "-o",
                    "jsonpath={range .items[*]}{.metadata.name}: {.status.conditions}{'\\n'}{end}",
                    check=False,
                ).stdout  # fmt: skip
                pytest.fail(f"{error}\n{conditions}\n{kubelet.report()}")
        first["spec"]["monitoring"]["prometheusUrl"] = prometheus.url
        apply(plane, namespace, first)
        settings = eventually(
            "the rendered runtime settings",
            lambda: (get(plane, namespace, "configmap", settings_config_map(plane, namespace)) or {}).get("data"),
        )
        overrides = {"RAGOPS_DSN": dsn, "RAGOPS_POD": "docs-runtime-0", "RAGOPS_HOST": "127.0.0.1"}
        # On a loaded machine `ragops serve` has taken close to a minute to import and start.
        runtime = running_runtime(settings, {**overrides, "RAGOPS_PORT": str(port)}, tmp_path / "rt.log", 180)
        url = stack.enter_context(runtime)
        yield Stack(plane, namespace, dsn, prometheus, url)


def served_split(url: str) -> dict[str, Any] | None:
    split: dict[str, Any] | None = httpx.get(f"{url}/v1/info", timeout=10).json().get("traffic")
    return split


def prometheus_total(prometheus: RunningPrometheus, promql: str) -> float:
    return sum(float(series["value"][1]) for series in prometheus.query(promql))


def history(dsn: str) -> list[dict[str, Any]]:
    """The store's activation history of "docs", oldest first."""

    async def read() -> list[dict[str, Any]]:
        async with await KnowledgeStore.connect(dsn) as store:
            return await store.history("docs")

    return list(reversed(asyncio.run(read())))


@pytest.mark.timeout(900)
def test_a_canary_is_promoted_through_every_step_and_a_regressed_one_is_aborted_by_analysis(
    workloads: ControlPlane, namespace: str, monkeypatch: pytest.MonkeyPatch, pg_dsn: str, tmp_path: Path
) -> None:
    steps = [{"setWeight": 20}, {"analysis": {"duration": "6s"}}, {"setWeight": 50}, {"analysis": {"duration": "6s"}}]
    canary = {"steps": steps, "analysis": analysis_limits(), "probes": {"perMinute": 600}}
    first = deployment("docs-v1", "", canary)
    plane = workloads
    versions = {"docs-v1": "corpus-a", "docs-v2": "corpus-b", "docs-v3": "corpus-c"}
    with canary_stack(plane, namespace, monkeypatch, pg_dsn, tmp_path, versions, first) as stack:
        eventually("docs-v1 served", lambda: traffic(pg_dsn).stable == "docs-v1", timeout=60)
        with Users(stack.runtime_url) as users:
            # A healthy candidate (one document edited) goes through every step and is promoted.
            started = time.monotonic()
            apply(plane, namespace, deployment("docs-v2", stack.prometheus.url, canary))
            wait_condition(plane, namespace, "Promoted", timeout=240)
            promoted_after = time.monotonic() - started
            eventually("docs-v2 served", lambda: traffic(pg_dsn).stable == "docs-v2", timeout=30)
            body = get(plane, namespace, "ragd", "docs")
            assert body is not None
            assert condition(body, "Aborted")["status"] == "False"
            state = body["status"]["rollout"]
            assert state["canaryVersion"] == "docs-v2" and state["phase"] in ("Promoting", "Healthy"), state
            splits = [(h["to_version"], h["canary_weight"]) for h in history(pg_dsn) if h["action"] == "split"]
            assert [w for v, w in splits if v == "docs-v2"] == [20, 50], splits
            reasons = [r for r, _ in events(plane, namespace, "docs")]
            assert reasons.count("AnalysisPassed") >= 2 and "RolloutPromoting" in reasons, reasons
            # The candidate answered users during its steps, by the runtime's own series.
            canary_queries = prometheus_total(
                stack.prometheus, 'sum(ragops_queries_total{kb_version="docs-v2",role="canary"})'
            )
            assert canary_queries >= 20 and users.served["docs-v2"] >= 20, (canary_queries, users.served)

            # A regressed candidate (4 of 20 documents garbled, passed its lenient gate) is aborted.
            assert get(plane, namespace, "kbv", "docs-v3")["status"]["gate"]["passed"] is True  # type: ignore[index]
            served_before = users.served["docs-v3"]
            apply(plane, namespace, deployment("docs-v3", stack.prometheus.url, canary))
            wait_condition(plane, namespace, "Aborted", timeout=240)
            aborted = get(plane, namespace, "ragd", "docs")
            assert aborted is not None
            state = aborted["status"]["rollout"]
            assert state["abort"]["reason"] == "AnalysisFailed", state
            recall = next(o for o in state["analysis"]["objectives"] if o["name"] == "goldenRecall")
            assert recall["verdict"] == "Fail" and recall["canary"] < recall["stable"] - 0.1, recall
            assert condition(aborted, "Degraded")["reason"] == "AnalysisFailed"
            eventually("the split cleared in the store", lambda: not traffic(pg_dsn).active, timeout=30)
            eventually("the runtime serves without a split", lambda: served_split(stack.runtime_url) is None)
            assert traffic(pg_dsn).stable == "docs-v2"
            assert history(pg_dsn)[-1]["action"] == "abort"
            assert any(r == "RolloutAborted" for r, _ in events(plane, namespace, "docs"))
            misses = prometheus_total(
                stack.prometheus, 'sum(ragops_probe_hits_total{kb_version="docs-v3",hit="false"})'
            )
            assert misses > 0
            blast = users.served["docs-v3"] - served_before
            total = sum(users.served.values())
        print(f"\npromoted through 4 steps in {promoted_after:.1f} s; docs-v3 answered {blast} of {total} user queries")


@pytest.mark.timeout(900)
def test_golden_probes_decide_at_zero_user_traffic_and_kubectl_ragops_aborts_a_live_rollout(
    workloads: ControlPlane, namespace: str, monkeypatch: pytest.MonkeyPatch, pg_dsn: str, tmp_path: Path
) -> None:
    plane = workloads
    steps = [{"setWeight": 10}, {"analysis": {"duration": "10s"}}]
    canary = {"steps": steps, "analysis": analysis_limits(), "probes": {"perMinute": 600}}
    versions = {"docs-v1": "corpus-a", "docs-v2": "corpus-c", "docs-v3": "corpus-b"}
    with canary_stack(
        plane, namespace, monkeypatch, pg_dsn, tmp_path, versions, deployment("docs-v1", "", canary)
    ) as stack:
        eventually("docs-v1 served", lambda: traffic(pg_dsn).stable == "docs-v1", timeout=60)
        # No user sends a query: the runtime's golden probes are the only evidence.
        started = time.monotonic()
        apply(plane, namespace, deployment("docs-v2", stack.prometheus.url, canary))
        wait_condition(plane, namespace, "Aborted", timeout=150)
        took = time.monotonic() - started
        state = rollout(plane, namespace)
        assert state["abort"]["reason"] == "AnalysisFailed", state
        recall = next(o for o in state["analysis"]["objectives"] if o["name"] == "goldenRecall")
        assert recall["verdict"] == "Fail" and recall["source"] == "probe", recall
        user = prometheus_total(stack.prometheus, 'sum(ragops_queries_total{role=~"stable|canary"})')
        assert user == 0, user
        assert took < 120, took
        eventually("the split cleared", lambda: not traffic(pg_dsn).active, timeout=30)

        # A healthy candidate paused at 10 %, aborted by `kubectl ragops abort` while users are served.
        paused = {**canary, "steps": [{"setWeight": 10}, {"pause": {}}]}
        with Users(stack.runtime_url) as users:
            apply(plane, namespace, deployment("docs-v3", stack.prometheus.url, paused))
            wait_condition(plane, namespace, "Paused", timeout=120)
            eventually(
                "the runtime applies 10 %", lambda: (served_split(stack.runtime_url) or {}).get("canaryWeight") == 10
            )
            eventually("docs-v3 answers users", lambda: users.served["docs-v3"] > 0, timeout=30)
            out = kubectl_ragops(plane, "abort", "docs", "-n", namespace).stdout
            clicked = time.monotonic()
            assert "abort" in out
            eventually(
                "the runtime serves without a split", lambda: served_split(stack.runtime_url) is None, timeout=30
            )
            to_weight_zero = time.monotonic() - clicked
            wait_condition(plane, namespace, "Aborted", timeout=60)
            after = users.served["docs-v3"]
            time.sleep(2)
            assert users.served["docs-v3"] == after  # no user reaches the aborted candidate
        state = rollout(plane, namespace)
        assert state["abort"]["reason"] == "ManualAbort" and state["lastAction"]["action"] == "abort", state
        assert traffic(pg_dsn).stable == "docs-v1" and history(pg_dsn)[-1]["action"] == "abort"
    print(
        f"\nprobe verdict at zero traffic in {took:.1f} s; kubectl ragops abort -> weight 0 in {to_weight_zero:.2f} s"
    )
