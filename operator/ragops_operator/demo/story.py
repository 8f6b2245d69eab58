"""`ragops demo`: the whole story on one machine, through the product's own code paths.

Embedded PostgreSQL + pgvector in a fresh directory; KB v1 built from the bundled sample and gated
on its golden set (`kb.build`, `kb.gate`, as `ragops kb build/eval` run them); `ragops serve` as a
subprocess answering questions; a v2 that swaps the semantic embedder for the lexical hashing one,
which its gate refuses, and the
store refusing to activate it; a v3 that passes its gate and is activated while an injected fault
slows the statements on v3's chunk table; the operator's SLO logic (`reconcile.slo`) judging
readings of the runtime's /metrics and deciding the rollback, executed by the store's rollback;
latency recovering on v1; then two canaries driven by the operator's rollout machine
(`reconcile.progressive`, see `canary`): v4, slowed by an injected fault yet passing its gate, aborted
by the relative analysis with the share of user queries it answered (its blast radius), and a
healthy v5 promoted through every step. Each step is checked: a story that does not happen fails
the command.

What stays out: Kubernetes (`make demo-cluster` tells the same story through the operator) and
Prometheus (see `measure`). The runtime's settings that differ from its defaults are set in
`_runtime_env`, each with its reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import yaml
from rich.console import Console
from rich.table import Table

from ragops_operator.api.ragdeployment import RolloutSpec, SloSpec
from ragops_operator.reconcile.slo import SloCheck, SloSample, Verdict, WatchState, advance, decide_rollback, judge
from ragops_runtime import sample
from ragops_runtime.cli import TerminalProgress
from ragops_runtime.kb.build import BuildRequest, ChunkingSettings, EmbeddingSettings, IndexSettings, build_version
from ragops_runtime.kb.evaluation import EvaluationReport, Thresholds
from ragops_runtime.kb.gate import evaluate_version
from ragops_runtime.store import ActivationRefused, KnowledgeStore
from ragops_runtime.store.embedded import start_embedded

from .canary import CanaryOutcome, CanaryRun
from .measure import Scrape, latency_objective_ms, parse_scrape, per_statement_delay_ms, percentile, sample_between
from .pgfault import SlowTableProxy

KNOWLEDGE_BASE = "sample"
NAMESPACE = "demo"
DEPLOYMENT = "demo"
QUESTIONS = (
    "How long is the frame warranty?",
    "What does error code E07 on the display mean?",
    "Am I allowed to take my e-bike battery with me on a flight to Spain?",
)
QUERIES_PER_CHECK = 12
CONCURRENCY = 4
LATENCY_FLOOR_MS = 250
STATEMENTS_PER_QUERY = 1
"""Hybrid retrieval runs one statement on the chunk table per query: both halves and their fusion."""
LEXICAL_EMBEDDING = EmbeddingSettings(provider="hashing", model="hashing-v1", dimensions=384)
V3_INDEX = IndexSettings(m=24, ef_construction=96)
V4_INDEX = IndexSettings(m=32, ef_construction=128)
V5_INDEX = IndexSettings(m=16, ef_construction=100)
SLOWER_FACTOR = 3
"""v4's injected delay per query, in multiples of v1's measured p95: clearly slower than stable."""
TOLERANCE_FACTOR = 2
"""The canary analysis' latency tolerance, in multiples of v1's measured p95: a healthy candidate's p95
over a few dozen queries on a loaded machine has come out 125 ms above stable's when v1's was ~100 ms
(a full test run at load 14-20); v4's injected delay stays well above it."""
ACT_OBJECTIVE_FACTOR = 10
"""The canary act's absolute p95 objective, in multiples of v1's p95 (at least 2 s)."""


class DemoError(Exception):
    """A step of the story did not happen as it must; the message says which and why."""


@dataclass
class Step:
    name: str
    outcome: str
    detail: str
    seconds: float


@dataclass
class Report:
    steps: list[Step] = field(default_factory=list)

    @contextlib.contextmanager
    def step(self, name: str) -> Any:
        started = time.monotonic()
        holder: dict[str, str] = {"outcome": "", "detail": ""}
        yield holder
        self.steps.append(Step(name, holder["outcome"], holder["detail"], time.monotonic() - started))


