"""Runs the container of a long-running pod (the chart's operator) as a local process.

kwok makes the chart's operator pods Ready without running them. To show that what the chart
deploys really works, `PodProcess` starts that pod's container as a process on this machine: its
command and args, its environment as the kubelet would resolve it (downward API included), and
the credentials of its ServiceAccount: a token from the TokenRequest API in a kubeconfig, so every
call the operator makes is authorised by the chart's RBAC and nothing else. A verb the chart
forgot fails the call, as it would in a cluster.

What differs from a pod, and why: the test venv's `ragops` stands in for the image's; the
listen address given by `--health-address` is replaced by a free loopback port (the pod's network
namespace is not ours to share with other tests); the API server is reached through a kubeconfig
rather than the in-cluster service-account mount (lightkube and Kopf read the latter from fixed
paths, the same credentials either way).

Test infrastructure, not product code: no part of ragops imports it.
"""

from __future__ import annotations

import base64
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

from tests.support.controlplane import ControlPlane, _die_with_parent
from tests.support.http_double import free_port
from tests.support.kubelet import DEFAULT_EXECUTABLES, PASSED_THROUGH_ENV, VENV_BIN, _Objects, expand, resolve_env

HEALTH_FLAG = "--health-address"


def service_account_kubeconfig(plane: ControlPlane, namespace: str, account: str, path: Path) -> Path:
    """A kubeconfig authenticating as the ServiceAccount with a TokenRequest token (1 hour)."""
    token = plane.kubectl("create", "token", account, "-n", namespace, "--duration=3600s").stdout.strip()
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "test",
                "cluster": {
                    "server": plane.server,
                    "certificate-authority-data": base64.b64encode(plane.pki.ca_cert.read_bytes()).decode(),
                },
            }
        ],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": account, "namespace": namespace}}],
        "current-context": "test",
    }
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    path.chmod(0o600)
    return path


def with_health_address(args: list[str], address: str) -> list[str]:
    """`args` with the value of --health-address (either spelling) replaced by `address`."""
    out: list[str] = []
    replace_next = False
    for word in args:
        if replace_next:
            out.append(address)
            replace_next = False
        elif word == HEALTH_FLAG:
            out.append(word)
            replace_next = True
        elif word.startswith(HEALTH_FLAG + "="):
            out.append(f"{HEALTH_FLAG}={address}")
        else:
            out.append(word)
    return out


class PodProcess:
    """One pod's single container, running locally under its ServiceAccount's identity."""

    def __init__(self, plane: ControlPlane, pod: dict[str, Any], container: str, workdir: Path) -> None:
        self.plane = plane
        self.pod = pod
        self.workdir = workdir
        self.health_port = free_port()
        self.log_path = workdir / "process.log"
        self._process: subprocess.Popen[bytes] | None = None
        spec: dict[str, Any] = pod["spec"]
        self.container: dict[str, Any] = next(c for c in spec["containers"] if c["name"] == container)

    def command_line(self, env: dict[str, str]) -> list[str]:
        words = [expand(word, env) for word in [*self.container["command"], *self.container.get("args", [])]]
        words[0] = DEFAULT_EXECUTABLES.get(words[0], words[0])
        return with_health_address(words, f"127.0.0.1:{self.health_port}")

    def start(self) -> PodProcess:
        namespace = self.pod["metadata"]["namespace"]
        account = self.pod["spec"].get("serviceAccountName") or "default"
        self.workdir.mkdir(parents=True, exist_ok=True)
        kubeconfig = service_account_kubeconfig(self.plane, namespace, account, self.workdir / "kubeconfig")
        env = resolve_env(self.pod, self.container, _Objects(self.plane, namespace), lambda text: text)
        process_env = {name: os.environ[name] for name in PASSED_THROUGH_ENV if name in os.environ}
        process_env["PATH"] = os.pathsep.join([str(VENV_BIN), process_env.get("PATH", os.defpath)])
        process_env.update(env)
        process_env["KUBECONFIG"] = str(kubeconfig)
        process_env["HOSTNAME"] = self.pod["metadata"]["name"]
        log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            self.command_line(env),
            env=process_env,
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        log.close()
        return self

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, grace: float = 10.0) -> int | None:
        process, self._process = self._process, None
        if process is None:
            return None
        if process.poll() is None:
            process.terminate()
            deadline = time.monotonic() + grace
            while process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            if process.poll() is None:
                process.kill()
        return process.wait()

    def __enter__(self) -> PodProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
