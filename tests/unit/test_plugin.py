"""`kubectl ragops`: the view it prints, its packaging (console script, krew manifest and archive).

Its commands against a real apiserver and a running operator are in tests/integration/test_rollout.py.
"""

from __future__ import annotations

import hashlib
import os
import runpy
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from ragops_operator.plugin import render_status

REPO_ROOT = Path(__file__).resolve().parents[2]
KREW = REPO_ROOT / "plugins" / "krew"
NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


def canary_object(rollout: dict[str, Any]) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((REPO_ROOT / "examples" / "ragdeployment-canary.yaml").read_text())
    document["metadata"]["namespace"] = "prod"
    document["spec"]["knowledgeBase"]["version"] = "docs-v2"
    document["status"] = {
        "phase": "Progressing",
        "activeVersion": "docs-v1",
        "rollout": rollout,
        "conditions": [
            {"type": "Promoted", "status": "False", "reason": "RolloutProgressing"},
            {"type": "Aborted", "status": "False", "reason": "RolloutProgressing"},
        ],
    }
    return document


IN_FLIGHT: dict[str, Any] = {
    "strategy": "canary",
    "phase": "Progressing",
    "message": "step 3/6 (analysis 5m), 2m10s left: docs-v2 answers 10% of users, 50% of stable's queries mirrored",
    "stableVersion": "docs-v1",
    "canaryVersion": "docs-v2",
    "rolloutId": "0a1b2c3d4e5f",
    "currentStepIndex": 2,
    "steps": 6,
    "weight": 10,
    "shadowPercent": 50.0,
    "startedAt": "2026-03-02T09:25:00+00:00",
    "analysis": {
        "verdict": "Pass",
        "checkedAt": "2026-03-02T09:29:30+00:00",
        "windowSeconds": 170.0,
        "objectives": [
            {
                "name": "p95LatencyMs",
                "source": "user",
                "stable": 301.2,
                "canary": 320.0,
                "limit": "<= 1.25 x stable (+25 ms)",
                "verdict": "Pass",
                "samples": "212/1890 requests",
            },
            {
                "name": "goldenRecall",
                "source": "probe",
                "stable": 0.95,
                "canary": 0.93,
                "limit": ">= stable - 0.05",
                "verdict": "Pass",
                "samples": "170/170 golden probes",
            },
        ],
        "sloVerdict": "Met",
        "sloMessage": "all objectives met",
    },
}


def test_status_shows_steps_weights_and_the_analysis_table() -> None:
    view = render_status(canary_object(IN_FLIGHT), NOW)
    lines = view.splitlines()
    assert "Strategy:    canary" in lines
    assert "Phase:       Progressing (rollout: Progressing)" in lines
    assert "Weight:      10% of users    Shadow: 50%" in lines
    assert "Started:     2026-03-02T09:25:00+00:00 (5m00s ago)" in lines
    steps = lines[lines.index("Steps:") + 1 : lines.index("Steps:") + 8]
    assert [line.split()[-1] for line in steps] == ["STATE", "done", "done", "running", "-", "-", "-"]
    assert "analysis 5m" in steps[3] and "pause until promoted" in steps[6]
    table = [line for line in lines if line.startswith("  p95LatencyMs") or line.startswith("  goldenRecall")]
    assert table[0].split()[:4] == ["p95LatencyMs", "user", "301.2", "320"]
    assert "212/1890 requests" in table[0] and "Pass" in table[1]
    assert "  Candidate SLOs: Met: all objectives met" in lines
    assert lines[-1] == "Conditions:  Promoted=False (RolloutProgressing), Aborted=False (RolloutProgressing)"


def test_status_of_an_aborted_rollout_says_why_and_where() -> None:
    aborted = {
        **IN_FLIGHT,
        "phase": "Aborted",
        "weight": 0,
        "shadowPercent": 0,
        "abort": {
            "reason": "AnalysisFailed",
            "message": "2 failed analysis checks in a row: p95LatencyMs Fail: canary 900 vs stable 300",
            "at": "2026-03-02T09:29:30+00:00",
            "stepIndex": 2,
        },
        "lastAction": {"action": "promote", "at": "2026-03-02T09:29:40+00:00", "outcome": "ignored: aborted"},
    }
    view = render_status(canary_object(aborted), NOW)
    assert "aborted" in [line.split()[-1] for line in view.splitlines() if "analysis 5m" in line]
    assert "Aborted:     AnalysisFailed at 2026-03-02T09:29:30+00:00: 2 failed analysis checks" in view
    assert "Last action: promote at 2026-03-02T09:29:40+00:00: ignored: aborted" in view


def test_status_of_a_blue_green_deployment() -> None:
    document = canary_object({})
    document["spec"]["rollout"] = {"bakeTime": "10m"}
    view = render_status(document, NOW)
    assert "Strategy:    blueGreen" in view and "Steps:" not in view


def test_the_console_script_is_installed() -> None:
    plugin = Path(sys.executable).parent / "kubectl-ragops"
    result = subprocess.run([str(plugin), "--help"], capture_output=True, text=True, check=True)
    for command in ("status", "promote", "abort", "pause", "resume", "retry", "set-weight"):
        assert f"  {command} " in result.stdout


def test_the_krew_archive_is_reproducible_and_its_digest_is_in_the_manifest(tmp_path: Path) -> None:
    archive = runpy.run_path(str(KREW / "archive.py"))
    built = archive["archive_bytes"]()
    assert built == archive["archive_bytes"]()
    manifest = yaml.safe_load((KREW / "ragops.yaml").read_text())
    assert manifest["kind"] == "Plugin" and manifest["metadata"]["name"] == "ragops"
    (platform,) = manifest["spec"]["platforms"]
    assert platform["sha256"] == hashlib.sha256(built).hexdigest()
    assert platform["bin"] == "kubectl-ragops" and platform["uri"].endswith("/v0.1.0/kubectl-ragops.zip")
    assert manifest["spec"]["version"] == "v" + _project_version()


def test_the_krew_launcher_runs_the_plugin_from_the_package(tmp_path: Path) -> None:
    # The launcher calls `python3` from the PATH, where `pip install ragops` put the package.
    shim = tmp_path / "python3"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    shim.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(
        [str(KREW / "kubectl-ragops"), "--help"], capture_output=True, text=True, env=env, check=True
    )
    assert "Watch and steer progressive rollouts" in result.stdout


def _project_version() -> str:
    import tomllib

    version: str = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
    return version
