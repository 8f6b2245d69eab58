"""`kubectl ragops dashboard` in a real browser: Debian's chromium driven by Playwright.

Everything behind the page is real: the control plane, the operator running the rollouts, versions
built and gated by Jobs (the process-backed kubelet, real PostgreSQL), Prometheus scraping the
runtime metrics of both versions, and the dashboard started through kubectl's plugin mechanism. No
status is written by hand: the operator writes all of it. User traffic is recorded into a runtime
`RuntimeMetrics` served at /metrics, as in test_rollout's analysis test (kwok pods answer nothing).

One canary (docs-v2) is promoted and the next one (docs-v3) paused and aborted with the page's
buttons, through their confirmation dialog; a cancelled dialog does nothing. The screenshot of the
README is taken here: RAGOPS_DASHBOARD_SCREENSHOT=path writes it there.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from ragops_runtime.observability import DeploymentIdentity, RuntimeMetrics
from ragops_runtime.store import TrafficSplit
from tests.integration.test_operator import apply, eventually, get, running_operator
from tests.integration.test_operator_e2e import LENIENT, phase, prepare_sources, version
from tests.integration.test_rollout import VENV_BIN, canary_deployment, rollout, traffic
from tests.support.controlplane import TOOLS_BIN, ControlPlane
from tests.support.kubelet import ProcessKubelet
from tests.support.prometheus import running_prometheus, serving_metrics

CHROMIUM = Path("/usr/bin/chromium")
# As root and on a closed network: no sandbox, and none of Chromium's own calls home.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
UI_TIMEOUT_MS = 90_000


def chromium_unavailable() -> str | None:
    """Why the browser tier cannot run here, or None. `make test` installs chromium (tools/system-packages.sh)."""
    if not CHROMIUM.is_file():
        return f"{CHROMIUM} is missing and could not be installed (tools/system-packages.sh needs root or sudo)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as error:
        return f"the playwright package is missing: {error}"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    reason = chromium_unavailable()
    if reason is not None:
        pytest.skip(f"browser tier: {reason}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


class Users:
    """User traffic of the stable and the canary version, with ratings and costs, as runtime pods record it."""

    def __init__(self, metrics: RuntimeMetrics) -> None:
        self.metrics = metrics
        self.versions: tuple[str, str | None] = ("", None)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dashboard-traffic", daemon=True)
        self._lock = threading.Lock()

    def serve(self, stable: str, canary: str | None) -> None:
        """Switches the traffic; the new versions' first query, rating and cost are counted before this returns."""
        with self._lock:
            self.metrics.prepare_split(stable, canary, probes=False)
            self.versions = (stable, canary)
            self._round()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            with self._lock:
                self._round()

    def _round(self) -> None:
        stable, canary = self.versions
        if not stable:
            return
        served = [(stable, "stable", 0.08, 0.85, 0.002)]
        if canary:
            served.append((canary, "canary", 0.095, 0.8, 0.0024))
        for kb_version, role, seconds, rating, usd in served:
            self.metrics.observe_query(
                mode="full", status="ok", seconds=seconds, stages={}, kb_version=kb_version, role=role
            )
            self.metrics.feedback(rating, kb_version=kb_version, role=role)
            self.metrics.cost(service="generation", usd=usd, kb_version=kb_version, role=role)

    def __enter__(self) -> Users:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def stored_split(dsn: str) -> TrafficSplit:
    """The split in the store, read in a thread: Playwright's sync API keeps an event loop running in this one."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(traffic, dsn).result()


def start_dashboard(plane: ControlPlane, namespace: str) -> tuple[subprocess.Popen[str], str]:
    """`kubectl ragops dashboard` as a user starts it (kubectl finds the plugin on the PATH); its URL."""
    env = {**plane.env(), "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    process = subprocess.Popen(
        [str(TOOLS_BIN / "kubectl"), "ragops", "dashboard", "-n", namespace, "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    found = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
    if found is None:
        process.kill()
        raise AssertionError(f"the dashboard did not say where it serves: {line!r}{process.stdout.read()}")
    return process, found.group(1)


def click_confirmed(page: Any, card: Any, action: str, expected_title: str) -> str:
    """Clicks an action's button, checks the confirmation, confirms; returns the operator's answer shown."""
    card.locator(f'button[data-action="{action}"]').click()
    dialog = page.locator("dialog#confirm")
    dialog.wait_for(state="visible")
    assert expected_title in dialog.locator("#confirm-title").inner_text()
    assert f"kubectl ragops {action}" in dialog.locator("#confirm-text").inner_text()
    dialog.locator("#confirm-ok").click()
    # The answer to this action (the previous one's stays shown until the dialog is confirmed).
    result = card.locator('[data-testid="action-result"][data-ok]', has_text=f": {action}: ")
    result.wait_for(timeout=UI_TIMEOUT_MS)
    text: str = result.inner_text()
    assert result.get_attribute("data-ok") == "true", text
    return text


def expect_text(locator: Any, pattern: str) -> None:
    from playwright.sync_api import expect

    expect(locator).to_have_text(re.compile(pattern), timeout=UI_TIMEOUT_MS)


@pytest.mark.timeout(1200)  # three versions built and gated by real Jobs, two rollouts with analysis
def test_a_canary_is_promoted_and_the_next_one_aborted_from_the_browser(
    browser: Any,
    workloads: ControlPlane,
    namespace: str,
    monkeypatch: pytest.MonkeyPatch,
    pg_dsn: str,
    tmp_path: Path,
) -> None:
    plane = workloads
    prepare_sources(plane, namespace, pg_dsn, tmp_path)
    (tmp_path / "prometheus").mkdir()
    pod = RuntimeMetrics(DeploymentIdentity(namespace=namespace, deployment="docs", pod="docs-runtime-0"))
    steps: list[dict[str, Any]] = [{"setWeight": 50}, {"analysis": {"duration": "6s"}}, {"pause": {}}]
    deployment = canary_deployment("docs-v1", steps)
    deployment["spec"]["rollout"]["strategy"]["canary"].update(
        analysis={"interval": "2s", "window": "30s", "minRequests": 10, "minRatings": 10, "failureLimit": 2},
        probes={"perMinute": 0},  # no runtime pods here to send them: the comparison is on user traffic
    )
    with (
        ProcessKubelet(plane, [namespace]),
        serving_metrics(pod) as target,
        running_prometheus([target], tmp_path / "prometheus") as prometheus,
        running_operator(plane, namespace, monkeypatch),
        Users(pod) as users,
    ):
        deployment["spec"]["monitoring"] = {"prometheusUrl": prometheus.url}
        for name, corpus in (("docs-v1", "corpus-a"), ("docs-v2", "corpus-b")):
            apply(plane, namespace, version(name, corpus, LENIENT))
            eventually(f"{name} Ready", lambda: phase(plane, namespace, "kbv", name) == "Ready", timeout=240)  # noqa: B023
        apply(plane, namespace, version("docs-v3", "corpus-a", LENIENT))  # builds while docs-v2 rolls out
        apply(plane, namespace, deployment)
        eventually("docs-v1 served", lambda: stored_split(pg_dsn).stable == "docs-v1", timeout=60)
        users.serve("docs-v1", None)

        dashboard, url = start_dashboard(plane, namespace)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(url)
            card = page.locator(f'section[data-deployment="{namespace}/docs"]')
            expect_text(card.locator('[data-testid="serving"]'), "serving docs-v1")
            expect_text(page.locator("#connection"), "^live$")
            expect_text(card.locator('[data-testid="version"][data-version="docs-v1"]'), r"docs-v1\s*Ready.*Pass")

            # docs-v2: 50 % of users, an analysis of both versions, then a pause for the promote button.
            users.serve("docs-v1", "docs-v2")
            deployment["spec"]["knowledgeBase"]["version"] = "docs-v2"
            apply(plane, namespace, deployment)
            expect_text(card.locator('[data-testid="canary"]'), "^docs-v2$")
            expect_text(card.locator('[data-testid="weight"]'), "^50% of users$")
            paused = card.locator('[data-testid="step"][data-state="paused"]')
            expect_text(paused, "3. pause until promoted")
            expect_text(card.locator('[data-testid="analysis-verdict"]'), "^Pass$")
            latency = card.locator('[data-testid="objective"]', has_text="p95LatencyMs")
            expect_text(latency, r"p95LatencyMs\s*user\s*\d+(\.\d)? ms\s*\d+(\.\d)? ms.*Pass")
            page.select_option("#range", "5m")  # the stream starts again with charts over 5 minutes
            expect_text(page.locator('[data-chart="p95 latency"] svg text').nth(2), "^-5m00s$")
            for chart in ("p95 latency", "Error rate", "Satisfaction", "Cost per query"):
                lines = card.locator(f'[data-chart="{chart}"] path[data-version="docs-v2"]')
                lines.wait_for(state="attached", timeout=UI_TIMEOUT_MS)
            assert card.locator('button[data-action="promote"]').is_enabled()
            assert card.locator('button[data-action="retry"]').is_disabled()
            screenshot = tmp_path / "dashboard.png"
            page.screenshot(path=str(screenshot), full_page=False)
            if os.environ.get("RAGOPS_DASHBOARD_SCREENSHOT"):
                shutil.copyfile(screenshot, os.environ["RAGOPS_DASHBOARD_SCREENSHOT"])

            # A cancelled confirmation asks the operator nothing.
            card.locator('button[data-action="abort"]').click()
            page.locator("#confirm-cancel").click()
            assert not ((get(plane, namespace, "ragd", "docs") or {})["metadata"].get("annotations") or {}).get(
                "ragops.dev/rollout-action"
            )
            assert rollout(plane, namespace)["phase"] == "Paused"

            answer = click_confirmed(page, card, "promote", f"Promote {namespace}/docs?")
            assert "promote: step 3/3 (pause until promoted) completed by hand" in answer
            expect_text(card.locator('[data-testid="serving"]'), "serving docs-v2")
            eventually("docs-v2 served", lambda: stored_split(pg_dsn).stable == "docs-v2", timeout=60)
            assert rollout(plane, namespace)["lastAction"]["action"] == "promote"

            # docs-v3: paused by hand, then aborted; users go back to docs-v2 and the page says why.
            eventually("docs-v3 Ready", lambda: phase(plane, namespace, "kbv", "docs-v3") == "Ready", timeout=240)
            users.serve("docs-v2", "docs-v3")
            deployment["spec"]["knowledgeBase"]["version"] = "docs-v3"
            canary = deployment["spec"]["rollout"]["strategy"]["canary"]
            canary["steps"] = [{"setWeight": 30}, {"analysis": {"duration": "10m"}}, {"pause": {}}]
            apply(plane, namespace, deployment)
            expect_text(card.locator('[data-testid="canary"]'), "^docs-v3$")
            expect_text(card.locator('[data-testid="rollout-phase"]'), "^Progressing$")
            assert "pause:" in click_confirmed(page, card, "pause", f"Pause {namespace}/docs?")
            expect_text(card.locator('[data-testid="rollout-phase"]'), "^Paused$")
            expect_text(card.locator('[data-testid="time-left"]'), r"step ends in \d+m\d\ds · paused by hand")
            held = card.locator('[data-testid="time-left"]').inner_text()
            page.wait_for_timeout(2500)  # the clock stops while held: the same time left two updates later
            assert card.locator('[data-testid="time-left"]').inner_text() == held
            assert card.locator('button[data-action="resume"]').is_enabled()
            answer = click_confirmed(page, card, "abort", f"Abort {namespace}/docs?")
            assert "abort: aborting the rollout" in answer
            expect_text(card.locator('[data-testid="rollout-phase"]'), "^Aborted$")
            expect_text(card.locator('[data-testid="rollback"]').first, "RolloutAborted.*ManualAbort")
            expect_text(card.locator('[data-testid="phase"]'), "^Degraded$")
            assert card.locator('button[data-action="retry"]').is_enabled()
            assert card.locator('button[data-action="promote"]').is_disabled()
            split = stored_split(pg_dsn)
            assert (split.stable, split.canary, split.canary_weight) == ("docs-v2", None, 0)
            assert rollout(plane, namespace)["abort"]["reason"] == "ManualAbort"

            page.screenshot(path=str(tmp_path / "aborted.png"), full_page=True)

            # The page acts with the user's credentials: no action without its token, no other host name.
            refused = httpx.post(f"{url}api/deployments/{namespace}/docs/retry", timeout=10)
            assert refused.status_code == 403 and rollout(plane, namespace)["phase"] == "Aborted"
            rebound = httpx.get(f"{url}api/state", headers={"Host": "attacker.example"}, timeout=10)
            assert rebound.status_code == 400
        finally:
            dashboard.terminate()
            dashboard.wait(timeout=15)


def write_status(plane: ControlPlane, namespace: str, resource: str, name: str, status: dict[str, Any]) -> None:
    plane.kubectl(
        "patch",
        "-n",
        namespace,
        resource,
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )


def reader_kubeconfig(plane: ControlPlane, namespace: str, directory: Path) -> Path:
    """A kubeconfig of a ServiceAccount that may get and list RagDeployments and versions, nothing else."""
    plane.kubectl("create", "serviceaccount", "reader", "-n", namespace)
    plane.kubectl(
        "create",
        "role",
        "reader",
        "-n",
        namespace,
        "--verb=get,list",
        "--resource=ragdeployments.ragops.dev,knowledgebaseversions.ragops.dev",
    )
    plane.kubectl(
        "create", "rolebinding", "reader", "-n", namespace, "--role=reader", f"--serviceaccount={namespace}:reader"
    )
    token = plane.kubectl("create", "token", "reader", "-n", namespace).stdout.strip()
    config = yaml.safe_load(plane.kubeconfig.read_text())
    for user in config["users"]:
        user["user"] = {"token": token}
    path = directory / "reader.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


def serve_dashboard(plane: ControlPlane, *args: str) -> tuple[subprocess.Popen[str], str]:
    """`ragops dashboard` (the console script, not the kubectl plugin) with the test cluster's kubeconfig."""
    process = subprocess.Popen(
        [str(VENV_BIN / "ragops"), "dashboard", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    found = re.search(r"(http://127\.0\.0\.1:\d+/)", process.stdout.readline())
    if found is None:
        process.kill()
        raise AssertionError(f"the dashboard did not say where it serves: {process.stdout.read()}")
    return process, found.group(1)


def test_the_dashboard_reads_objects_events_and_prometheus_ranges(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    """Without an operator: objects and their status written as the operator writes them (the status
    subresource), an Event as it posts them; the state and charts as the page receives them."""
    plane = control_plane
    deployment = canary_deployment("docs-v2", [{"setWeight": 20}, {"pause": {}}])
    deployment["spec"]["monitoring"] = {"prometheusUrl": "http://127.0.0.1:9/unreachable"}
    apply(plane, namespace, deployment)
    for name in ("docs-v1", "docs-v2"):
        apply(plane, namespace, version(name, "corpus", LENIENT))
        gate = {"precisionAtK": 0.4, "recallAtK": 1.0, "mrr": 0.9, "ndcgAtK": 0.95, "hitRate": 1.0}
        write_status(
            plane, namespace, "kbv", name, {"phase": "Ready", "gate": {"metrics": gate, "passed": True, "cases": 5}}
        )
    write_status(
        plane,
        namespace,
        "ragd",
        "docs",
        {
            "phase": "Progressing",
            "activeVersion": "docs-v1",
            "rollout": {
                "strategy": "canary",
                "phase": "Paused",
                "pauseReason": "Step",
                "stableVersion": "docs-v1",
                "canaryVersion": "docs-v2",
                "rolloutId": "r1",
                "currentStepIndex": 1,
                "steps": 2,
                "weight": 20,
                "startedAt": "2026-03-02T09:25:00Z",
                "stepStartedAt": "2026-03-02T09:26:00Z",
                "pausedAt": "2026-03-02T09:26:00Z",
            },
        },
    )
    uid = (get(plane, namespace, "ragd", "docs") or {})["metadata"]["uid"]
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": "docs.rollback", "namespace": namespace},
        "involvedObject": {
            "apiVersion": "ragops.dev/v1alpha1",
            "kind": "RagDeployment",
            "name": "docs",
            "namespace": namespace,
            "uid": uid,
        },
        "reason": "RolledBack",
        "message": "rolled back docs-v0 to docs-v1: p95 latency 2300 ms > 1000 ms",
        "type": "Warning",
        "lastTimestamp": "2026-03-02T09:00:00Z",
    }
    created = plane.kubectl("create", "-f", "-", input=json.dumps(event), check=False)
    assert created.returncode == 0, created.stderr

    pod = RuntimeMetrics(DeploymentIdentity(namespace=namespace, deployment="docs", pod="docs-runtime-0"))
    (tmp_path / "prometheus").mkdir()
    users = Users(pod)
    # Every series exists before the first scrape: a cost series born a scrape after its query
    # series reads up to 10 % off in the first minute of rate() extrapolation (seen in a full run).
    users.serve("docs-v1", "docs-v2")
    with (
        serving_metrics(pod) as target,
        running_prometheus([target], tmp_path / "prometheus") as prometheus,
        users,
    ):
        selector = f'namespace="{namespace}",kb_version="docs-v2",role="canary"'
        prometheus.wait_for(f"sum(ragops_queries_total{{{selector}}})", 30, at_least=True)
        admin = ("--kubeconfig", str(plane.kubeconfig))
        dashboard, url = serve_dashboard(plane, *admin, "-n", namespace, "--prometheus-url", prometheus.url)
        everywhere, url_all = serve_dashboard(plane, *admin, "-A")
        processes = [dashboard, everywhere]
        try:
            state = httpx.get(f"{url}api/state", timeout=30).json()
            [card] = state["deployments"]
            assert (card["serving"], card["rollout"]["canary"], card["rollout"]["weight"]) == ("docs-v1", "docs-v2", 20)
            assert [s["state"] for s in card["rollout"]["steps"]] == ["done", "paused"]
            assert [k for k, on in card["actions"].items() if on] == ["promote", "promote-full", "abort"]
            assert [(v["name"], v["gate"]["metrics"]["ndcgAtK"]) for v in card["versions"]][::-1] == [
                ("docs-v1", 0.95),
                ("docs-v2", 0.95),
            ]
            assert card["rollbacks"] == [
                {
                    "at": "2026-03-02T09:00:00Z",
                    "kind": "RolledBack",
                    "message": "rolled back docs-v0 to docs-v1: p95 latency 2300 ms > 1000 ms",
                    "count": 1,
                }
            ]

            charts = httpx.get(f"{url}api/charts", params={"range": "5m"}, timeout=30).json()
            assert charts["span"] == 300
            mine = charts["deployments"][f"{namespace}/docs"]
            assert mine["url"] == prometheus.url, mine
            lines = {
                chart: {line["version"]: line["points"] for line in found} for chart, found in mine["series"].items()
            }
            assert set(lines["p95LatencyMs"]) == {"docs-v1", "docs-v2"}
            assert 50 < lines["p95LatencyMs"]["docs-v2"][-1][1] <= 100  # 95 ms queries, read through buckets
            assert lines["errorRate"]["docs-v1"][-1][1] == 0
            # A scrape can fall between a query and its cost being counted: the ratio is within a few percent.
            assert lines["satisfaction"]["docs-v2"][-1][1] == pytest.approx(0.8, rel=0.03)
            assert lines["costPerQueryUsd"]["docs-v2"][-1][1] == pytest.approx(0.0024, rel=0.05)
            assert lines["costPerQueryUsd"]["docs-v1"][-1][1] == pytest.approx(0.002, rel=0.05)

            # Every namespace, and the deployment's own (unreachable) Prometheus named in place of charts.
            keys = [c["key"] for c in httpx.get(f"{url_all}api/state", timeout=30).json()["deployments"]]
            assert f"{namespace}/docs" in keys
            elsewhere = httpx.get(f"{url_all}api/charts", timeout=30).json()["deployments"][f"{namespace}/docs"]
            assert elsewhere["url"] == "http://127.0.0.1:9/unreachable" and "ConnectError" in elsewhere["error"]
            # A user who may read RagDeployments but not Events nor patch them: the page says so.
            kubeconfig = reader_kubeconfig(plane, namespace, tmp_path)
            limited, url_limited = serve_dashboard(plane, "-n", namespace, "--kubeconfig", str(kubeconfig))
            processes.append(limited)
            state = httpx.get(f"{url_limited}api/state", timeout=30).json()
            assert [c["key"] for c in state["deployments"]] == [f"{namespace}/docs"]
            assert state["deployments"][0]["events"] == [] and len(state["warnings"]) == 1
            assert state["warnings"][0].startswith("reading Events failed: 403 Forbidden")
            token = re.search(r'name="ragops-token" content="([^"]+)"', httpx.get(url_limited, timeout=30).text)
            assert token is not None
            refused = httpx.post(
                f"{url_limited}api/deployments/{namespace}/docs/abort",
                headers={"X-Ragops-Token": token.group(1)},
                timeout=30,
            )
            assert refused.status_code == 403 and "cannot patch" in refused.json()["message"], refused.text
        finally:
            for process in processes:
                process.terminate()
                process.wait(timeout=15)
