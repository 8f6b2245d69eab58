"""`ragops kb ...`: build, evaluate, activate, roll back, list and collect knowledge-base versions.

Other tools (the operator's Jobs, CI pipelines) script against these forms, so options and exit
codes are a contract: 0 success, 1 a refused or failed operation (a gate below threshold
included), 2 bad usage. Credentials come from the environment, never from arguments, which
would show in `ps` and shell history. This module parses and prints; the work is in `kb`/`store`.
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

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from .store import KnowledgeStore

# The commands import the build, gate and store machinery (numpy, psycopg, httpx) when they run,
# so `ragops --help` and `ragops crds` start in a fraction of the time.

T = TypeVar("T")
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
        from .store.embedded import embedded_dsn

        return embedded_dsn()
    if not dsn:
        raise click.UsageError(f"give --embedded or --dsn (or set ${DSN_ENV})")
    return dsn


def _run(dsn: str, work: Callable[[KnowledgeStore], Awaitable[T]]) -> T:
    """Runs `work` with a connected store; store, build and gate errors exit 1 with their message."""
    from .kb.build import BuildError
    from .kb.evaluation import GoldenSetError
    from .kb.gate import GateError
    from .store import KnowledgeStore, StoreError

    async def main() -> T:
        async with await KnowledgeStore.connect(dsn) as store:
            return await work(store)

    try:
        return asyncio.run(main())
    except (StoreError, BuildError, GateError, GoldenSetError) as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(1)


class _TerminalProgress:
    """Rich progress bars on a terminal, one plain line per stage otherwise (CI logs, Jobs)."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> _TerminalProgress:
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
            self._task = self._progress.add_task(name, total=total)
        else:
            self._console.print(f"{name}" + (f" ({total})" if total is not None else ""), highlight=False)

    def advance(self, amount: int) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, amount)

    def log(self, message: str) -> None:
        self._console.print(message, highlight=False)


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
@click.option("--embedding-provider", type=click.Choice(["hashing", "openai"]), default="hashing", show_default=True)
@click.option("--embedding-model", default=None, help="Model name (default: hashing-v1 for hashing).")
@click.option("--embedding-dimensions", type=click.IntRange(8, 2000), default=384, show_default=True)
@click.option("--embedding-endpoint", default=None, help=f"OpenAI-compatible /v1 base URL; key from ${API_KEY_ENV}.")
@click.option("--batch-size", type=click.IntRange(1, 2048), default=64, show_default=True)
@click.option("--concurrency", type=click.IntRange(1, 64), default=4, show_default=True)
@click.option("--index-m", type=click.IntRange(2, 100), default=16, show_default=True)
@click.option("--index-ef-construction", type=click.IntRange(4, 1000), default=64, show_default=True)
@click.option("--distance", type=click.Choice(["cosine", "l2", "innerProduct"]), default="cosine", show_default=True)
@click.option("--strict", is_flag=True, help="Fail on an unreadable or binary file instead of skipping it.")
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
    embedding_dimensions: int,
    embedding_endpoint: str | None,
    batch_size: int,
    concurrency: int,
    index_m: int,
    index_ef_construction: int,
    distance: str,
    strict: bool,
    as_json: bool,
) -> None:
    """Build a version: ingest, chunk, embed what is new, store and index it."""
    from .kb.build import BuildRequest, ChunkingSettings, EmbeddingSettings, IndexSettings, build_version

    if chunk_overlap >= chunk_size:
        raise click.BadParameter("must be smaller than --chunk-size", param_hint="--chunk-overlap")
    if index_ef_construction < 2 * index_m:
        raise click.BadParameter("must be at least 2 * --index-m (pgvector)", param_hint="--index-ef-construction")
    if embedding_provider == "openai" and not (embedding_endpoint and embedding_model):
        raise click.UsageError("--embedding-provider openai needs --embedding-endpoint and --embedding-model")
    request = BuildRequest(
        knowledge_base=knowledge_base,
        version=version,
        sources=sources,
        chunking=ChunkingSettings(strategy=chunk_strategy, size=chunk_size, overlap=chunk_overlap),  # type: ignore[arg-type]
        embedding=EmbeddingSettings(
            provider=embedding_provider,
            model=embedding_model or "hashing-v1",
            dimensions=embedding_dimensions,
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
        with _TerminalProgress(console) as progress:
            report = await build_version(store, request, api_key=os.environ.get(API_KEY_ENV), progress=progress)
        return report.manifest

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
    """Run the golden-set gate on a built version; exit 1 when it fails a threshold."""
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

    result = _run(_resolve_dsn(dsn, embedded), work)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        metrics = result["metrics"]
        assert isinstance(metrics, dict)
        click.echo("  ".join(f"{name}={value:.3f}" for name, value in metrics.items()))
        click.echo("gate: " + ("passed" if result["passed"] else f"FAILED ({', '.join(result['failedMetrics'])})"))  # type: ignore[arg-type]
    if not result["passed"]:
        sys.exit(1)


@kb.command()
@_store_options
@click.option("--version", "version", required=True)
@click.option("--force", is_flag=True, help="Activate even if the version is not evaluated or failed its gate.")
@click.option("--reason", default="", help="Recorded in the activation history.")
def activate(knowledge_base: str, dsn: str | None, embedded: bool, version: str, force: bool, reason: str) -> None:
    """Point the knowledge base at a built, gated version; runtimes switch within a second."""

    async def work(store: KnowledgeStore) -> str:
        activation = await store.activate(knowledge_base, version, force=force, reason=reason)
        return f"{knowledge_base}: active {activation.active} (previous {activation.previous or '-'})"

    click.echo(_run(_resolve_dsn(dsn, embedded), work))


@kb.command()
@_store_options
@click.option("--to", "target", default=None, help="Version to return to (default: the previous one).")
@click.option("--reason", default="", help="Recorded in the activation history.")
def rollback(knowledge_base: str, dsn: str | None, embedded: bool, target: str | None, reason: str) -> None:
    """Switch back to the previous version (or --to VERSION)."""

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
        activation = await store.activation(knowledge_base)
        versions = await store.list_versions(knowledge_base)
        return {
            "knowledgeBase": knowledge_base,
            "active": activation.active,
            "previous": activation.previous,
            "versions": [
                {
                    "version": v.version,
                    "status": v.status,
                    "gatePassed": v.gate_passed,
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
        from .store.embedded import embedded_dsn

        dsn = embedded_dsn()
        _bootstrap_sample(dsn, settings.knowledge_base)
    else:
        assert settings.dsn is not None
        dsn = settings.dsn.get_secret_value()
    configure_logging()
    # uvicorn drains requests on SIGTERM/SIGINT, then re-raises the signal to the handler it found.
    # Exiting normally from that handler runs atexit, which stops the embedded PostgreSQL; the
    # default handler would kill the process and leave the server running.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: sys.exit(0))
    uvicorn.run(
        create_app(settings, dsn=dsn), host=settings.host, port=settings.port, log_config=None, access_log=False
    )


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
