"""`ragops kb ...`: build, evaluate, activate, roll back, list and collect knowledge-base versions.

Other tools (the operator's Jobs, CI pipelines) script against these forms, so options and exit
codes are a contract: 0 success, 1 a refused or failed operation (a gate below threshold
included), 2 bad usage. `kb eval` tells a verdict from a failure to reach one: 1 the gate failed,
3 the evaluation could not run (EVAL_ERROR_EXIT). Credentials come from the environment, never
from arguments, which would show in `ps` and shell history. This module parses and prints; the
work is in `kb`/`store`.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from rich.console import Console

from .kb.sharding import MAX_SHARDS

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from .store import KnowledgeStore

# The commands import the build, gate and store machinery (numpy, psycopg, httpx) when they run,
# so `ragops --help` and `ragops crds` start in a fraction of the time.

T = TypeVar("T")
GATE_FAILED_EXIT = 1
"""`kb eval`: the version was evaluated and is below a threshold (a verdict, recorded)."""
EVAL_ERROR_EXIT = 3
"""`kb eval`: no verdict (store unreachable, version not built, golden set invalid, embedder failing)."""
API_KEY_ENV = "RAGOPS_EMBEDDING_API_KEY"
DSN_ENV = "RAGOPS_DSN"


def _store_options(command: Callable[..., Any]) -> Callable[..., Any]:
    command = click.option(
        "--dsn",
        envvar=DSN_ENV,
        help=f"libpq connection string of a PostgreSQL server with pgvector (or ${DSN_ENV}).",
    )(command)
    command = click.option(
        "--embedded",
        is_flag=True,
        help="Use the embedded PostgreSQL + pgvector in $RAGOPS_DATA_DIR, shared by every ragops command.",
    )(command)
    return click.option("--kb", "knowledge_base", required=True, help="Knowledge base name.")(command)


def _resolve_dsn(dsn: str | None, embedded: bool) -> str:
    if embedded and dsn:
        raise click.UsageError("give either --embedded or --dsn, not both")
    if embedded:
        return _embedded_dsn()
    if not dsn:
        raise click.UsageError(f"give --embedded or --dsn (or set ${DSN_ENV})")
    return dsn


def _embedded_dsn() -> str:
    from .store.embedded import EmbeddedServerMissing, embedded_dsn

    try:
        return embedded_dsn()
    except EmbeddedServerMissing as missing:
        raise click.UsageError(str(missing)) from None


def _run(dsn: str, work: Callable[[KnowledgeStore], Awaitable[T]], *, error_exit: int = 1) -> T:
    """Runs `work` with a connected store; a store, build, gate, embedding or database error exits
    `error_exit` with its message (never a traceback)."""
    import psycopg

    from .embedding import EmbeddingError
    from .kb.build import BuildError
    from .kb.evaluation import GoldenSetError
    from .kb.gate import GateError
    from .store import KnowledgeStore, StoreError

    async def main() -> T:
        # SIGTERM (a Job's pod deleted or past its deadline) cancels the work like Ctrl-C does, so
        # a build records why it stopped instead of vanishing mid-way.
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        async with await KnowledgeStore.connect(dsn) as store:
            return await work(store)

    try:
        return asyncio.run(main())
    except (StoreError, BuildError, GateError, GoldenSetError, EmbeddingError) as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(error_exit)
    except psycopg.Error as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        click.echo(f"error: PostgreSQL: {first}", err=True)
        sys.exit(error_exit)
    except asyncio.CancelledError:
        click.echo("error: interrupted by SIGTERM", err=True)
        sys.exit(128 + signal.SIGTERM)
    except KeyboardInterrupt:
        click.echo("error: interrupted", err=True)
        sys.exit(128 + signal.SIGINT)


class TerminalProgress:
    """Rich progress bars on a terminal, one plain line per stage otherwise (CI logs, Jobs).

    `label` prefixes each stage (e.g. which build); `indent` prefixes plain lines (the demo's layout).
    """

    def __init__(self, console: Console, label: str = "", indent: str = "") -> None:
        self._console = console
        self._label = f"{label}: " if label else ""
        self._indent = indent
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> TerminalProgress:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        if self._console.is_terminal:
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=self._console,
            )
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def stage(self, name: str, total: int | None = None) -> None:
        if self._progress is not None:
            if self._task is not None:
                self._progress.update(self._task, completed=self._progress.tasks[-1].total or 0)
            self._task = self._progress.add_task(f"{self._label}{name}", total=total)
        else:
            line = f"{self._indent}{self._label}{name}" + (f" ({total})" if total is not None else "")
            self._console.print(line, highlight=False)

    def advance(self, amount: int) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, amount)

    def log(self, message: str) -> None:
        self._console.print(f"{self._indent}{message}", highlight=False)


@click.group()
def kb() -> None:
    """Build, evaluate and activate knowledge-base versions in PostgreSQL + pgvector."""


@kb.command()
@_store_options
@click.option("--version", "version", required=True, help="Version name; versions are immutable.")
@click.option(
    "--source",
    "sources",
    multiple=True,
    required=True,
    help="File, directory, glob or http(s) URL; repeat for several. JSONL files hold {id, text, metadata}.",
)
@click.option("--chunk-strategy", type=click.Choice(["recursive", "fixed"]), default="recursive", show_default=True)
@click.option(
    "--chunk-size",
    type=click.IntRange(32, 8192),
    default=512,
    show_default=True,
    help="Target chunk size in approximate tokens.",
)
@click.option("--chunk-overlap", type=click.IntRange(0, 4096), default=64, show_default=True)
@click.option(
    "--embedding-provider",
    type=click.Choice(["static", "hashing", "openai"]),
    default="static",
    show_default=True,
    help="static: the semantic model shipped in the wordllama wheel, offline; hashing: lexical, offline; "
    "openai: an OpenAI-compatible endpoint.",
)
@click.option(
    "--embedding-model",
    default=None,
    help="Model name (default: wordllama-l2-supercat for static, hashing-v1 for hashing).",
)
@click.option(
    "--embedding-dimensions",
    type=click.IntRange(8, 2000),
    default=None,
    help="Vector dimensions (default: 256 for static, 384 otherwise).",
)
@click.option("--embedding-endpoint", default=None, help=f"OpenAI-compatible /v1 base URL; key from ${API_KEY_ENV}.")
@click.option("--batch-size", type=click.IntRange(1, 2048), default=64, show_default=True)
@click.option("--concurrency", type=click.IntRange(1, 64), default=4, show_default=True)
@click.option("--index-m", type=click.IntRange(2, 100), default=16, show_default=True)
@click.option("--index-ef-construction", type=click.IntRange(4, 1000), default=64, show_default=True)
@click.option("--distance", type=click.Choice(["cosine", "l2", "innerProduct"]), default="cosine", show_default=True)
@click.option("--strict", is_flag=True, help="Fail on an unreadable or binary file instead of skipping it.")
@click.option(
    "--shard-count",
    type=click.IntRange(1, MAX_SHARDS),
    default=1,
    show_default=True,
    help="Processes building this version together, each its share of the documents; the last to finish "
    "builds the indexes and completes the version.",
)
@click.option(
    "--shard-index",
    type=click.IntRange(0, MAX_SHARDS - 1),
    default=None,
    help="This process's share, 0 to --shard-count - 1 (an Indexed Job's $(JOB_COMPLETION_INDEX)).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the version manifest as JSON.")
def build(
    knowledge_base: str,
    dsn: str | None,
    embedded: bool,
    version: str,
    sources: tuple[str, ...],
    chunk_strategy: str,
    chunk_size: int,
    chunk_overlap: int,
    embedding_provider: str,
    embedding_model: str | None,
    embedding_dimensions: int | None,
    embedding_endpoint: str | None,
    batch_size: int,
    concurrency: int,
    index_m: int,
    index_ef_construction: int,
    distance: str,
    strict: bool,
    shard_count: int,
    shard_index: int | None,
    as_json: bool,
) -> None:
    """Build a version: ingest, chunk, embed what is new, store and index it.

    With --shard-count N, N processes (--shard-index 0 to N-1) build it together; each prints the
    manifest with --json if it completed the version, else what its share held.
    """
    from .embedding import DEFAULT_DIMENSIONS, DEFAULT_MODELS
    from .kb.build import BuildRequest, ChunkingSettings, EmbeddingSettings, IndexSettings, build_shard, build_version
    from .kb.sharding import Shard

    if chunk_overlap >= chunk_size:
        raise click.BadParameter("must be smaller than --chunk-size", param_hint="--chunk-overlap")
    if index_ef_construction < 2 * index_m:
        raise click.BadParameter("must be at least 2 * --index-m (pgvector)", param_hint="--index-ef-construction")
    if embedding_provider == "openai" and not (embedding_endpoint and embedding_model):
        raise click.UsageError("--embedding-provider openai needs --embedding-endpoint and --embedding-model")
    shard: Shard | None = None
    if shard_count > 1:
        if shard_index is None or shard_index >= shard_count:
            raise click.BadParameter(
                f"must be from 0 to {shard_count - 1} with --shard-count {shard_count}", param_hint="--shard-index"
            )
        shard = Shard(shard_index, shard_count)
    elif shard_index not in (None, 0):
        raise click.BadParameter("needs --shard-count above the index", param_hint="--shard-index")
    request = BuildRequest(
        knowledge_base=knowledge_base,
        version=version,
        sources=sources,
        chunking=ChunkingSettings(strategy=chunk_strategy, size=chunk_size, overlap=chunk_overlap),  # type: ignore[arg-type]
        embedding=EmbeddingSettings(
            provider=embedding_provider,
            model=embedding_model or DEFAULT_MODELS[embedding_provider],
            dimensions=embedding_dimensions or DEFAULT_DIMENSIONS[embedding_provider],
            endpoint=embedding_endpoint,
            batch_size=batch_size,
            concurrency=concurrency,
        ),
        index=IndexSettings(distance=distance, m=index_m, ef_construction=index_ef_construction),  # type: ignore[arg-type]
        strict=strict,
    )
    console = Console(stderr=True)
    target = _resolve_dsn(dsn, embedded)

    async def work(store: KnowledgeStore) -> dict[str, Any]:
        api_key = os.environ.get(API_KEY_ENV)
        with TerminalProgress(console) as progress:
            if shard is None:
                return (await build_version(store, request, api_key=api_key, progress=progress)).manifest
            report = await build_shard(store, request, shard, api_key=api_key, progress=progress)
        if report.published is not None:
            return report.published.manifest
        if report.already_built and report.record.manifest is not None:
            return report.record.manifest
        return {
            "knowledgeBase": knowledge_base,
            "version": version,
            "shard": {"index": shard.index, "count": shard.count},
            "documents": report.documents,
            "chunks": report.chunks,
            "embeddedChunks": report.embedded_chunks,
            "embeddingRequests": report.embedding_requests,
            "completed": False,
        }

    manifest = _run(target, work)
    if as_json:
        click.echo(json.dumps(manifest, indent=2))


@kb.command("eval")
@_store_options
@click.option("--version", "version", required=True)
@click.option(
    "--golden",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="Golden set: YAML or JSONL cases {id, query, relevant, answerContains?}.",
)
@click.option("--k", type=click.IntRange(1, 100), default=5, show_default=True, help="Cut-off rank.")
@click.option("--min-precision", type=click.FloatRange(0, 1), default=0.6, show_default=True)
@click.option("--min-recall", type=click.FloatRange(0, 1), default=0.8, show_default=True)
@click.option("--min-mrr", type=click.FloatRange(0, 1), default=0.5, show_default=True)
@click.option("--min-ndcg", type=click.FloatRange(0, 1), default=0.6, show_default=True)
@click.option("--hybrid/--vector-only", default=True, show_default=True, help="Evaluate the retrieval path served.")
@click.option(
    "--check-answers",
    is_flag=True,
    help="Also generate answers with Anthropic ($ANTHROPIC_API_KEY) and check answerContains phrases.",
)
@click.option(
    "--min-answer-pass-rate",
    type=click.FloatRange(0, 1),
    default=None,
    help="Minimum share of answer checks passed (with --check-answers).",
)
@click.option("--generation-model", default="claude-sonnet-4-6", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print metrics, verdict and every case's ranking as JSON.")
def eval_(
    knowledge_base: str,
    dsn: str | None,
    embedded: bool,
    version: str,
    golden: Path,
    k: int,
    min_precision: float,
    min_recall: float,
    min_mrr: float,
    min_ndcg: float,
    hybrid: bool,
    check_answers: bool,
    min_answer_pass_rate: float | None,
    generation_model: str,
    as_json: bool,
) -> None:
    """Run the golden-set gate on a built version and record its verdict beside earlier ones.

    \b
    Exit codes:
      0  the gate passed
      1  the gate failed: a metric is below its threshold (the verdict is recorded)
      2  bad usage (an option is missing or invalid)
      3  no verdict: the evaluation could not run (store unreachable, version not built,
         golden set invalid or naming unknown documents, embedding endpoint failing)
    """
    from .kb.evaluation import Thresholds
    from .kb.gate import evaluate_version

    thresholds = Thresholds(
        precision_at_k=min_precision,
        recall_at_k=min_recall,
        mrr=min_mrr,
        ndcg_at_k=min_ndcg,
        answer_pass_rate=min_answer_pass_rate,
    )
    anthropic_key = os.environ.get("RAGOPS_ANTHROPIC_API_KEY") or os.environ.get("ANTHROPIC_API_KEY")
    if check_answers and not anthropic_key:
        raise click.UsageError("--check-answers needs $ANTHROPIC_API_KEY (or $RAGOPS_ANTHROPIC_API_KEY)")

    async def work(store: KnowledgeStore) -> dict[str, object]:
        from .generation.anthropic import AnthropicGenerator

        generator = None
        if check_answers and anthropic_key:
            generator = AnthropicGenerator(
                api_key=anthropic_key,
                model=generation_model,
                max_tokens=500,
                timeout_seconds=60,
                base_url=os.environ.get("RAGOPS_ANTHROPIC_BASE_URL"),
            )
        try:
            report = await evaluate_version(
                store,
                knowledge_base,
                version,
                golden,
                k=k,
                thresholds=thresholds,
                hybrid=hybrid,
                api_key=os.environ.get(API_KEY_ENV),
                generator=generator,
            )
        finally:
            if generator is not None:
                await generator.aclose()
        return report.to_json()

    result = _run(_resolve_dsn(dsn, embedded), work, error_exit=EVAL_ERROR_EXIT)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        metrics = result["metrics"]
        assert isinstance(metrics, dict)
        click.echo("  ".join(f"{name}={value:.3f}" for name, value in metrics.items()))
        click.echo("gate: " + ("passed" if result["passed"] else f"FAILED ({', '.join(result['failedMetrics'])})"))  # type: ignore[arg-type]
    if not result["passed"]:
        sys.exit(GATE_FAILED_EXIT)


@kb.command()
@_store_options
@click.option("--version", "version", required=True)
@click.option("--force", is_flag=True, help="Activate even if the version is not evaluated or failed its gate.")
@click.option("--reason", default="", help="Recorded in the activation history.")
@click.option("--k", type=click.IntRange(1, 100), default=None, help="Require a verdict made at this cut-off rank.")
@click.option("--min-precision", type=click.FloatRange(0, 1), default=None, help="Require a verdict this strict.")
@click.option("--min-recall", type=click.FloatRange(0, 1), default=None, help="Require a verdict this strict.")
@click.option("--min-mrr", type=click.FloatRange(0, 1), default=None, help="Require a verdict this strict.")
@click.option("--min-ndcg", type=click.FloatRange(0, 1), default=None, help="Require a verdict this strict.")
def activate(
    knowledge_base: str,
    dsn: str | None,
    embedded: bool,
    version: str,
    force: bool,
    reason: str,
    k: int | None,
    min_precision: float | None,
    min_recall: float | None,
    min_mrr: float | None,
    min_ndcg: float | None,
) -> None:
    """Point the knowledge base at a built, gated version; runtimes switch within a second.

    The version's newest verdict must have passed. With --k or any --min-* option, one of its
    verdicts must also have passed at that k with each of those thresholds at least as high, so a
    re-evaluation with weaker thresholds does not count.
    """
    from .store import GateRequirement

    thresholds = {"precisionAtK": min_precision, "recallAtK": min_recall, "mrr": min_mrr, "ndcgAtK": min_ndcg}
    requirement = None
    if k is not None or any(value is not None for value in thresholds.values()):
        requirement = GateRequirement(k=k, thresholds=thresholds)

    async def work(store: KnowledgeStore) -> str:
        activation = await store.activate(knowledge_base, version, force=force, reason=reason, requirement=requirement)
        return f"{knowledge_base}: active {activation.active} (previous {activation.previous or '-'})"

    click.echo(_run(_resolve_dsn(dsn, embedded), work))


@kb.command()
@_store_options
@click.option(
    "--to", "target", default=None, help="Version to return to (default: the last known-good one before the current)."
)
@click.option("--reason", default="", help="Recorded in the activation history.")
def rollback(knowledge_base: str, dsn: str | None, embedded: bool, target: str | None, reason: str) -> None:
    """Switch back to the last known-good version before the current one (or --to VERSION).

    A second rollback goes one step further back (v3 -> v2, then v2 -> v1); it never re-promotes
    a version that was rolled back, and is refused when no earlier built, gated version is left.
    `kb activate` serves a rolled-back version again, deliberately.
    """

    async def work(store: KnowledgeStore) -> str:
        activation = await store.rollback(knowledge_base, to=target, reason=reason)
        return f"{knowledge_base}: rolled back to {activation.active} (from {activation.previous})"

    click.echo(_run(_resolve_dsn(dsn, embedded), work))


@kb.command("list")
@_store_options
@click.option("--json", "as_json", is_flag=True)
def list_(knowledge_base: str, dsn: str | None, embedded: bool, as_json: bool) -> None:
    """List the versions of a knowledge base, newest last, with the activation pointer."""

    async def work(store: KnowledgeStore) -> dict[str, Any]:
        # A build whose builder is gone is reported as the failure it is, not as building forever.
        await store.fail_interrupted_builds(knowledge_base)
        activation = await store.activation(knowledge_base)
        versions = await store.list_versions(knowledge_base)
        verdicts = {v.version: await store.verdicts(v) for v in versions}
        return {
            "knowledgeBase": knowledge_base,
            "active": activation.active,
            "previous": activation.previous,
            "versions": [
                {
                    "version": v.version,
                    "status": v.status,
                    "gatePassed": v.gate_passed,
                    "verdicts": [verdict.to_json() for verdict in verdicts[v.version]],
                    "chunks": (v.manifest or {}).get("chunks"),
                    "embedding": asdict(v.space),
                    "builtAt": v.built_at.isoformat() if v.built_at else None,
                    "error": v.error,
                }
                for v in versions
            ],
        }

    result = _run(_resolve_dsn(dsn, embedded), work)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    from rich.table import Table

    table = Table(title=f"knowledge base {knowledge_base}")
    for column in ("version", "status", "gate", "chunks", "embedding", "built", ""):
        table.add_column(column)
    for v in result["versions"]:
        gate = {True: "passed", False: "failed", None: "-"}[v["gatePassed"]]
        role = (
            "active" if v["version"] == result["active"] else "previous" if v["version"] == result["previous"] else ""
        )
        embedding = f"{v['embedding']['model']}/{v['embedding']['dimensions']}"
        table.add_row(v["version"], v["status"], gate, str(v["chunks"] or "-"), embedding, v["builtAt"] or "-", role)
    Console().print(table)


@kb.command()
@_store_options
@click.option(
    "--keep",
    type=click.IntRange(0, 1000),
    default=3,
    show_default=True,
    help="Built versions to keep besides the active and the previous one.",
)
def gc(knowledge_base: str, dsn: str | None, embedded: bool, keep: int) -> None:
    """Drop old versions and their chunks; never the active or previous version."""

    async def work(store: KnowledgeStore) -> list[str]:
        return await store.gc(knowledge_base, keep=keep)

    dropped = _run(_resolve_dsn(dsn, embedded), work)
    click.echo(f"{knowledge_base}: dropped {', '.join(dropped) if dropped else 'nothing'}")


@click.command()
@click.option(
    "--embedded",
    is_flag=True,
    default=None,
    help="Serve from the embedded PostgreSQL in $RAGOPS_DATA_DIR; builds the sample KB when empty.",
)
@click.option("--host", default=None, help="Listen address (default $RAGOPS_HOST or 0.0.0.0).")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="Listen port (default $RAGOPS_PORT or 8080).")
def serve(embedded: bool | None, host: str | None, port: int | None) -> None:
    """Serve the RAG runtime: POST /v1/query, /v1/feedback, /readyz, /metrics. Settings come from RAGOPS_* vars."""
    import uvicorn
    from pydantic import ValidationError

    from .app import configure_logging, create_app
    from .server import server_config
    from .settings import RuntimeSettings

    overrides: dict[str, Any] = {
        key: value for key, value in {"embedded": embedded, "host": host, "port": port}.items() if value is not None
    }
    try:
        settings = RuntimeSettings(**overrides)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in error.errors())
        raise click.UsageError(f"invalid runtime settings: {problems}") from None
    if settings.embedded:
        dsn = _embedded_dsn()
        _bootstrap_sample(dsn, settings.knowledge_base)
    else:
        assert settings.dsn is not None
        dsn = settings.dsn.get_secret_value()
    configure_logging()
    pin_blas_threads()
    # uvicorn drains requests on SIGTERM/SIGINT, then re-raises the signal to the handler it found.
    # Exiting normally from that handler runs atexit, which stops the embedded PostgreSQL; the
    # default handler would kill the process and leave the server running.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: sys.exit(0))
    uvicorn.Server(server_config(create_app(settings, dsn=dsn), settings)).run()


def pin_blas_threads() -> None:
    """One BLAS (and OpenMP) thread in the serving process.

    Every numpy operation on the query path is small (one query vector, a few hundred floats).
    With BLAS's default of a thread per core, each such call wakes and synchronises a thread pool
    that competes with the event loop and PostgreSQL for the same cores: on 2 cores a query
    embedding plus a brute-force search over 5k chunks took 7-12 ms that way and 0.5 ms with one
    thread. A runtime's concurrency comes from concurrent requests, not from threads inside one;
    a pod's CPU limit below the node's core count makes the default worse still.
    """
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    threadpool_limits(limits=1)


def _bootstrap_sample(dsn: str, knowledge_base: str) -> None:
    """On an empty embedded store, build, gate and activate the bundled sample knowledge base."""
    from . import sample
    from .kb.build import BuildRequest, build_version
    from .kb.evaluation import Thresholds
    from .kb.gate import evaluate_version

    async def work(store: KnowledgeStore) -> None:
        if (await store.activation(knowledge_base)).active is not None or knowledge_base != "sample":
            return
        click.echo("empty store: building and gating the bundled sample knowledge base", err=True)
        await build_version(store, BuildRequest(knowledge_base, "sample-v1", (str(sample.CORPUS_DIR),)))
        report = await evaluate_version(
            store,
            knowledge_base,
            "sample-v1",
            sample.GOLDEN_SET,
            k=sample.GATE_K,
            thresholds=Thresholds(**sample.GATE_THRESHOLDS),
        )
        if not report.passed:
            raise click.ClickException(f"the sample failed its gate: {', '.join(report.failed_metrics)}")
        await store.activate(knowledge_base, "sample-v1", reason="bundled sample")

    _run(dsn, work)


# ---- cost ----------------------------------------------------------------------------------------

BUDGET_EXCEEDED_EXIT = 3
PRICE_UNKNOWN_EXIT = 4


@click.group()
def cost() -> None:
    """Project what serving costs: per service, per month and per query."""


@cost.command()
@click.option("--queries-per-month", type=click.IntRange(0), default=None, help="What-if: queries per month.")
@click.option(
    "--context-tokens",
    type=click.IntRange(0),
    default=3000,
    show_default=True,
    help="What-if: input tokens per generation (system, passages, question).",
)
@click.option(
    "--output-tokens", type=click.IntRange(0), default=300, show_default=True, help="What-if: output tokens per answer."
)
@click.option(
    "--cache-hit-rate",
    type=click.FloatRange(0, 1, max_open=True),
    default=0.0,
    show_default=True,
    help="What-if: share of queries answered from the cache.",
)
@click.option(
    "--dsn", envvar=DSN_ENV, default=None, help=f"Measured: the answer log in this PostgreSQL (or ${DSN_ENV})."
)
@click.option("--embedded", is_flag=True, help="Measured: the answer log in the embedded PostgreSQL.")
@click.option(
    "--kb", "knowledge_base", default=None, help="Knowledge base of the answer log rows (with --dsn/--embedded)."
)
@click.option(
    "--since", default="7d", show_default=True, help="Measured window (answer log or Prometheus): 30m, 24h, 7d ..."
)
@click.option("--prometheus-url", default=None, help="Measured: the runtime's counters in this Prometheus.")
@click.option("--namespace", default=None, help="Prometheus: only this namespace's runtimes.")
@click.option("--deployment", default=None, help="Only this RagDeployment's answers (answer log and Prometheus).")
@click.option("--model", default="claude-sonnet-4-6", show_default=True, help="Generation model whose prices apply.")
@click.option(
    "--embedding-model",
    default="wordllama-l2-supercat",
    show_default=True,
    help="Query embedding model whose price applies.",
)
@click.option(
    "--reranker-model", default=None, help="Reranker model (default: no reranker, except what Prometheus counted)."
)
@click.option(
    "--query-tokens", type=click.IntRange(0), default=20, show_default=True, help="Tokens per embedded query."
)
@click.option(
    "--prices",
    "prices_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="YAML price table replacing the built-in one (see README).",
)
@click.option("--max-cost-per-query", type=click.FloatRange(0), default=None, help="Budget in USD per query.")
@click.option(
    "--ragdeployment",
    "ragdeployment_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Budget from this RagDeployment file's spec.slo.maxCostPerQueryUsd.",
)
@click.option("--output", "output", type=click.Choice(["table", "json"]), default="table", show_default=True)
def estimate(
    queries_per_month: int | None,
    context_tokens: int,
    output_tokens: int,
    cache_hit_rate: float,
    dsn: str | None,
    embedded: bool,
    knowledge_base: str | None,
    since: str,
    prometheus_url: str | None,
    namespace: str | None,
    deployment: str | None,
    model: str,
    embedding_model: str,
    reranker_model: str | None,
    query_tokens: int,
    prices_file: Path | None,
    max_cost_per_query: float | None,
    ragdeployment_file: Path | None,
    output: str,
) -> None:
    """Monthly cost per service (generation input and output, embedding, rerank), total and cost per query.

    Usage comes from exactly one of: what-if inputs (--queries-per-month, --context-tokens,
    --output-tokens), the answer log (--dsn or --embedded, with --kb and --since), or Prometheus
    (--prometheus-url with --since). Measured usage is scaled from its window to a 30-day month.

    Exit codes: 0 every price known and within budget (or no budget given), 3 cost per query over
    the budget (--max-cost-per-query or --ragdeployment's slo.maxCostPerQueryUsd), 4 a model has no
    price, so the estimate is incomplete (give its price with --prices), 1 the source could not be
    read, 2 bad usage.
    """
    from datetime import UTC, datetime

    from . import cost as costs

    sources = [queries_per_month is not None, bool(dsn) or embedded, prometheus_url is not None]
    if sum(sources) != 1:
        raise click.UsageError("give exactly one source: --queries-per-month, --dsn/--embedded, or --prometheus-url")
    if max_cost_per_query is not None and ragdeployment_file is not None:
        raise click.UsageError("give either --max-cost-per-query or --ragdeployment, not both")
    try:
        prices = costs.parse_prices(prices_file.read_text()) if prices_file else costs.default_prices()
        budget = max_cost_per_query
        if ragdeployment_file is not None:
            budget = costs.budget_from_ragdeployment(ragdeployment_file.read_text())
        if queries_per_month is not None:
            usage = costs.usage_what_if(
                queries_per_month=queries_per_month,
                context_tokens=context_tokens,
                output_tokens=output_tokens,
                query_tokens=query_tokens,
                cache_hit_rate=cache_hit_rate,
                rerank=reranker_model is not None,
            )
        elif prometheus_url is not None:
            usage = costs.usage_from_prometheus(
                prometheus_url,
                window=costs.parse_window(since),
                namespace=namespace,
                deployment=deployment,
                query_tokens=query_tokens,
            )
        else:
            if not knowledge_base:
                raise click.UsageError("the answer log needs --kb")
            usage = asyncio.run(
                costs.usage_from_answer_log(
                    _resolve_dsn(dsn, embedded),
                    knowledge_base,
                    since=costs.parse_window(since),
                    now=datetime.now(UTC),
                    deployment=deployment,
                    query_tokens=query_tokens,
                    rerank=reranker_model is not None,
                )
            )
        result = costs.estimate(
            usage,
            prices,
            model=model,
            embedding_model=embedding_model,
            reranker_model=reranker_model,
            max_cost_per_query_usd=budget,
        )
    except costs.CostInputError as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(1)
    if output == "json":
        click.echo(json.dumps(result.to_json(), indent=2))
    else:
        _print_estimate(result)
    if result.over_budget:
        sys.exit(BUDGET_EXCEEDED_EXIT)
    if result.unknown:
        sys.exit(PRICE_UNKNOWN_EXIT)


def _print_estimate(result: Any) -> None:
    from rich.table import Table

    console = Console()
    usage = result.usage
    table = Table(title=f"Monthly cost ({usage.source}, prices checked {result.checked})")
    table.add_column("service")
    table.add_column("per month", justify="right")
    table.add_column("USD / month", justify="right")
    for line in result.lines:
        usd = "unknown price" if line.usd is None else f"{line.usd:,.2f}"
        table.add_row(line.service, f"{line.quantity:,.0f} {line.unit}", usd)
    if result.total_usd is None:
        table.add_row("total (incomplete)", "", "unknown")
        per_query = f"unknown (priced part ${result.known_usd / max(result.monthly_queries, 1):.6f})"
    else:
        table.add_row("total", "", f"{result.total_usd:,.2f}")
        per_query = f"${result.cost_per_query_usd:.6f}"
    console.print(table)
    console.print(f"queries per month: {result.monthly_queries:,.0f}   cost per query: {per_query}")
    for note in usage.notes:
        console.print(f"note: {note}")
    for missing in result.unknown:
        console.print(f"[yellow]no price for {missing}: add it with --prices[/yellow]")
    if result.max_cost_per_query_usd is not None:
        verdict = (
            "[red]OVER BUDGET[/red]"
            if result.over_budget
            else "within budget"
            if result.judged
            else "[yellow]cannot be judged: a price is unknown[/yellow]"
        )
        console.print(f"budget: ${result.max_cost_per_query_usd:.6f} per query: {verdict}")
