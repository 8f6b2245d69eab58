"""`ragops serve --embedded` on an empty data directory: builds, gates and serves the sample."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

RAGOPS = str(Path(sys.executable).parent / "ragops")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.postgres
def test_serve_embedded_bootstraps_the_sample_and_answers(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAGOPS_", "ANTHROPIC_"))}
    env["RAGOPS_DATA_DIR"] = str(data)
    server = subprocess.Popen(
        [RAGOPS, "serve", "--embedded", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            while True:
                assert server.poll() is None, server.stdout.read() if server.stdout else ""
                try:
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "not ready within 60 s"
                time.sleep(0.2)
            body = client.post("/v1/query", json={"query": "How long is the frame warranty?"}).json()
            assert body["kbVersion"] == "sample-v1" and body["mode"] == "retrieval_only"
            assert body["citations"][0]["documentId"] == "warranty/frame-warranty.md"
    finally:
        server.send_signal(signal.SIGTERM)
        output, _ = server.communicate(timeout=30)
    assert server.returncode == 0, output
    assert "empty store: building and gating the bundled sample knowledge base" in output
    logs = [line for line in output.splitlines() if line.startswith("{")]
    assert logs and all('"requestId"' in line for line in logs)
    assert "postgresql://" not in output  # the DSN never reaches the logs
    time.sleep(1)
    leftover = subprocess.run(["pgrep", "-f", f"postgres -D {data}"], capture_output=True, text=True)
    assert leftover.stdout == "", "the embedded PostgreSQL outlived `ragops serve`"
