"""What `make demo-cluster` and the operator benchmark share: the whole story's moving parts, for real.

The operator runs as the process a pod would run (`ragops operator run --standalone`), so its memory
can be read from /proc; the bundled sample knowledge base becomes ConfigMaps and a golden set the
build and eval Jobs mount; a runtime process serves a RagDeployment with the settings the operator
rendered into its ConfigMap, under steady traffic, while Prometheus scrapes it; and a latency fault
is injected on the generation path: the Anthropic double's slow replies, or, with a real key, a local
forwarding proxy that delays each call to the real API.

Test infrastructure, not product code: no part of ragops imports it. Like the tests, it must not
judge the operator by its own logic: callers read status, conditions, Events and the store.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol

import httpx
import yaml

from ragops_runtime import sample
from tests.support.anthropic_messages import FakeAnthropic, Reply
from tests.support.controlplane import ControlPlane, _die_with_parent
from tests.support.http_double import free_port

RAGOPS = str(Path(sys.executable).parent / "ragops")
RUNTIME_IMAGE = "registry.invalid/ragops:demo"
"""Never pulled: kwok only readies runtime pods and the process kubelet runs Job pods with the venv's ragops."""

FIELD_MANAGER = "ragops-demo"
SAMPLE_THRESHOLDS = {
    "precisionAtK": sample.GATE_THRESHOLDS["precision_at_k"],
    "recallAtK": sample.GATE_THRESHOLDS["recall_at_k"],
    "mrr": sample.GATE_THRESHOLDS["mrr"],
    "ndcgAtK": sample.GATE_THRESHOLDS["ndcg_at_k"],
}

Manifest = dict[str, Any]


# ---- kubectl ---------------------------------------------------------------------------------


