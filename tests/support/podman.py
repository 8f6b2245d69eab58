"""The built ragops images and containers run from them with podman, for the image test tier.

`build_images()` runs tools/images.sh, the script behind `make images`: it builds only what changed
since the last run (each image carries the hash of its inputs), so the tier pays for a build once
per change, not once per run. Containers run the way the chart and the operator's Job builders
run them in Kubernetes: as UID 65532, read-only root filesystem with a tmpfs /tmp, every
capability dropped, no privilege escalation; on the host's network, so they reach the test's
servers on loopback as a pod reaches a Service.

`postgres_over_tcp` puts a TCP listener in front of the embedded PostgreSQL: pgserver listens only
on a Unix socket in a directory its own system user owns, where a container's UID 65532 may not go;
a pod reaches PostgreSQL over TCP anyway.

Test infrastructure, not product code: no part of ragops imports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ragops_operator.demo.pgfault import SlowTableProxy
from tests.support.controlplane import REPO_ROOT, _die_with_parent
from tests.support.http_double import free_port

CONTAINERS_CONF = REPO_ROOT / "tools" / "containers" / "containers.conf"
IMAGES_SCRIPT = REPO_ROOT / "tools" / "images.sh"
NON_ROOT = "65532:65532"
RESTRICTED_RUN = (
    "--read-only",
    "--tmpfs=/tmp:rw,size=256m,mode=1777",
    f"--user={NON_ROOT}",
    "--cap-drop=ALL",
    "--security-opt=no-new-privileges",
)
"""What PodSecurity `restricted` and the chart's securityContext ask of a pod, as podman flags."""


def podman_env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["podman", *args], capture_output=True, text=True, env=podman_env(), timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result


def unavailable_reason() -> str | None:
    """Why images cannot be built and run here, or None when podman works.

    `make test` installs podman (tools/system-packages.sh); a machine where that was not possible
    skips the tier with this reason instead of failing every test in it.
    """
    if shutil.which("podman") is None:
        return "podman is not installed (`make tools` installs it on Debian with root or sudo)"
    try:
        info = podman("info", "--format", "{{.Host.OCIRuntime.Name}}", check=False, timeout=60)
    except subprocess.TimeoutExpired:
        return "`podman info` did not answer within 60 s"
    if info.returncode != 0:
        return f"podman does not work here: {info.stderr.strip()[-500:]}"
    return None


@dataclass(frozen=True)
class BuiltImage:
    name: str
    """runtime or operator"""
    reference: str
    archive: Path
    """Its OCI archive (podman save --format oci-archive), what `skopeo copy` pushes."""

    def inspect(self) -> dict[str, Any]:
        document: list[dict[str, Any]] = json.loads(podman("image", "inspect", self.reference).stdout)
        return document[0]

    @property
    def repository(self) -> str:
        return self.reference.rpartition(":")[0]

    @property
    def tag(self) -> str:
        return self.reference.rpartition(":")[2]


def build_images() -> dict[str, BuiltImage]:
    """Runs `make images`' script (a no-op when nothing changed) and returns its images by name."""
    done = subprocess.run(
        ["bash", str(IMAGES_SCRIPT)], capture_output=True, text=True, env=podman_env(), timeout=1800, check=False
    )
    if done.returncode != 0:
        raise AssertionError(f"tools/images.sh failed ({done.returncode}):\n{done.stderr[-6000:]}")
    images: dict[str, BuiltImage] = {}
    for line in done.stdout.splitlines():
        name, reference, archive = line.split()
        images[name] = BuiltImage(name, reference, Path(archive))
    assert set(images) == {"runtime", "operator"}, done.stdout
    return images


