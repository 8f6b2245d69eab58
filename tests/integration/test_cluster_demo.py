"""`make demo-cluster` runs its whole story and exits 0; interrupted, it leaves nothing running.

The demo is run as `make demo-cluster` runs it, a `python -m tests.support.cluster_demo` process
starting its own control plane, PostgreSQL, Prometheus and operator, so the entry point, the
start-up and the clean-up are what is tested, not a variant of them. Without ANTHROPIC_API_KEY
(the test removes it) generation goes to the Anthropic double.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.controlplane import REPO_ROOT, missing_binaries

pytestmark = [pytest.mark.cluster, pytest.mark.workloads, pytest.mark.postgres]


def demo_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "RAGOPS_"))}


def descendants(pid: int) -> set[int]:
    """Every living process below `pid`, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: set[int] = set()
    pending = [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            found.add(child)
            pending.append(child)
    return found


def alive(pids: set[int]) -> set[int]:
    return {pid for pid in pids if Path(f"/proc/{pid}").exists() and not _zombie(pid)}


def _zombie(pid: int) -> bool:
    try:
        return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) == "Z"
    except OSError:
        return False


@pytest.fixture(autouse=True)
def _tools() -> None:
    assert not missing_binaries(), f"missing {missing_binaries()}: run `make tools`"


@pytest.mark.timeout(900)
def test_the_cluster_demo_tells_the_whole_story_and_exits_0(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tests.support.cluster_demo", "--keep-logs", str(tmp_path / "logs")],
        cwd=REPO_ROOT,
        env=demo_env(),
        capture_output=True,
        text=True,
        timeout=840,
    )
    out = result.stdout
    assert result.returncode == 0, out[-8000:] + result.stderr[-3000:]
    assert "ANTHROPIC_API_KEY is unset" in out
    assert "INJECTED FAULT" in out
    for step in (
        "support-v1 built and gated",
        "support serves support-v1",
        "questions answered",
        "support-v2 refused by its gate",
        "support-v3 promoted",
        "latency fault rolled back",
        "held after the fault",
    ):
        assert f"ok {step}:" in out, step
    assert "GateBelowThreshold" in out and "VersionFailedGate" in out
    assert "Everything started has been stopped." in out


@pytest.mark.timeout(300)
def test_an_interrupted_demo_stops_everything_it_started(tmp_path: Path) -> None:
    log = (tmp_path / "demo.out").open("w+")
    demo = subprocess.Popen(
        [sys.executable, "-m", "tests.support.cluster_demo"],
        cwd=REPO_ROOT,
        env=demo_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        # Interrupted mid-build: control plane, PostgreSQL, Prometheus, kubelet and operator all up.
        deadline = time.monotonic() + 240
        while "built and gated by Jobs" not in Path(log.name).read_text():
            assert demo.poll() is None, Path(log.name).read_text()[-5000:]
            assert time.monotonic() < deadline, Path(log.name).read_text()[-5000:]
            time.sleep(0.5)
        started = descendants(demo.pid)
        assert len(started) >= 5, started
        demo.send_signal(signal.SIGINT)
        assert demo.wait(timeout=120) == 130, Path(log.name).read_text()[-5000:]
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
        log.close()
    deadline = time.monotonic() + 30
    while alive(started) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not alive(started), {pid: Path(f"/proc/{pid}/cmdline").read_bytes()[:120] for pid in alive(started)}
    assert "Interrupted" in Path(log.name).read_text()