def get(plane: ControlPlane, namespace: str, resource: str, name: str) -> Manifest | None:
    result = plane.kubectl("get", "-n", namespace, resource, name, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def status(plane: ControlPlane, namespace: str, resource: str, name: str) -> Manifest:
    return ((get(plane, namespace, resource, name) or {}).get("status")) or {}


def condition(body: Manifest | None, type: str) -> Manifest:
    return next((c for c in ((body or {}).get("status") or {}).get("conditions") or [] if c["type"] == type), {})


def events(plane: ControlPlane, namespace: str, name: str) -> list[tuple[str, str]]:
    """(reason, message) of the Events about `name`, oldest first."""
    items = json.loads(plane.kubectl("get", "events", "-n", namespace, "-o", "json").stdout)["items"]
    items.sort(key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
    return [(e["reason"], e["message"]) for e in items if e["involvedObject"]["name"] == name]


def apply(plane: ControlPlane, namespace: str, document: Manifest) -> None:
    plane.kubectl(
        "apply",
        "--server-side",
        f"--field-manager={FIELD_MANAGER}",
        "-n",
        namespace,
        "-f",
        "-",
        input=json.dumps(document),
    )


def wait_for(description: str, check: Callable[[], Any], timeout: float = 60, interval: float = 0.3) -> Any:
    """The first truthy value `check` returns; TimeoutError naming `description` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {description}")
        time.sleep(interval)


# ---- the operator as a process ---------------------------------------------------------------


@dataclass
class OperatorProcess:
    process: subprocess.Popen[bytes]
    log_file: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss_bytes(self) -> int:
        """Resident set size from /proc: what the kernel says the operator holds in memory now."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"no VmRSS for pid {self.pid}")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])


@contextmanager
def running_operator_process(
    plane: ControlPlane, namespaces: Sequence[str], log_file: Path, *, env: Mapping[str, str] | None = None
) -> Iterator[OperatorProcess]:
    """`ragops operator run --standalone` against `plane`, until its /healthz answers; stopped on exit."""
    port = free_port()
    liveness = f"http://127.0.0.1:{port}/healthz"
    command = [RAGOPS, "operator", "run", "--standalone", "--health-address", f"127.0.0.1:{port}"]
    for namespace in namespaces:
        command += ["--namespace", namespace]
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RAGOPS_")},
        "KUBECONFIG": str(plane.kubeconfig),
        "RAGOPS_OPERATOR_RUNTIME_IMAGE": RUNTIME_IMAGE,
        **(env or {}),
    }
    with log_file.open("ab") as log:
        process = subprocess.Popen(
            command,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
    operator = OperatorProcess(process, log_file)
    try:
        wait_for("the operator's liveness endpoint", lambda: _alive(process, liveness, log_file), timeout=60)
        yield operator
    finally:
        stop_process(process)


def _alive(process: subprocess.Popen[bytes], url: str, log_file: Path) -> bool:
    if process.poll() is not None:
        raise RuntimeError(f"the operator exited with {process.returncode}:\n{log_file.read_text()[-3000:]}")
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def stop_process(process: subprocess.Popen[bytes], timeout: float = 20) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# ---- the sample knowledge base as Kubernetes objects -------------------------------------------


def sample_topics() -> list[str]:
    return sorted(path.name for path in sample.CORPUS_DIR.iterdir() if path.is_dir())


def publish_sample(plane: ControlPlane, namespace: str, dsn: str) -> list[str]:
    """The store Secret `pg`, one ConfigMap per topic folder of the sample corpus and the golden set.

    A ConfigMap key cannot hold a '/', so each folder is a ConfigMap of its own and a document's id is
    its file name; the golden set's relevant ids are rewritten from `folder/name.md` to `name.md`
    (the sample's file names are unique across folders). Returns the corpus ConfigMaps' names.
    """
    plane.kubectl("create", "secret", "generic", "pg", "-n", namespace, f"--from-literal=dsn={dsn}")
    names = []
    for topic in sample_topics():
        files = sorted((sample.CORPUS_DIR / topic).iterdir())
        name = f"sample-{topic}"
        plane.kubectl("create", "configmap", name, "-n", namespace, *(f"--from-file={f.name}={f}" for f in files))
        names.append(name)
    golden = yaml.safe_load(sample.GOLDEN_SET.read_text())
    for case in golden["cases"]:
        case["relevant"] = [document.rsplit("/", 1)[-1] for document in case["relevant"]]
    plane.kubectl(
        "create", "configmap", "golden", "-n", namespace, f"--from-literal=cases.yaml={yaml.safe_dump(golden)}"
    )
    return names


UPDATE_CONFIG_MAP = "sample-updates"
NEW_DOCUMENT = (
    "holiday-service-hours.md",
    "# Holiday service hours\n\n"
    "Between 24 December and 2 January the Lumen Bikes support line is open from 10:00 to 14:00, and "
    "workshop bookings made in that period are confirmed on 3 January. Warranty claims can still be "
    "submitted online at any time; their five-working-day review starts on 3 January.\n",
)
"""A document the sample lacks: a version with it differs from one without by exactly this."""


def publish_update(plane: ControlPlane, namespace: str) -> str:
    """A ConfigMap holding `NEW_DOCUMENT`, as a later edition of the handbook adds it; returns its name."""
    name, text = NEW_DOCUMENT
    plane.kubectl("create", "configmap", UPDATE_CONFIG_MAP, "-n", namespace, f"--from-literal={name}={text}")
    return UPDATE_CONFIG_MAP


def version_document(
    name: str, knowledge_base: str, config_maps: Sequence[str], *, embedding: Manifest | None = None
) -> Manifest:
    """A KnowledgeBaseVersion of the sample's ConfigMaps, gated at the sample's k and thresholds."""
    spec: Manifest = {
        "knowledgeBase": knowledge_base,
        "store": {"dsnSecretRef": {"name": "pg", "key": "dsn"}},
        "sources": [{"configMap": {"name": config_map}} for config_map in config_maps],
        "goldenSet": {
            "configMapRef": {"name": "golden", "key": "cases.yaml"},
            "k": sample.GATE_K,
            "thresholds": SAMPLE_THRESHOLDS,
        },
    }
    if embedding is not None:
        spec["embedding"] = embedding
    return {
        "apiVersion": "ragops.dev/v1alpha1",
        "kind": "KnowledgeBaseVersion",
        "metadata": {"name": name},
        "spec": spec,
    }


# ---- the generation path and its latency fault -------------------------------------------------


class LatencyFault(Protocol):
    """Slows every generation call down until cleared; `description` says how, for the demo's output."""

    @property
    def description(self) -> str: ...

    def inject(self) -> None: ...

    def clear(self) -> None: ...


@dataclass
class SlowDouble:
    """The Anthropic double's slow replies, as the end-to-end test injects them."""

    anthropic: FakeAnthropic
    seconds: float

    @property
    def description(self) -> str:
        return f"the Anthropic double answers every call {self.seconds:g} s late"

    def inject(self) -> None:
        self.anthropic.script(*[Reply.slow(self.seconds)] * 100_000)

    def clear(self) -> None:
        self.anthropic.script()


class DelayingProxy:
    """A forwarding proxy to the real Anthropic API that holds each call `seconds` while injected.

    Only POSTs (the runtime sends nothing else, and never streams here); headers the API needs are
    passed on, the reply's status, content type and body returned as they came.
    """

    FORWARDED = ("x-api-key", "authorization", "anthropic-version", "anthropic-beta", "content-type")

    def __init__(self, upstream: str, seconds: float) -> None:
        self.upstream = upstream.rstrip("/")
        self.seconds = seconds
        self.delay = 0.0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                time.sleep(proxy.delay)
                headers = {k: v for k, v in self.headers.items() if k.lower() in proxy.FORWARDED}
                try:
                    reply = httpx.post(proxy.upstream + self.path, content=body, headers=headers, timeout=120)
                except httpx.TransportError as error:
                    self.send_error(502, str(error))
                    return
                self.send_response(reply.status_code)
                self.send_header("content-type", reply.headers.get("content-type", "application/json"))
                self.send_header("content-length", str(len(reply.content)))
                self.end_headers()
                self.wfile.write(reply.content)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="delaying-proxy", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def description(self) -> str:
        return f"a local proxy holds every call to the real Anthropic API {self.seconds:g} s"

    def inject(self) -> None:
        self.delay = self.seconds

    def clear(self) -> None:
        self.delay = 0.0

    def __enter__(self) -> DelayingProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


# ---- a runtime serving what the operator rendered, under traffic ---------------------------------


@contextmanager
def running_runtime(
    settings: Mapping[str, str], overrides: Mapping[str, str], log_file: Path, ready_timeout: float = 60
) -> Iterator[str]:
    """`ragops serve` with the operator's rendered settings plus `overrides` (DSN, key, address); yields its URL.

    Nothing of the caller's RAGOPS_* or ANTHROPIC_* environment leaks in: the process sees what a pod
    would. Waits for /healthz, not /readyz: ready needs an active version, which the operator sets.
    """
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("RAGOPS_", "ANTHROPIC_"))},
        **settings,
        **overrides,
    }
    url = f"http://{env.get('RAGOPS_HOST', '127.0.0.1')}:{env['RAGOPS_PORT']}"
    with log_file.open("ab") as log:  # a file, not a pipe: a full pipe would block it
        process = subprocess.Popen(
            [RAGOPS, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent
        )
    try:
        wait_for("the runtime's /healthz", lambda: _healthy(process, url, log_file), timeout=ready_timeout)
        yield url
    finally:
        stop_process(process, timeout=30)


def _healthy(process: subprocess.Popen[bytes], url: str, log_file: Path) -> bool:
    if process.poll() is not None:
        raise RuntimeError(f"the runtime exited with {process.returncode}:\n{log_file.read_text()[-3000:]}")
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


@dataclass
class Traffic:
    """Queries sent back to back by `workers` threads until stopped; answers counted by HTTP status."""

    url: str
    queries: Sequence[str]
    workers: int = 1
    pause: float = 0.0
    statuses: Counter[int] = field(default_factory=Counter)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _run(self, worker: int) -> None:
        with httpx.Client(base_url=self.url, timeout=60, headers={"X-Client-Id": f"traffic-{worker}"}) as client:
            number = worker
            while not self._stop.is_set():
                number += self.workers
                try:
                    response = client.post("/v1/query", json={"query": f"{self.queries[number % len(self.queries)]}"})
                except httpx.TransportError:
                    self._stop.wait(0.2)
                    continue
                with self._lock:
                    self.statuses[response.status_code] += 1
                if self.pause:
                    self._stop.wait(self.pause)

    def __enter__(self) -> Traffic:
        for worker in range(self.workers):
            thread = threading.Thread(target=self._run, args=(worker,), name=f"traffic-{worker}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=70)


def golden_queries() -> list[str]:
    return [case["query"] for case in yaml.safe_load(sample.GOLDEN_SET.read_text())["cases"]]


# ---- a RagDeployment watched against its SLOs ------------------------------------------------------


@dataclass(frozen=True)
class SloProfile:
    """The SLO, the injected delay and the traffic of one generation path.

    The double answers in milliseconds, so a 500 ms p95 objective and a 1.5 s delay are as the
    end-to-end test has them; the real API takes seconds per answer, so its objective and delay
    are scaled up, and it gets a few workers so a window still holds `min_requests` queries.
    """

    p95_latency_ms: int
    fault_seconds: float
    timeout_seconds: int
    window_seconds: int
    check_interval_seconds: int
    failure_threshold: int
    min_requests: int
    workers: int
    pause: float
    model: str = "claude-haiku-4-5"


DOUBLE_PROFILE = SloProfile(
    p95_latency_ms=500,
    fault_seconds=1.5,
    timeout_seconds=5,
    window_seconds=10,
    check_interval_seconds=2,
    failure_threshold=2,
    min_requests=3,
    workers=1,
    pause=0.05,
)
REAL_API_PROFILE = SloProfile(
    p95_latency_ms=8000,
    fault_seconds=10,
    timeout_seconds=30,
    window_seconds=30,
    check_interval_seconds=3,
    failure_threshold=2,
    min_requests=3,
    workers=3,
    pause=1.0,
)


def deployment_document(
    name: str,
    knowledge_base: str,
    version: str,
    profile: SloProfile,
    prometheus_url: str,
    *,
    replicas: int = 1,
    bake_seconds: int = 3,
) -> Manifest:
    """A RagDeployment generating with Anthropic (key from Secret `anthropic`), its SLO watched in Prometheus.

    The answer cache is off so every query takes the generation path the fault slows down.
    """
    return {
        "apiVersion": "ragops.dev/v1alpha1",
        "kind": "RagDeployment",
        "metadata": {"name": name},
        "spec": {
            "knowledgeBase": {"name": knowledge_base, "version": version},
            "runtime": {"replicas": replicas},
            "generation": {
                "provider": "anthropic",
                "model": profile.model,
                "maxTokens": 200,
                "apiKeySecretRef": {"name": "anthropic", "key": "api-key"},
                "timeoutSeconds": profile.timeout_seconds,
            },
            "limits": {"requestsPerMinutePerClient": 100_000},
            "cache": {"ttlSeconds": 0},
            "slo": {
                "p95LatencyMs": profile.p95_latency_ms,
                "window": f"{profile.window_seconds}s",
                "checkInterval": f"{profile.check_interval_seconds}s",
                "failureThreshold": profile.failure_threshold,
                "minRequests": profile.min_requests,
            },
            "rollout": {"bakeTime": f"{bake_seconds}s"},
            "monitoring": {"prometheusUrl": prometheus_url},
        },
    }


def with_version(document: Manifest, version: str) -> Manifest:
    spec = {**document["spec"], "knowledgeBase": {**document["spec"]["knowledgeBase"], "version": version}}
    return {**document, "spec": spec}


def rendered_settings(plane: ControlPlane, namespace: str, deployment: str, timeout: float = 60) -> dict[str, str]:
    """The runtime settings the operator rendered for the pod template its runtime Deployment runs now.

    Read from the ConfigMap the container's `envFrom` names (one per runtime template), as a pod would.
    """

    def read() -> dict[str, str] | None:
        template = (get(plane, namespace, "deployment", f"{deployment}-runtime") or {}).get("spec", {}).get("template")
        containers = ((template or {}).get("spec") or {}).get("containers") or [{}]
        names = [ref["configMapRef"]["name"] for ref in containers[0].get("envFrom") or [] if "configMapRef" in ref]
        if not names:
            return None
        data: dict[str, str] | None = (get(plane, namespace, "configmap", names[0]) or {}).get("data")
        return data

    settings: dict[str, str] = wait_for(f"{deployment}'s rendered runtime settings", read, timeout=timeout)
    return settings
