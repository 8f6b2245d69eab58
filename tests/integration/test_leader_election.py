"""Two `ragops operator run` replicas on the real control plane: one leads through a Lease, one stands by.

Real processes (not KopfRunner), so SIGKILL and SIGTERM are what a node failure and a rolling update
do to an operator pod. The Lease is shortened to 4 s so a takeover after SIGKILL is quick to watch.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.integration.test_kb import RAGOPS
from tests.integration.test_operator import EXAMPLES, eventually, get
from tests.support.controlplane import ControlPlane
from tests.support.http_double import free_port

LEASE_SECONDS = 4


class Replica:
    def __init__(self, plane: ControlPlane, namespace: str, identity: str, log_dir: Path) -> None:
        self.identity = identity
        self.port = free_port()
        self.log_path = log_dir / f"{identity}-{time.monotonic_ns()}.log"
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("RAGOPS_")},
            "KUBECONFIG": str(plane.kubeconfig),
            "RAGOPS_OPERATOR_RUNTIME_IMAGE": "registry.invalid/ragops:test",
            "RAGOPS_OPERATOR_LEASE_NAMESPACE": namespace,
            "RAGOPS_OPERATOR_LEASE_SECONDS": str(LEASE_SECONDS),
            "RAGOPS_OPERATOR_POD_NAME": identity,
        }
        args = [RAGOPS, "operator", "run", "--namespace", namespace, "--health-address", f"127.0.0.1:{self.port}"]
        with self.log_path.open("wb") as log:  # a file, not a pipe nobody reads
            self.process = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)

    def probe(self, path: str) -> httpx.Response | None:
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}{path}", timeout=2)
        except httpx.TransportError:
            return None

    def role(self) -> str | None:
        response = self.probe("/readyz")
        return str(response.json()["role"]) if response is not None and response.status_code == 200 else None

    def leader_gauge(self) -> float | None:
        response = self.probe("/metrics")
        if response is None:
            return None
        line = next(line for line in response.text.splitlines() if line.startswith("ragops_operator_leader "))
        return float(line.split()[1])

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout=30)


@contextmanager
def replicas(plane: ControlPlane, namespace: str, log_dir: Path) -> Iterator[list[Replica]]:
    started: list[Replica] = []
    try:
        yield started
    finally:
        for replica in started:
            replica.stop(signal.SIGKILL)


def lease(plane: ControlPlane, namespace: str) -> dict[str, Any]:
    return (get(plane, namespace, "lease", "ragops-operator") or {}).get("spec") or {}


def reconciled_generation(plane: ControlPlane, namespace: str) -> int | None:
    status = (get(plane, namespace, "ragd", "docs-search") or {}).get("status") or {}
    generation = status.get("observedGeneration")
    return int(generation) if generation is not None else None


def test_one_replica_leads_a_standby_takes_over_on_a_crash_and_at_once_on_a_clean_stop(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    plane = control_plane
    with replicas(plane, namespace, tmp_path) as started:
        a = Replica(plane, namespace, "operator-a", tmp_path)
        started.append(a)
        eventually(
            "operator-a to hold the lease", lambda: lease(plane, namespace).get("holderIdentity") == "operator-a"
        )
        b = Replica(plane, namespace, "operator-b", tmp_path)
        started.append(b)
        # The standby serves its probes (a restart would not help it) and says what it is.
        eventually("operator-b's probes", lambda: b.role() == "standby")
        assert (a.role(), a.leader_gauge(), b.leader_gauge()) == ("leader", 1.0, 0.0)

        plane.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / "ragdeployment-retrieval-only.yaml"))
        eventually("the leader to reconcile", lambda: reconciled_generation(plane, namespace) == 1)
        time.sleep(LEASE_SECONDS)  # ample time for a standby that wrongly reconciled to show it
        assert lease(plane, namespace)["holderIdentity"] == "operator-a"
        assert "'reconcile' succeeded" in a.log() and "'reconcile' succeeded" not in b.log()

        # A crash: nobody releases the lease, so operator-b takes over once it expires.
        a.stop(signal.SIGKILL)
        crashed = time.monotonic()
        eventually("operator-b to take over", lambda: b.role() == "leader", timeout=LEASE_SECONDS * 4)
        took_over = time.monotonic() - crashed
        assert took_over < LEASE_SECONDS + 4, took_over
        assert lease(plane, namespace)["leaseTransitions"] == 1
        change = '{"spec":{"limits":{"maxQueryChars":1500}}}'
        plane.kubectl("patch", "-n", namespace, "ragd/docs-search", "--type=merge", "-p", change)
        eventually("the new leader to reconcile", lambda: reconciled_generation(plane, namespace) == 2)

        # A clean stop (a rolling update's SIGTERM) hands the lease over without waiting it out.
        a2 = Replica(plane, namespace, "operator-a", tmp_path)
        started.append(a2)
        eventually("operator-a back as a standby", lambda: a2.role() == "standby")
        assert b.stop(signal.SIGTERM) == 0, b.log()[-3000:]
        stopped = time.monotonic()
        eventually("operator-a to lead again", lambda: a2.role() == "leader", timeout=LEASE_SECONDS * 4)
        handed_over = time.monotonic() - stopped
        assert handed_over < LEASE_SECONDS, handed_over
        assert lease(plane, namespace)["holderIdentity"] == "operator-a"
        plane.kubectl(
            "patch",
            "-n",
            namespace,
            "ragd/docs-search",
            "--type=merge",
            "-p",
            '{"spec":{"limits":{"maxQueryChars":1400}}}',
        )
        eventually("operator-a to reconcile", lambda: reconciled_generation(plane, namespace) == 3)
