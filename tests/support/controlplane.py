"""A real, local Kubernetes control plane for tests and the API demo.

Starts the binaries `make tools` builds into .tools/bin: etcd and kube-apiserver always,
and on request kube-controller-manager (garbage collection, Deployments, Jobs),
kube-scheduler and kwok with one fake node (so pods are scheduled and turn Ready without a
kubelet). It makes its own CA, serving certificate, admin client certificate
(system:masters) and service-account key pair, and writes a kubeconfig. Everything lives in
one work directory and on loopback ports chosen at start.

This is test infrastructure, not product code: no part of ragops imports it.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import datetime as dt
import ipaddress
import json
import os
import shutil
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from tests.support.http_double import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOLS_BIN = Path(os.environ.get("RAGOPS_TOOLS_BIN", REPO_ROOT / ".tools" / "bin"))
KWOK_STAGES = REPO_ROOT / ".tools" / "kwok" / "stages.yaml"
FAKE_NODE_NAME = "kwok-node-0"
SERVICE_CIDR = "10.0.0.0/24"

REQUIRED_BINARIES = ("etcd", "kube-apiserver", "kubectl")
WORKLOAD_BINARIES = ("kube-controller-manager", "kube-scheduler", "kwok")


class ControlPlaneError(RuntimeError):
    """The control plane could not be started; the message carries the component's log tail."""


def missing_binaries(names: Sequence[str] = REQUIRED_BINARIES + WORKLOAD_BINARIES) -> list[str]:
    return [name for name in names if not os.access(TOOLS_BIN / name, os.X_OK)]


_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True)  # resolved here: preexec_fn must not fork or load libraries


def _die_with_parent() -> None:
    """Runs in the child before exec: the kernel kills it when the test process dies.

    Without this a pytest killed by a timeout leaves etcd and kube-apiserver running, holding
    ports and memory on the CI machine. SIGKILL, not SIGTERM: once etcd is gone the apiserver's
    graceful shutdown waits on it indefinitely, and the data is disposable anyway.
    """
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class ProcessOwner:
    """Named child processes, each logging to `<workdir>/<name>.log` and killed with the test process."""

    workdir: Path
    processes: dict[str, subprocess.Popen[bytes]]

    def spawn_process(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        with (self.workdir / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        self.processes[name] = process
        return process

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.workdir / f"{name}.log"
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def _wait(self, name: str, ready: Callable[[], bool], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            process = self.processes.get(name)
            if process is not None and process.poll() is not None:
                raise ControlPlaneError(f"{name} exited with {process.returncode}:\n{self.log_tail(name)}")
            if ready():
                return
            time.sleep(0.2)
        raise ControlPlaneError(f"{name} not ready after {timeout:.0f}s:\n{self.log_tail(name)}")


@dataclass(frozen=True)
class Pki:
    ca_cert: Path
    serving_cert: Path
    serving_key: Path
    admin_cert: Path
    admin_key: Path
    service_account_key: Path
    service_account_pub: Path


def _write_pem(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    path.chmod(0o600)
    return path


def _key_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_pki(directory: Path) -> Pki:
    """A throwaway CA and the certificates the apiserver and its admin client need."""
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    validity = (now - dt.timedelta(minutes=5), now + dt.timedelta(days=2))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ragops-test-ca")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )

    def issue(
        subject: x509.Name, usage: x509.ObjectIdentifier, sans: list[x509.GeneralName] | None = None
    ) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(validity[0])
            .not_valid_after(validity[1])
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)

    serving_cert, serving_key = issue(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]),
        x509.oid.ExtendedKeyUsageOID.SERVER_AUTH,
        [
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
            *(
                x509.DNSName(name)
                for name in (
                    "localhost",
                    "kubernetes",
                    "kubernetes.default",
                    "kubernetes.default.svc",
                    "kubernetes.default.svc.cluster.local",
                )
            ),
        ],
    )
    admin_cert, admin_key = issue(
        x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
                x509.NameAttribute(NameOID.COMMON_NAME, "ragops-test-admin"),
            ]
        ),
        x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH,
    )
    # Service-account tokens are signed with RSA: every consumer of them accepts RSA.
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    sa_pub = sa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return Pki(
        ca_cert=_write_pem(directory / "ca.crt", ca_cert.public_bytes(serialization.Encoding.PEM)),
        serving_cert=_write_pem(directory / "apiserver.crt", serving_cert),
        serving_key=_write_pem(directory / "apiserver.key", serving_key),
        admin_cert=_write_pem(directory / "admin.crt", admin_cert),
        admin_key=_write_pem(directory / "admin.key", admin_key),
        service_account_key=_write_pem(directory / "sa.key", _key_pem(sa_key)),
        service_account_pub=_write_pem(directory / "sa.pub", sa_pub),
    )