class Container:
    """One detached container; removed (with its logs read first, if asked) on exit."""

    def __init__(
        self,
        image: str,
        args: Sequence[str] = (),
        *,
        env: Mapping[str, str] | None = None,
        volumes: Sequence[str] = (),
        options: Sequence[str] = RESTRICTED_RUN,
        network: str = "host",
        entrypoint: str | None = None,
    ) -> None:
        self.name = f"ragops-test-{uuid.uuid4().hex[:10]}"
        self.command = ["run", "--detach", f"--name={self.name}", f"--network={network}", *options]
        if entrypoint is not None:
            self.command.append(f"--entrypoint={entrypoint}")
        for key, value in (env or {}).items():
            self.command.append(f"--env={key}={value}")
        self.command += [f"--volume={volume}" for volume in volumes]
        self.command += [image, *args]

    def start(self) -> Container:
        podman(*self.command)
        return self

    def logs(self) -> tuple[str, str]:
        """(stdout, stderr) of the container so far."""
        result = podman("logs", self.name, check=False)
        return result.stdout, result.stderr

    def state(self) -> dict[str, Any]:
        document: list[dict[str, Any]] = json.loads(podman("inspect", self.name).stdout)
        state: dict[str, Any] = document[0]["State"]
        return state

    def running(self) -> bool:
        return bool(self.state()["Running"])

    def wait(self, timeout: float = 300) -> int:
        """Waits for the container to exit; returns its exit code."""
        result = podman("wait", self.name, timeout=timeout)
        return int(result.stdout.strip().splitlines()[-1])

    def remove(self) -> None:
        podman("rm", "--force", "--time=10", self.name, check=False, timeout=60)

    def __enter__(self) -> Container:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.remove()


def run_to_completion(image: str, args: Sequence[str], **options: Any) -> tuple[int, str, str]:
    """Runs a container until it exits: (exit code, stdout, stderr)."""
    with Container(image, args, **options) as container:
        code = container.wait()
        return code, *container.logs()


@contextlib.contextmanager
def postgres_over_tcp(dsn: str) -> Iterator[str]:
    """`dsn` (the embedded server's Unix socket) reachable at a TCP DSN on 127.0.0.1.

    The forwarder is the demo's proxy (ragops_operator.demo.pgfault) with no fault injected: it
    copies bytes between a loopback port and the socket, on its own event loop in a thread.
    """
    params = conninfo_to_dict(dsn)
    host = str(params["host"])
    socket = str(Path(host) / f".s.PGSQL.{params.get('port') or 5432}")
    loop = asyncio.new_event_loop()
    proxy = SlowTableProxy(socket)
    thread = threading.Thread(target=loop.run_forever, name="postgres-over-tcp", daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(proxy.start(), loop).result(timeout=10)
    try:
        yield make_conninfo(dsn, host="127.0.0.1", port=str(proxy.port), sslmode="disable")
    finally:
        asyncio.run_coroutine_threadsafe(proxy.stop(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


@contextlib.contextmanager
def running_registry(workdir: Path) -> Iterator[str]:
    """Debian's docker-registry (the CNCF distribution registry) on loopback; yields host:port.

    Where `skopeo copy oci-archive:... docker://...` pushes to in the tests: the same protocol as
    any registry a user pushes the archives to, over plain HTTP on 127.0.0.1.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    address = f"127.0.0.1:{free_port()}"
    config = workdir / "config.yml"
    config.write_text(
        json.dumps(
            {
                "version": 0.1,
                "log": {"level": "warn"},
                "storage": {"filesystem": {"rootdirectory": str(workdir / "data")}},
                "http": {"addr": address},
            }
        )
    )
    with (workdir / "registry.log").open("ab") as log:
        process = subprocess.Popen(
            ["docker-registry", "serve", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://{address}/v2/", timeout=2) as response:
                    if response.status == 200:
                        break
            except (OSError, urllib.error.URLError):
                pass
            assert process.poll() is None, (workdir / "registry.log").read_text()
            assert time.monotonic() < deadline, "docker-registry did not answer within 30 s"
            time.sleep(0.2)
        yield address
    finally:
        process.terminate()
        process.wait(timeout=10)
