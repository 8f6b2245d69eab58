"""Benchmark (issue 7, item 5): the operator on the local control plane.

Everything real: etcd, kube-apiserver, controller-manager, scheduler and kwok (`make tools`), the
embedded PostgreSQL + pgvector, the process kubelet running the build and eval Jobs, Prometheus,
and the operator as the process a pod runs (`ragops operator run --standalone`, product defaults),
so its memory is the kernel's VmRSS for that process. Knowledge-base versions of the bundled
sample are built and gated by the operator's Jobs first. Then:

- apply -> Deployment: a RagDeployment POSTed to the apiserver, until its runtime Deployment exists
  (GET every 20 ms), one at a time with the operator otherwise idle; median over `--samples`;
- SLO breach -> rollback: a RagDeployment served by a real `ragops serve` (the settings the operator
  rendered), under steady traffic, scraped by Prometheus, promoted from v1 to v3; then every
  Anthropic call is made 1.5 s slow (the double: generation is the paid API) against a 500 ms p95
  objective (10 s window, checked every 2 s, 2 breaches; half while baking); from that moment
  until the RagDeployment reports RolledBack=True; median over `--repeats`;
- memory: the operator's RSS with no RagDeployment, then with `--deployments` of them (one runtime
  replica each) once all are promoted and settled (median of 5 reads a second apart each), the
  ratio against none, its peak (VmHWM), and the time from the first of them applied until every
  one has its Deployment.

    .venv/bin/python -m bench.operator_scale [--quick] [--deployments 200] [--samples 20] [--repeats 3]

`--quick` (20 deployments, 5 samples, 1 repeat) writes to a temporary directory, not bench/results.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.common import Postgres, Row, load_average, machine, median, print_rows, result_document, write_result
from tests.support.anthropic_messages import DEFAULT_API_KEY, running_anthropic_server
from tests.support.cluster_story import (
    DOUBLE_PROFILE,
    Manifest,
    OperatorProcess,
    SlowDouble,
    Traffic,
    apply,
    condition,
    deployment_document,
    get,
    golden_queries,
    publish_sample,
    publish_update,
    rendered_settings,
    running_operator_process,
    running_runtime,
    status,
    version_document,
    wait_for,
    with_version,
)
from tests.support.controlplane import ControlPlane, install_crds, running_control_plane
from tests.support.http_double import free_port
from tests.support.kubelet import ProcessKubelet
from tests.support.prometheus import running_prometheus

NAMESPACE = "bench"
KNOWLEDGE_BASE = "support"
V1, V3 = "support-v1", "support-v3"
RAGD_PATH = f"/apis/ragops.dev/v1alpha1/namespaces/{NAMESPACE}/ragdeployments"
DEPLOYMENTS_PATH = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments"
SETTLE_SECONDS = 15


def plain_deployment(name: str) -> Manifest:
    """A RagDeployment as the scale measurements apply it: one replica with a small CPU request, so all
    of them fit on the kwok node; no Prometheus, so no SLO watch (its cost is measured separately)."""
    return {
        "apiVersion": "ragops.dev/v1alpha1",
        "kind": "RagDeployment",
        "metadata": {"name": name},
        "spec": {
            "knowledgeBase": {"name": KNOWLEDGE_BASE, "version": V1},
            "runtime": {"replicas": 1, "resources": {"requests": {"cpu": "10m", "memory": "64Mi"}}},
            "generation": {"provider": "none"},
        },
    }


def rss_mib(operator: OperatorProcess, reads: int = 5) -> float:
    values = []
    for number in range(reads):
        if number:
            time.sleep(1)
        values.append(operator.rss_bytes() / 2**20)
    return median(values)


def peak_rss_mib(operator: OperatorProcess) -> float:
    for line in Path(f"/proc/{operator.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def apply_to_deployment_seconds(api: httpx.Client, name: str, timeout: float = 60) -> float:
    started = time.perf_counter()
    api.post(RAGD_PATH, json=plain_deployment(name)).raise_for_status()
    deadline = time.monotonic() + timeout
    while api.get(f"{DEPLOYMENTS_PATH}/{name}-runtime").status_code != 200:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no Deployment for {name} after {timeout}s")
        time.sleep(0.02)
    return time.perf_counter() - started


def deployment_names(api: httpx.Client) -> set[str]:
    response = api.get(DEPLOYMENTS_PATH)
    response.raise_for_status()
    return {item["metadata"]["name"] for item in response.json()["items"]}


def promoted_count(api: httpx.Client, prefix: str) -> int:
    response = api.get(RAGD_PATH)
    response.raise_for_status()
    return sum(
        1
        for item in response.json()["items"]
        if item["metadata"]["name"].startswith(prefix) and (item.get("status") or {}).get("activeVersion") == V1
    )


def delete_all(plane: ControlPlane) -> None:
    plane.kubectl("delete", "ragd", "--all", "-n", NAMESPACE, "--wait=true", "--timeout=300s", timeout=320)


def rollback_seconds(
    plane: ControlPlane, name: str, dsn: str, prometheus_url: str, port: int, fault: SlowDouble, work: Path
) -> float:
    """One SLO breach: v1 known-good under traffic, v3 promoted, the fault injected; seconds until RolledBack."""
    deployment = deployment_document(name, KNOWLEDGE_BASE, V1, DOUBLE_PROFILE, prometheus_url)
    apply(plane, NAMESPACE, deployment)
    overrides = {
        "RAGOPS_DSN": dsn,
        "RAGOPS_ANTHROPIC_API_KEY": DEFAULT_API_KEY,
        "RAGOPS_ANTHROPIC_BASE_URL": fault.anthropic.url,
        "RAGOPS_POD": f"{name}-runtime-0",
        "RAGOPS_HOST": "127.0.0.1",
        "RAGOPS_PORT": str(port),
    }
    settings = rendered_settings(plane, NAMESPACE, name)
    with (
        running_runtime(settings, overrides, work / f"{name}-runtime.log") as url,
        Traffic(url, golden_queries(), workers=DOUBLE_PROFILE.workers, pause=DOUBLE_PROFILE.pause),
    ):
        wait_for(
            f"{name} on {V1} known-good",
            lambda: status(plane, NAMESPACE, "ragd", name).get("lastKnownGoodVersion") == V1,
            timeout=120,
        )
        apply(plane, NAMESPACE, with_version(deployment, V3))
        wait_for(f"{name} on {V3}", lambda: status(plane, NAMESPACE, "ragd", name).get("activeVersion") == V3)
        fault.inject()
        started = time.monotonic()
        try:
            body = wait_for(
                f"{name} rolled back",
                lambda: condition(b := get(plane, NAMESPACE, "ragd", name), "RolledBack").get("status") == "True" and b,
                timeout=120,
                interval=0.1,
            )
            took = time.monotonic() - started
        finally:
            fault.clear()
    if body["status"]["activeVersion"] != V1:
        raise RuntimeError(f"{name} rolled back to {body['status']['activeVersion']}, not {V1}")
    plane.kubectl("delete", "ragd", name, "-n", NAMESPACE, "--wait=true", "--timeout=120s", timeout=130)
    return took


@contextlib.contextmanager
def api_client(plane: ControlPlane) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=plane.server, verify=plane.ssl_context(), timeout=30) as client:
        yield client


def run(deployments: int, samples: int, repeats: int, postgres: Postgres, work: Path) -> list[Row]:
    rows: list[Row] = []
    runtime_port = free_port()
    (work / "prometheus").mkdir()
    with (
        postgres.database("operator") as dsn,
        running_control_plane(work / "control-plane", workloads=True) as plane,
        running_anthropic_server() as anthropic,
        running_prometheus([f"127.0.0.1:{runtime_port}"], work / "prometheus") as prometheus,
    ):
        install_crds(plane)
        plane.kubectl("create", "namespace", NAMESPACE)
        config_maps = publish_sample(plane, NAMESPACE, dsn)
        update = publish_update(plane, NAMESPACE)
        plane.kubectl(
            "create", "secret", "generic", "anthropic", "-n", NAMESPACE, f"--from-literal=api-key={DEFAULT_API_KEY}"
        )
        with (
            ProcessKubelet(plane, [NAMESPACE]),
            running_operator_process(plane, [NAMESPACE], work / "operator.log") as operator,
            api_client(plane) as api,
        ):
            # One after the other: v3 shares all but one document with v1, and is built on v1's chunks.
            for version, sources in ((V1, config_maps), (V3, [*config_maps, update])):
                apply(plane, NAMESPACE, version_document(version, KNOWLEDGE_BASE, sources))

                def ready(version: str = version) -> bool:
                    phase = status(plane, NAMESPACE, "kbv", version).get("phase")
                    if phase == "Failed":
                        pods = plane.kubectl(
                            "get", "pods", "-n", NAMESPACE, "-o",
                            "jsonpath={range .items[*]}{.metadata.name}: "
                            "{.status.containerStatuses[0].state.terminated.message}{'\\n'}{end}",
                        ).stdout  # fmt: skip
                        raise RuntimeError(
                            f"{version} failed: {condition(get(plane, NAMESPACE, 'kbv', version), 'Ready')}\n{pods}"
                        )
                    return phase == "Ready"

                wait_for(f"{version} Ready", ready, timeout=300)
            time.sleep(SETTLE_SECONDS)
            idle = rss_mib(operator)
            print(f"operator RSS with no RagDeployment: {idle:.1f} MiB", flush=True)

            latencies = [apply_to_deployment_seconds(api, f"one-{number:03d}") for number in range(samples)]
            print(f"apply -> Deployment: {[round(s, 3) for s in latencies]}", flush=True)
            rows.append(Row("apply -> Deployment exists (median)", median(latencies) * 1000, "ms", repeats=samples))
            delete_all(plane)

            fault = SlowDouble(anthropic, DOUBLE_PROFILE.fault_seconds)
            rollbacks = []
            for number in range(repeats):
                took = rollback_seconds(plane, f"slo-{number}", dsn, prometheus.url, runtime_port, fault, work)
                print(f"SLO breach -> rolled back: {took:.1f} s", flush=True)
                rollbacks.append(took)
            rows.append(Row("SLO breach onset -> rollback complete (median)", median(rollbacks), "s", repeats=repeats))

            started = time.perf_counter()
            for number in range(deployments):
                api.post(RAGD_PATH, json=plain_deployment(f"scale-{number:03d}")).raise_for_status()
            applied = time.perf_counter() - started
            expected = {f"scale-{number:03d}-runtime" for number in range(deployments)}
            wait_for(f"{deployments} Deployments", lambda: expected <= deployment_names(api), timeout=900, interval=0.2)
            all_exist = time.perf_counter() - started
            print(f"{deployments} applied in {applied:.1f} s; all Deployments after {all_exist:.1f} s", flush=True)
            wait_for(
                f"{deployments} promoted",
                lambda: promoted_count(api, "scale-") == deployments,
                timeout=900,
                interval=1,
            )
            promoted = time.perf_counter() - started
            time.sleep(SETTLE_SECONDS)
            loaded, peak = rss_mib(operator), peak_rss_mib(operator)
            print(f"operator RSS with {deployments}: {loaded:.1f} MiB (peak {peak:.1f} MiB)", flush=True)
            rows += [
                Row(f"{deployments} RagDeployments applied -> all Deployments exist", all_exist, "s"),
                Row(f"{deployments} RagDeployments applied -> all promoted", promoted, "s"),
                Row("operator RSS, no RagDeployment", idle, "MiB", repeats=5),
                Row(
                    f"operator RSS, {deployments} RagDeployments",
                    loaded,
                    "MiB",
                    baseline="operator RSS, no RagDeployment",
                    repeats=5,
                ),
                Row(
                    f"operator peak RSS, {deployments} RagDeployments",
                    peak,
                    "MiB",
                    baseline="operator RSS, no RagDeployment",
                ),
            ]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="20 deployments, 5 samples, 1 repeat; not kept")
    parser.add_argument("--deployments", type=int, default=200)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    deployments, samples, repeats = (20, 5, 1) if args.quick else (args.deployments, args.samples, args.repeats)
    ran_at = datetime.now(UTC)
    load_before = load_average()
    with Postgres() as postgres, tempfile.TemporaryDirectory(prefix="ragops-bench-operator-") as tmp:
        work = Path(tmp)
        work.chmod(0o755)
        rows = run(deployments, samples, repeats, postgres, work)
        version = postgres.version
    document: dict[str, Any] = result_document(
        "operator_scale", machine(version), rows, ran_at, load=f"{load_before} -> {load_average()}"
    )
    print_rows(document)
    print(f"wrote {write_result(document, quick=args.quick)}")


if __name__ == "__main__":
    main()