def kubeconfig_document(server: str, pki: Pki) -> dict[str, object]:
    def b64(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()

    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "ragops-test",
                "cluster": {"server": server, "certificate-authority-data": b64(pki.ca_cert)},
            }
        ],
        "users": [
            {
                "name": "admin",
                "user": {
                    "client-certificate-data": b64(pki.admin_cert),
                    "client-key-data": b64(pki.admin_key),
                },
            }
        ],
        "contexts": [{"name": "ragops-test", "context": {"cluster": "ragops-test", "user": "admin"}}],
        "current-context": "ragops-test",
    }


@dataclass(frozen=True)
class ApiResponse:
    status: int
    body: dict[str, Any]
    warnings: list[str]


@dataclass
class ControlPlane(ProcessOwner):
    """A running control plane. Use `start()`; stop with `stop()` or as a context manager."""

    workdir: Path
    pki: Pki
    server: str
    kubeconfig: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    # ---- lifecycle -------------------------------------------------------------------------

    @classmethod
    def start(cls, workdir: Path, *, workloads: bool = False) -> ControlPlane:
        missing = missing_binaries(REQUIRED_BINARIES + (WORKLOAD_BINARIES if workloads else ()))
        if missing:
            raise ControlPlaneError(
                f"missing {', '.join(missing)} in {TOOLS_BIN}: run `make tools` (it builds them from "
                "the pinned Go modules under tools/)"
            )
        workdir.mkdir(parents=True, exist_ok=True)
        pki = make_pki(workdir / "pki")
        port = free_port()
        server = f"https://127.0.0.1:{port}"
        kubeconfig = workdir / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump(kubeconfig_document(server, pki)))
        kubeconfig.chmod(0o600)
        plane = cls(workdir=workdir, pki=pki, server=server, kubeconfig=kubeconfig)
        try:
            etcd_url = plane._start_etcd()
            plane._start_apiserver(port, etcd_url)
            if workloads:
                plane.start_workloads()
        except BaseException:
            plane.stop()
            raise
        return plane

    def __enter__(self) -> ControlPlane:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        for name in reversed(list(self.processes)):
            process = self.processes.pop(name)
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        return self.spawn_process(name, [str(TOOLS_BIN / name), *args])

    # ---- components ------------------------------------------------------------------------

    def _start_etcd(self) -> str:
        client, peer = free_port(), free_port()
        client_url, peer_url = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
        self._spawn(
            "etcd",
            [
                "--name=default",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={client_url}",
                f"--advertise-client-urls={client_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=default={peer_url}",
                # Test data is disposable; fsync would dominate start-up and CRD churn.
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
        )
        self._wait("etcd", lambda: _http_ok(f"{client_url}/health"))
        return client_url

    def _start_apiserver(self, port: int, etcd_url: str) -> None:
        self._spawn(
            "kube-apiserver",
            [
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={port}",
                f"--cert-dir={self.workdir / 'apiserver-certs'}",
                f"--tls-cert-file={self.pki.serving_cert}",
                f"--tls-private-key-file={self.pki.serving_key}",
                f"--client-ca-file={self.pki.ca_cert}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={self.pki.service_account_pub}",
                f"--service-account-signing-key-file={self.pki.service_account_key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=Node,RBAC",
                "--profiling=false",
                # For `kubectl logs` and exec on a real kubelet (tests/support/node.py): reach it by
                # the node's IP, authenticated with the admin's client certificate.
                "--kubelet-preferred-address-types=InternalIP",
                f"--kubelet-client-certificate={self.pki.admin_cert}",
                f"--kubelet-client-key={self.pki.admin_key}",
            ],
        )
        self._wait("kube-apiserver", lambda: self._apiserver_ready(), timeout=120)

    def _apiserver_ready(self) -> bool:
        try:
            return self.api_get("/readyz") == "ok"
        except (OSError, urllib.error.URLError):
            return False

    def start_workloads(self) -> None:
        """Controller-manager, scheduler and kwok with one fake node: Deployments get Ready pods."""
        if "kwok" in self.processes:
            return
        missing = missing_binaries(WORKLOAD_BINARIES)
        if missing or not KWOK_STAGES.exists():
            raise ControlPlaneError(f"missing {missing or KWOK_STAGES}: run `make tools`")
        self.start_controllers()
        self._spawn(
            "kwok",
            [
                f"--kubeconfig={self.kubeconfig}",
                f"--config={KWOK_STAGES}",
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                "--manage-nodes-with-label-selector=",
                "--disregard-status-with-annotation-selector=kwok.x-k8s.io/status=custom",
                "--disregard-status-with-label-selector=",
                "--cidr=10.244.0.0/16",
                "--node-ip=10.240.0.1",
                "--node-lease-duration-seconds=40",
                "--server-address=127.0.0.1:0",
            ],
        )
        self.kubectl("apply", "-f", "-", input=yaml.safe_dump(_fake_node(FAKE_NODE_NAME)))
        self._wait("kwok", lambda: self._node_ready(FAKE_NODE_NAME), timeout=60)

    def start_controllers(self) -> None:
        """Controller-manager (garbage collection, Deployments, Jobs, service accounts) and scheduler.

        Without kwok: for a control plane whose nodes are real kubelets (tests/support/node.py).
        """
        if "kube-controller-manager" in self.processes:
            return
        kubeconfig = str(self.kubeconfig)
        self._spawn(
            "kube-controller-manager",
            [
                f"--kubeconfig={kubeconfig}",
                "--leader-elect=false",
                "--secure-port=0",
                f"--service-account-private-key-file={self.pki.service_account_key}",
                f"--root-ca-file={self.pki.ca_cert}",
                "--use-service-account-credentials=false",
                # No cloud, no node IPAM: kwok nodes carry their own pod CIDR, real ones a CNI range.
                "--controllers=*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-node-route-controller",
                # Fake nodes never run pods, so never evict them for a missed heartbeat.
                "--node-monitor-grace-period=1h",
            ],
        )
        self._spawn("kube-scheduler", [f"--kubeconfig={kubeconfig}", "--leader-elect=false", "--secure-port=0"])
        # The service-account controller must have made "default" before pods can be admitted.
        self._wait("kube-controller-manager", lambda: self._has_default_service_account(), timeout=60)

    def _node_ready(self, name: str) -> bool:
        result = self.kubectl(
            "get", "node", name, "-o", 'jsonpath={.status.conditions[?(@.type=="Ready")].status}', check=False
        )
        return result.stdout.strip() == "True"

    def _has_default_service_account(self) -> bool:
        return self.kubectl("get", "serviceaccount", "default", "-n", "default", check=False).returncode == 0

    # ---- clients ---------------------------------------------------------------------------

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        context.load_cert_chain(str(self.pki.admin_cert), str(self.pki.admin_key))
        return context

    def api_get(self, path: str) -> str:
        with urllib.request.urlopen(f"{self.server}{path}", context=self.ssl_context(), timeout=5) as response:
            body: bytes = response.read()
            return body.decode()

    def request(self, method: str, path: str, body: str | None = None) -> ApiResponse:
        """One call to the API as the admin: any status comes back (no raise), with the Warning headers."""
        request = urllib.request.Request(
            f"{self.server}{path}",
            data=body.encode() if body is not None else None,
            method=method,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, context=self.ssl_context(), timeout=60) as response:
                return ApiResponse(
                    response.status, json.loads(response.read() or b"{}"), response.headers.get_all("Warning") or []
                )
        except urllib.error.HTTPError as error:
            return ApiResponse(error.code, json.loads(error.read() or b"{}"), error.headers.get_all("Warning") or [])

    def version(self) -> dict[str, str]:
        document: dict[str, str] = json.loads(self.api_get("/version"))
        return document

    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Runs kubectl against this control plane; raises with its stderr when `check` and it fails."""
        result = subprocess.run(
            [str(TOOLS_BIN / "kubectl"), *args],
            input=input,
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=timeout,
        )
        if check and result.returncode != 0:
            error = subprocess.CalledProcessError(result.returncode, result.args, result.stdout, result.stderr)
            # pytest prints notes; without this the reason kubectl gave is lost from the report.
            error.add_note(f"kubectl stderr: {result.stderr.strip()}")
            raise error
        return result


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            status: int = response.status
            return status == 200
    except (OSError, urllib.error.URLError):
        return False


def _fake_node(name: str) -> dict[str, object]:
    capacity = {"cpu": "32", "memory": "128Gi", "pods": "250"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "topology.kubernetes.io/zone": "zone-a",
                "type": "kwok",
            },
        },
        "spec": {},
        "status": {"allocatable": capacity, "capacity": capacity},
    }


@contextlib.contextmanager
def running_control_plane(workdir: Path, *, workloads: bool = False) -> Iterator[ControlPlane]:
    plane = ControlPlane.start(workdir, workloads=workloads)
    try:
        yield plane
    finally:
        plane.stop()


def install_crds(plane: ControlPlane, crd_dir: Path = REPO_ROOT / "crds") -> None:
    """Applies the committed CRDs and waits until the apiserver serves them."""
    plane.kubectl("apply", "--server-side", "--field-manager=ragops-tests", "-f", str(crd_dir))
    plane.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(crd_dir))


def remove_workdir(workdir: Path) -> None:
    shutil.rmtree(workdir, ignore_errors=True)