def run_demo(*, data_dir: Path | None, keep: bool, console: Console) -> Report:
    """Runs the story; raises DemoError when a step fails. Removes a temporary data dir unless `keep`."""
    directory = data_dir or Path(tempfile.mkdtemp(prefix="ragops-demo-"))
    if data_dir is not None:
        directory.mkdir(parents=True, exist_ok=True)
        if any(directory.iterdir()):
            raise DemoError(f"{directory} is not empty: the demo starts from an empty data directory")
    console.print(f"[bold]ragops demo[/] data in {directory} (embedded PostgreSQL + pgvector, no cluster)")
    started = time.monotonic()
    server = start_embedded(directory)
    console.print(f"embedded PostgreSQL ready in {time.monotonic() - started:.1f} s")
    try:
        return asyncio.run(_Story(directory, server.get_uri(), console).run())
    finally:
        server.cleanup()
        if keep:
            console.print(f"kept {directory}")
        elif data_dir is None:
            shutil.rmtree(directory, ignore_errors=True)


class _Story:
    def __init__(self, directory: Path, dsn: str, console: Console) -> None:
        self.directory = directory
        self.dsn = dsn
        self.console = console
        self.report = Report()
        self.golden_queries: list[str] = []
        self.generation = ""
        self._cursor = 0
        self._client_p95: float | None = None
        self._window = ""
        self._slo = SloSpec()
        self._baseline_p95_ms = 0.0
        self._act_slo = SloSpec()

    async def run(self) -> Report:
        self.golden_queries = [case["query"] for case in yaml.safe_load(sample.GOLDEN_SET.read_text())["cases"]]
        proxy = SlowTableProxy(_unix_socket(self.dsn))
        await proxy.start()
        try:
            async with await KnowledgeStore.connect(self.dsn) as store:
                await self._build_and_gate(store, "v1", note="the bundled sample corpus")
                await store.activate(KNOWLEDGE_BASE, "v1", reason="demo: first version")
                async with self._runtime(proxy.port) as client:
                    await self._questions(client)
                    await self._bad_version(store)
                    await self._faulty_version(store, client, proxy)
                    await self._canaries(store, client, proxy)
        finally:
            await proxy.stop()
        self._summary()
        return self.report

    # ---- knowledge-base versions ------------------------------------------------------------------

    async def _build_and_gate(
        self,
        store: KnowledgeStore,
        version: str,
        *,
        note: str,
        sources: Sequence[str] | None = None,
        chunking: ChunkingSettings | None = None,
        embedding: EmbeddingSettings | None = None,
        index: IndexSettings | None = None,
    ) -> EvaluationReport:
        self.console.rule(f"KB {version}: {note}")
        request = BuildRequest(
            KNOWLEDGE_BASE,
            version,
            tuple(sources or (str(sample.CORPUS_DIR),)),
            chunking=chunking or ChunkingSettings(),
            embedding=embedding or EmbeddingSettings(),
            index=index or IndexSettings(),
        )
        with self.report.step(f"build {version}") as step:
            with TerminalProgress(self.console, label=f"build {version}", indent="  ") as progress:
                built = await build_version(store, request, progress=progress)
            step["outcome"] = "built"
            step["detail"] = f"{built.manifest.get('documents')} documents, {built.manifest.get('chunks')} chunks"
        thresholds = Thresholds(**sample.GATE_THRESHOLDS)
        with self.report.step(f"gate {version}") as step:
            gate = await evaluate_version(
                store, KNOWLEDGE_BASE, version, sample.GOLDEN_SET, k=sample.GATE_K, thresholds=thresholds
            )
            step["outcome"] = "passed" if gate.passed else "REFUSED"
            step["detail"] = ", ".join(gate.failed_metrics) or _metrics_line(gate.metrics)
        table = Table(title=f"golden-set gate of {version} (k={gate.k}, {len(gate.cases)} cases)")
        for column in ("metric", "measured", "threshold", ""):
            table.add_column(column)
        for name, minimum in (
            ("precisionAtK", thresholds.precision_at_k),
            ("recallAtK", thresholds.recall_at_k),
            ("mrr", thresholds.mrr),
            ("ndcgAtK", thresholds.ndcg_at_k),
        ):
            value = gate.metrics[name]
            table.add_row(name, f"{value:.3f}", f">= {minimum:.3f}", "ok" if value >= minimum else "[red]below[/]")
        self.console.print(table)
        self.console.print(
            f"gate {version}: " + ("passed" if gate.passed else f"FAILED ({', '.join(gate.failed_metrics)})")
        )
        return gate

    async def _bad_version(self, store: KnowledgeStore) -> None:
        gate = await self._build_and_gate(
            store,
            "v2",
            note="deliberately worse: the lexical hashing embedder instead of the semantic default",
            embedding=LEXICAL_EMBEDDING,
        )
        if gate.passed:
            raise DemoError("v2 passed its gate: the deliberately bad version should have been refused")
        with self.report.step("activate v2") as step:
            try:
                await store.activate(KNOWLEDGE_BASE, "v2", reason="demo: try the refused version")
            except ActivationRefused as refused:
                step["outcome"] = "REFUSED"
                step["detail"] = str(refused)
                self.console.print(f"activate v2: refused by the store: {refused}")
            else:
                raise DemoError("the store activated v2 although it failed its gate")
        if (await store.activation(KNOWLEDGE_BASE)).active != "v1":
            raise DemoError("v1 is no longer active after the refused v2")

    # ---- the runtime -------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _runtime(self, proxy_port: int) -> AsyncIterator[httpx.AsyncClient]:
        port = _free_port()
        log_path = self.directory / "runtime.log"
        self.console.rule("serve the runtime")
        with log_path.open("wb") as log:
            started = time.monotonic()
            process = await asyncio.create_subprocess_exec(
                _ragops_command(),
                "serve",
                env=_runtime_env(os.environ, proxy_port=proxy_port, port=port),
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
            )
            client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120)
            try:
                await _wait_ready(client, process, log_path, "v1")
                info = (await client.get("/v1/info")).json()
                self.report.steps.append(
                    Step("serve", "ready", f"generation {info['generation']}", time.monotonic() - started)
                )
                self.console.print(
                    f"`ragops serve` on http://127.0.0.1:{port} ready in {time.monotonic() - started:.1f} s, "
                    f"serving {info['activeVersion']}; generation: {info['generation']}"
                )
                self.generation = info["generation"]
                yield client
            finally:
                await client.aclose()
                if process.returncode is None:
                    process.send_signal(signal.SIGTERM)
                    try:
                        await asyncio.wait_for(process.wait(), 20)
                    except TimeoutError:
                        process.kill()
                        await process.wait()

    async def _questions(self, client: httpx.AsyncClient) -> None:
        self.console.rule("ask v1 a few questions")
        with self.report.step("questions") as step:
            modes: list[str] = []
            for question in QUESTIONS:
                body = await _ask(client, question, client_id="demo-user")
                modes.append(body["mode"])
                self._print_answer(question, body)
            step["outcome"] = ", ".join(sorted(set(modes)))
            step["detail"] = f"{len(QUESTIONS)} questions answered by {KNOWLEDGE_BASE}/v1 with citations"

    def _print_answer(self, question: str, body: dict[str, Any]) -> None:
        self.console.print(f"\n[bold]Q:[/] {question}", highlight=False)
        if body["mode"] == "generated":
            label = "generated by Anthropic"
        elif body["degraded"]:
            label = f"retrieval-only, DEGRADED: {body['degradedReason']}"
        else:
            label = "retrieval-only, no ANTHROPIC_API_KEY: the top passage, not a generated answer"
        answer = (
            body["answer"]
            if body["answer"]
            else _first_lines(body["citations"][0]["text"])
            if body["citations"]
            else "-"
        )
        self.console.print(f"[bold]A[/] ({label}, {body['kbVersion']}): {answer}", highlight=False)
        for number, citation in enumerate(body["citations"][:3], start=1):
            heading = " > ".join(citation["headingPath"])
            self.console.print(
                f"   [{number}] {citation['documentId']} {heading} (score {citation['score']:.3f})",
                highlight=False,
                markup=False,
            )
        timings = body["timingsMs"]
        self.console.print(
            "   timings: "
            + ", ".join(
                f"{stage} {timings[stage]:.1f} ms"
                for stage in ("embed", "retrieve", "generate", "total")
                if stage in timings
            ),
            highlight=False,
        )

    # ---- the faulty version and the rollback --------------------------------------------------------

    async def _faulty_version(self, store: KnowledgeStore, client: httpx.AsyncClient, proxy: SlowTableProxy) -> None:
        await self._build_and_gate(
            store, "v3", note="re-indexed with HNSW m=24, efConstruction=96 (a chunk table of its own)", index=V3_INDEX
        )
        v3 = await store.get_version(KNOWLEDGE_BASE, "v3")
        v1 = await store.get_version(KNOWLEDGE_BASE, "v1")
        if v3 is None or v1 is None or v3.chunk_table == v1.chunk_table:
            raise DemoError("v3 should live in a chunk table of its own (other HNSW parameters)")

        self.console.rule("SLO watch: baseline on v1")
        slo = SloSpec(
            p95_latency_ms=LATENCY_FLOOR_MS,
            max_error_rate=0.01,
            max_cost_per_query_usd=0.05,
            min_requests=QUERIES_PER_CHECK - 2,
            failure_threshold=4,
            window="10s",
            check_interval="10s",
        )
        with self.report.step("baseline v1") as step:
            baseline = await self._measure(client, "v1")
            objective = latency_objective_ms(_p95_ms(baseline), floor_ms=LATENCY_FLOOR_MS)
            slo = slo.model_copy(update={"p95_latency_ms": objective})
            self._slo, self._baseline_p95_ms = slo, _p95_ms(baseline) or 0.0
            check = judge(baseline, self._windowed(slo))
            self._print_check("v1 baseline", baseline, check, WatchState(), None)
            if check.verdict is not Verdict.MET:
                raise DemoError(f"v1 does not meet its SLOs before the rollout: {check.message}")
            step["outcome"] = check.verdict.value
            step["detail"] = f"p95 {_ms(baseline.p95_latency_seconds)}; objective p95LatencyMs={objective}"
        self.console.print(
            f"SLOs: p95LatencyMs={slo.p95_latency_ms} (2 x v1's p95, at least {LATENCY_FLOOR_MS}), "
            f"errorRate<={slo.max_error_rate}, costPerQueryUsd<={slo.max_cost_per_query_usd}, "
            f"minRequests={slo.min_requests}, failureThreshold={slo.failure_threshold} "
            f"(during bake: {math.ceil(slo.failure_threshold / 2)})"
        )

        delay_ms = per_statement_delay_ms(slo.p95_latency_ms, STATEMENTS_PER_QUERY)
        # The fault is tied to v3: only statements on v3's chunk table are slowed, so whatever the
        # runtime serves decides whether its queries are slow, and the rollback really cures them.
        proxy.inject(v3.chunk_table, delay_ms / 1000)
        self.console.rule("activate v3, with an injected fault")
        self.console.print(
            f"[yellow]INJECTED FAULT[/]: the proxy between the runtime and PostgreSQL holds every statement on "
            f"v3's chunk table {v3.chunk_table} for {delay_ms} ms ({STATEMENTS_PER_QUERY} per hybrid query)",
            highlight=False,
        )
        with self.report.step("activate v3") as step:
            activation = await store.activate(KNOWLEDGE_BASE, "v3", reason="demo: new index parameters")
            await _wait_ready(client, None, None, "v3")
            step["outcome"] = "active"
            step["detail"] = f"previous {activation.previous}; injected +{delay_ms} ms per statement on v3's table"
        self.console.print(f"activated v3 (previous {activation.previous}); the runtime switched within a second")

        state = WatchState()
        rollout = RolloutSpec(auto_rollback=True, bake_time="10m")
        known_good = "v1"
        breaches = 0
        with self.report.step("SLO watch v3") as step:
            for attempt in range(1, 2 * slo.failure_threshold + 1):
                reading = await self._measure(client, "v3")
                check = judge(reading, self._windowed(slo))
                state = advance(state, check)
                decision = decide_rollback(
                    state, slo, rollout, baking=True, has_known_good=True, current_revision_rolled_back=False
                )
                self._print_check(f"v3 check {attempt} (baking)", reading, check, state, decision.message)
                breaches = state.consecutive_breaches
                if decision.roll_back:
                    break
            else:
                raise DemoError(f"v3 was not rolled back after {2 * slo.failure_threshold} checks: {check.message}")
            step["outcome"] = f"{breaches} x {check.verdict.value}"
            step["detail"] = ", ".join(check.breaches)
        self.console.rule("rollback")
        with self.report.step("rollback") as step:
            activation = await store.rollback(
                KNOWLEDGE_BASE, to=known_good, reason=f"demo SLO watch: {decision.message}"
            )
            await _wait_ready(client, None, None, known_good)
            step["outcome"] = f"{activation.previous} -> {activation.active}"
            step["detail"] = decision.message
        self.console.print(
            f"[bold]rolled back[/] {activation.previous} -> {activation.active}: {decision.message}", highlight=False
        )

        self.console.rule("after the rollback")
        with self.report.step("recovery v1") as step:
            after = await self._measure(client, known_good)
            recovery = judge(after, self._windowed(slo))
            self._print_check("v1 after rollback", after, recovery, advance(WatchState(), recovery), None)
            step["outcome"] = recovery.verdict.value
            step["detail"] = f"p95 {_ms(after.p95_latency_seconds)} (v3: {_ms(reading.p95_latency_seconds)})"
            if _p95_ms(after) is None or _p95_ms(reading) is None or _p95_ms(after) >= _p95_ms(reading):  # type: ignore[operator]
                raise DemoError("latency did not recover after the rollback")
        history = await store.history(KNOWLEDGE_BASE)
        self.console.print("activation history (newest first), from the store:")
        for entry in history:
            self.console.print(
                f"   {entry['action']:9} {entry['from_version'] or '-':>3} -> {entry['to_version']}: {entry['reason']}",
                highlight=False,
                markup=False,
            )
        self.console.print(
            f"faulty statements held: {proxy.stats.delayed_statements} ({proxy.stats.delayed_seconds:.1f} s)"
        )

    # ---- progressive delivery: two canaries ---------------------------------------------------------

    async def _canaries(self, store: KnowledgeStore, client: httpx.AsyncClient, proxy: SlowTableProxy) -> None:
        await self._build_and_gate(
            store,
            "v4",
            note="re-indexed with HNSW m=32, efConstruction=128, its table slowed (injected)",
            index=V4_INDEX,
        )
        v4 = await store.get_version(KNOWLEDGE_BASE, "v4")
        if v4 is None:
            raise DemoError("v4 was not recorded by its build")
        tolerance_ms = self._latency_tolerance_ms()
        delay_ms = max(150, math.ceil(SLOWER_FACTOR * self._baseline_p95_ms))
        # A generous absolute objective, as RAG endpoints with generation have: v4 stays inside it,
        # so only the comparison with stable, in the same window, can catch it.
        objective = max(2000, math.ceil(ACT_OBJECTIVE_FACTOR * self._baseline_p95_ms / 10) * 10)
        self._act_slo = self._slo.model_copy(update={"p95_latency_ms": objective})
        proxy.inject(v4.chunk_table, delay_ms / 1000)
        self.console.rule("canary v4: 10 % of users -> shadow 50 % -> analysis -> 50 % -> analysis")
        self.console.print(
            f"[yellow]INJECTED FAULT[/]: every statement on v4's chunk table {v4.chunk_table} is held {delay_ms} ms: "
            f"v4 passed its golden-set gate (relevance) and stays inside the absolute p95LatencyMs={objective}, "
            f"but is slower than v1 (p95 {self._baseline_p95_ms:.0f} ms); analysis: p95 <= 1.25 x stable "
            f"+ {tolerance_ms} ms",
            highlight=False,
        )
        with self.report.step("canary v4") as step:
            bad = await self._canary(store, client, "v4")
            if bad.phase != "Aborted":
                raise DemoError(f"the slower v4 was not aborted: {bad.phase}, {bad.message}")
            if (await store.activation(KNOWLEDGE_BASE)).active != "v1":
                raise DemoError("v1 is no longer active after v4's canary was aborted")
            step["outcome"] = f"Aborted ({bad.reason})"
            step["detail"] = (
                f"{' -> '.join(bad.steps_seen)}; v4 answered {bad.served_by_candidate} of {bad.user_queries} "
                f"user queries ({bad.share:.1%}); blueGreen: all {bad.user_queries} (100 %)"
            )
        self.console.print(f"aborted: {bad.message}", highlight=False, markup=False)
        self.console.print(
            f"blast radius: v4 answered {bad.served_by_candidate} of the {bad.user_queries} user queries asked during "
            f"its canary ({bad.share:.1%}); a blueGreen switch would have given it all {bad.user_queries}.",
            highlight=False,
        )

        await self._build_and_gate(
            store, "v5", note="re-indexed with HNSW efConstruction=100 (healthy)", index=V5_INDEX
        )
        self.console.rule("canary v5: the same steps")
        with self.report.step("canary v5") as step:
            good = await self._canary(store, client, "v5")
            if good.phase != "Promoting" or (await store.activation(KNOWLEDGE_BASE)).active != "v5":
                raise DemoError(f"the healthy v5 was not promoted: {good.phase}, {good.message}")
            await _wait_ready(client, None, None, "v5")
            step["outcome"] = "Promoted"
            step["detail"] = (
                f"{' -> '.join(good.steps_seen)}; last analysis {good.analysis.verdict.value if good.analysis else '-'}"
                f"; v5 answered {good.served_by_candidate} of {good.user_queries} user queries before the switch"
            )
        self.console.print(f"promoted v5: {good.message}", highlight=False, markup=False)
        history = await store.history(KNOWLEDGE_BASE, limit=12)
        self.console.print("store history of the canaries (newest first):")
        for entry in history:
            if entry["action"] in ("split", "abort", "activate"):
                self.console.print(
                    f"   {entry['action']:9} {entry['from_version'] or '-':>3} -> {entry['to_version']}: "
                    f"{_first_lines(entry['reason'], 110)}",
                    highlight=False,
                    markup=False,
                )

    async def _canary(self, store: KnowledgeStore, client: httpx.AsyncClient, candidate: str) -> CanaryOutcome:
        active = (await store.activation(KNOWLEDGE_BASE)).active
        assert active is not None
        return await CanaryRun(
            store=store,
            client=client,
            console=self.console,
            knowledge_base=KNOWLEDGE_BASE,
            namespace=NAMESPACE,
            deployment=DEPLOYMENT,
            stable=active,
            candidate=candidate,
            slo=self._act_slo,
            questions=[*self.golden_queries, *QUESTIONS],
            concurrency=2 * CONCURRENCY,
            latency_tolerance_ms=self._latency_tolerance_ms(),
        ).run()

    def _latency_tolerance_ms(self) -> int:
        return max(50, math.ceil(TOLERANCE_FACTOR * self._baseline_p95_ms))

    async def _measure(self, client: httpx.AsyncClient, expected_version: str) -> SloSample:
        """One check: scrape, a burst of real queries, scrape; the burst is the window."""
        window_started = time.monotonic()
        before = await self._scrape(client)
        latencies: list[float] = []
        versions: set[str] = set()
        queue = [self.golden_queries[(self._cursor + i) % len(self.golden_queries)] for i in range(QUERIES_PER_CHECK)]
        self._cursor += QUERIES_PER_CHECK

        async def user(number: int) -> None:
            while queue:
                question = queue.pop()
                started = time.monotonic()
                response = await client.post(
                    "/v1/query", json={"query": question}, headers={"X-Client-Id": f"load-{number}"}
                )
                latencies.append((time.monotonic() - started) * 1000)
                if response.status_code == 200:
                    versions.add(response.json()["kbVersion"])

        await asyncio.gather(*(user(n) for n in range(CONCURRENCY)))
        after = await self._scrape(client)
        if versions - {expected_version}:
            raise DemoError(f"expected answers from {expected_version}, got {sorted(versions)}")
        self._client_p95 = percentile(latencies, 0.95)
        self._window = f"{max(1, math.ceil(time.monotonic() - window_started))}s"
        return sample_between(before, after)

    def _windowed(self, slo: SloSpec) -> SloSpec:
        """The SLO spec with the window that was really measured (one burst), so messages name it."""
        return slo.model_copy(update={"window": self._window, "check_interval": self._window})

    async def _scrape(self, client: httpx.AsyncClient) -> Scrape:
        response = await client.get("/metrics")
        response.raise_for_status()
        return parse_scrape(response.text, namespace=NAMESPACE, deployment=DEPLOYMENT)

    def _print_check(
        self, label: str, reading: SloSample, check: SloCheck, state: WatchState, decision: str | None
    ) -> None:
        colour = {"Met": "green", "Breached": "red"}.get(check.verdict.value, "yellow")
        self.console.print(
            f"{label}: [{colour}]{check.verdict.value}[/] requests={reading.requests:.0f} "
            f"p95={_ms(reading.p95_latency_seconds)} (histogram; client-side {_ms_value(self._client_p95)}) "
            f"errorRate={reading.error_ratio if reading.error_ratio is not None else '-'} "
            f"consecutiveBreaches={state.consecutive_breaches}",
            highlight=False,
        )
        self.console.print(f"   {check.message}", highlight=False, markup=False)
        if decision:
            self.console.print(f"   decision: {decision}", highlight=False, markup=False)

    def _summary(self) -> None:
        table = Table(title="ragops demo: summary")
        for column in ("step", "outcome", "detail", "seconds"):
            table.add_column(column, overflow="fold")
        for step in self.report.steps:
            table.add_row(step.name, step.outcome, step.detail, f"{step.seconds:.1f}")
        self.console.print(table)


