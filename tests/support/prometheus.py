"""A real Prometheus for tests, scraping real runtime metrics over HTTP.

`running_prometheus` starts Debian's /usr/bin/prometheus on a free 127.0.0.1 port with one scrape
job, its TSDB in a directory of the caller's, waits for /-/ready and stops it on exit (its `down()`
stops it for a block and starts it again on the same port and TSDB, a fault for the operator);
`serving_metrics` serves a `RuntimeMetrics`' `render()` at /metrics as the runtime's GET /metrics
does. A missing binary fails loudly (`make tools` installs it) instead of skipping.

This module must not judge what Prometheus answers: the tests do, through the operator's client.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import yaml

from ragops_runtime.observability import RuntimeMetrics

PROMETHEUS = Path("/usr/bin/prometheus")
PROMTOOL = Path("/usr/bin/promtool")
SCRAPE_JOB = "ragops-runtime"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def scrape_config(targets: Sequence[str], *, scrape_interval: str = "1s") -> dict[str, Any]:
    """One job scraping `targets` ("host:port") at /metrics every `scrape_interval`."""
    return {
        # The timeout must not exceed the interval; Prometheus refuses its 10s default under a 1s interval.
        "global": {"scrape_interval": scrape_interval, "scrape_timeout": scrape_interval},
        "scrape_configs": [{"job_name": SCRAPE_JOB, "static_configs": [{"targets": list(targets)}]}],
    }


class _Process:
    """One Prometheus server's process, stopped and started again with the same arguments (port, TSDB)."""

    def __init__(self, args: list[str], url: str, log_file: Path, ready_timeout: float) -> None:
        self.args, self.url, self.log_file, self.ready_timeout = args, url, log_file, ready_timeout
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.ready_timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.process.returncode}:\n{self.log_file.read_text()}")
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass  # not listening yet
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"prometheus was not ready within {self.ready_timeout}s:\n{self.log_file.read_text()}"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@dataclass(frozen=True)
class RunningPrometheus:
    url: str
    """Base URL of the HTTP API, e.g. http://127.0.0.1:40123."""
    config_file: Path
    log_file: Path
    _server: _Process = field(repr=False, compare=False)

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The result vector of an instant query, for tests that wait on what Prometheus has ingested."""
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=5)
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def wait_for(self, promql: str, expected: float, *, at_least: bool = False, timeout: float = 15) -> None:
        """Waits until the single-valued `promql` reads `expected` (or more): Prometheus has ingested that state."""
        deadline = time.monotonic() + timeout
        seen: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            seen = self.query(promql)
            if len(seen) == 1:
                value = float(seen[0]["value"][1])
                if value == expected or (at_least and value > expected):
                    return
            time.sleep(0.1)
        raise TimeoutError(f"{promql} did not reach {expected} within {timeout}s; last result {seen}")

    @contextmanager
    def down(self) -> Iterator[None]:
        """Prometheus stopped for the block (its port refuses connections), then started again on the
        same port and TSDB, as a restarted server comes back: a fault for the code that reads it."""
        self._server.stop()
        try:
            yield
        finally:
            self._server.start()


@contextmanager
def running_prometheus(
    targets: Sequence[str], directory: Path, *, scrape_interval: str = "1s", ready_timeout: float = 30
) -> Iterator[RunningPrometheus]:
    """A Prometheus scraping `targets`, with its config, TSDB and log under `directory`."""
    assert PROMETHEUS.is_file(), f"{PROMETHEUS} is missing: `make tools` installs Debian's prometheus package"
    config_file = directory / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(scrape_config(targets, scrape_interval=scrape_interval)))
    log_file = directory / "prometheus.log"
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    args = [
        str(PROMETHEUS),
        f"--config.file={config_file}",
        f"--storage.tsdb.path={directory / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    server = _Process(args, url, log_file, ready_timeout)
    try:
        server.start()
        yield RunningPrometheus(url=url, config_file=config_file, log_file=log_file, _server=server)
    finally:
        server.stop()


@contextmanager
def serving_metrics(metrics: RuntimeMetrics) -> Iterator[str]:
    """Serves `metrics.render()` at http://<target>/metrics in a background thread; yields "host:port"."""

    class MetricsHandler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/metrics":
                self.send_error(404)
                return
            body, content_type = metrics.render()
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # one line per scrape every second would drown the test output

    server = ThreadingHTTPServer(("127.0.0.1", 0), MetricsHandler)
    thread = threading.Thread(target=server.serve_forever, name="metrics-under-test", daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