# ---- helpers ---------------------------------------------------------------------------------------


def _runtime_env(environ: dict[str, str] | os._Environ[str], *, proxy_port: int, port: int) -> dict[str, str]:
    """The runtime's environment: the user's (for ANTHROPIC_API_KEY and RAGOPS_* tuning) plus the demo's."""
    env = {key: value for key, value in environ.items() if key not in ("RAGOPS_EMBEDDED", "RAGOPS_DSN")}
    env.update(
        {
            # Through the fault proxy, which forwards to the embedded server's Unix socket.
            "RAGOPS_DSN": f"postgresql://postgres@127.0.0.1:{proxy_port}/postgres?sslmode=disable&gssencmode=disable",
            "RAGOPS_KNOWLEDGE_BASE": KNOWLEDGE_BASE,
            "RAGOPS_NAMESPACE": NAMESPACE,
            "RAGOPS_DEPLOYMENT": DEPLOYMENT,
            "RAGOPS_POD": "demo-0",
            "RAGOPS_HOST": "127.0.0.1",
            "RAGOPS_PORT": str(port),
            # Every check must measure the retrieval path; cached answers would hide the fault.
            "RAGOPS_CACHE_TTL_SECONDS": "0",
            # The injected delay is sized to the objective and must show as latency, not as timeouts.
            "RAGOPS_RETRIEVAL_TIMEOUT_MS": "60000",
            # The demo's simulated users all come from 127.0.0.1 and name themselves in X-Client-Id,
            # as a gateway that authenticates callers would: the rate limit keys on it, not the address.
            "RAGOPS_TRUSTED_CLIENT_HEADER": "X-Client-Id",
        }
    )
    return env


def _unix_socket(dsn: str) -> str:
    parsed = urlparse(dsn)
    host = parse_qs(parsed.query).get("host", [""])[0]
    if not host.startswith("/"):
        raise DemoError(f"the embedded server is expected on a Unix socket, got {dsn!r}")
    return f"{host}/.s.PGSQL.{parsed.port or 5432}"


def _ragops_command() -> str:
    beside = Path(sys.executable).parent / "ragops"
    found = str(beside) if beside.exists() else shutil.which("ragops")
    if not found:
        raise DemoError("the `ragops` command is not installed next to this Python (run `make install`)")
    return found


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _wait_ready(
    client: httpx.AsyncClient, process: asyncio.subprocess.Process | None, log: Path | None, version: str
) -> None:
    """Until /readyz reports `version` active (the runtime follows the activation pointer)."""
    deadline = time.monotonic() + 60
    last = ""
    while time.monotonic() < deadline:
        if process is not None and process.returncode is not None:
            tail = (await asyncio.to_thread(log.read_text, errors="replace"))[-2000:] if log else ""
            raise DemoError(f"`ragops serve` exited with {process.returncode}:\n{tail}")
        with contextlib.suppress(httpx.TransportError):
            response = await client.get("/readyz")
            last = response.text
            if response.status_code == 200 and response.json().get("activeVersion") == version:
                return
        await asyncio.sleep(0.1)
    raise DemoError(f"the runtime did not serve {version} within 60 s (last /readyz: {last})")


async def _ask(client: httpx.AsyncClient, question: str, *, client_id: str) -> dict[str, Any]:
    response = await client.post("/v1/query", json={"query": question}, headers={"X-Client-Id": client_id})
    if response.status_code != 200:
        raise DemoError(f"query {question!r} failed: HTTP {response.status_code} {response.text[:300]}")
    body: dict[str, Any] = response.json()
    return body


def _metrics_line(metrics: dict[str, float]) -> str:
    return ", ".join(f"{name}={value:.3f}" for name, value in metrics.items() if name != "hitRate")


def _first_lines(text: str, limit: int = 220) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _p95_ms(sample: SloSample) -> float | None:
    return None if sample.p95_latency_seconds is None else sample.p95_latency_seconds * 1000


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def _ms_value(milliseconds: float | None) -> str:
    return "-" if milliseconds is None else f"{milliseconds:.0f} ms"
