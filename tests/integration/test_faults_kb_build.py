"""Fault suite, knowledge-base build part (issue 16): whatever stops a build, nothing is lost and nothing is stuck.

Each scenario breaks a real build in one way, then checks the same three things:
- never stuck: the version is `built`, or `failed` with a cause, as `ragops kb list` reports it
  (a builder killed outright leaves no lease, and is reported as interrupted);
- nothing lost: running the same build again completes it;
- the same result: the version then holds exactly what a clean build of the same sources holds in
  another database (chunks, vectors, documents, manifest but for its cost fields, contentDigest).

Builds are killed with SIGKILL (a real `ragops kb build` process) while held in one phase by
PostgreSQL itself: the test takes a lock the builder's next statement needs, waits until the
builder's backend is blocked by it (`pg_blocking_pids`), then kills. The embedding phase is held by
slow replies of the OpenAI-compatible double. Other helpers add their scenarios to the tables.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from ragops_runtime.embedding.openai import OpenAIEmbedder
from ragops_runtime.kb.build import BuildError, BuildRequest, EmbeddingSettings, build_version
from ragops_runtime.store import KnowledgeStore, StoreError
from ragops_runtime.store.knowledge import chunk_table_name
from tests.support.knowledge import version_content
from tests.support.openai_embeddings import FakeOpenAIEmbeddings, Reply, running_openai_embeddings_server

RAGOPS = str(Path(sys.executable).parent / "ragops")
KB, VERSION, DIMENSIONS = "docs", "v1", 16
PAGES = 12


def write_pages(root: Path) -> Path:
    """HTML pages (so conversions are cached) with enough text for several chunks each."""
    root.mkdir(parents=True, exist_ok=True)
    for page in range(PAGES):
        sections = "".join(
            f"<h2>Part {section}</h2>"
            + "".join(
                f"<p>Page {page} part {section} explains step {step} of the {word} procedure in detail.</p>"
                for step, word in enumerate(["install", "configure", "upgrade", "restore", "audit"])
            )
            for section in range(4)
        )
        body = f"<main><h1>Page {page}</h1>{sections}</main>"
        (root / f"page-{page:02}.html").write_text(
            f"<html><head><title>Page {page}</title></head><body>{body}</body></html>"
        )
    return root


def settings(server: FakeOpenAIEmbeddings) -> EmbeddingSettings:
    return EmbeddingSettings(
        provider="openai", model="emb", dimensions=DIMENSIONS, endpoint=server.url, batch_size=8, concurrency=1
    )


def build_request(corpus: Path, server: FakeOpenAIEmbeddings) -> BuildRequest:
    from ragops_runtime.kb.build import ChunkingSettings

    return BuildRequest(
        knowledge_base=KB,
        version=VERSION,
        sources=(str(corpus),),
        chunking=ChunkingSettings(strategy="recursive", size=64, overlap=8),
        embedding=settings(server),
    )


def cli_build(corpus: Path, server: FakeOpenAIEmbeddings, dsn: str) -> list[str]:
    return [
        RAGOPS, "kb", "build", "--dsn", dsn, "--kb", KB, "--version", VERSION, "--source", str(corpus),
        "--embedding-provider", "openai", "--embedding-model", "emb", "--embedding-dimensions", str(DIMENSIONS),
        "--embedding-endpoint", server.url, "--batch-size", "8", "--concurrency", "1",
        "--chunk-strategy", "recursive", "--chunk-size", "64", "--chunk-overlap", "8",
    ]  # fmt: skip


def listed_version(dsn: str) -> dict[str, object]:
    """The version as `ragops kb list --json` reports it (the command interrupted builds show up in)."""
    result = subprocess.run(
        [RAGOPS, "kb", "list", "--dsn", dsn, "--kb", KB, "--json"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    (version,) = [v for v in json.loads(result.stdout)["versions"] if v["version"] == VERSION]
    return version  # type: ignore[no-any-return]


def assert_same_as_a_clean_build(dsn: str, clean_dsn: str, corpus: Path, server: FakeOpenAIEmbeddings) -> None:
    import asyncio

    async def clean() -> None:
        async with await KnowledgeStore.connect(clean_dsn) as store:
            await build_version(store, build_request(corpus, server))

    asyncio.run(clean())
    resumed, fresh = version_content(dsn, KB, VERSION), version_content(clean_dsn, KB, VERSION)
    assert resumed.status == fresh.status == "built"
    assert resumed.chunks.keys() == fresh.chunks.keys() and len(resumed.chunks) > PAGES
    assert resumed == fresh
    assert resumed.manifest["contentDigest"] == fresh.manifest["contentDigest"]


# ---- build killed at each phase --------------------------------------------------------------------------------


@dataclass(frozen=True)
class KillScenario:
    """Hold a real build in `phase`, SIGKILL it there, then resume.

    `locks` are taken one after another: the first before the build starts, each next one once the
    builder is blocked by the previous, which is then released; the kill comes when the builder is
    blocked by the last. `{chunks}` is the chunk table, `{version_id}` the version's id. Without
    locks, slow embedding replies hold the build and the kill comes once one request arrived.
    `printed` is the last stage line the builder wrote before it was killed.
    """

    phase: str
    locks: tuple[str, ...]
    printed: str


_BEFORE_CHUNKING = "LOCK TABLE ragops.kb_documents IN ACCESS EXCLUSIVE MODE"
KILL_SCENARIOS = [
    # Reading: the files are read; the lookup of their cached conversions waits.
    KillScenario("reading", ("LOCK TABLE ragops.kb_extractions IN ACCESS EXCLUSIVE MODE",), "reading sources"),
    # Chunking: the documents are chunked; the lookup of the chunks already stored waits.
    KillScenario("chunking", (_BEFORE_CHUNKING, "LOCK TABLE {chunks} IN ACCESS EXCLUSIVE MODE"), "chunking"),
    KillScenario("embedding", (), "embedding"),
    # Inserting: the first group is embedded; its COPY waits (SHARE conflicts with ROW EXCLUSIVE).
    KillScenario("inserting", (_BEFORE_CHUNKING, "LOCK TABLE {chunks} IN SHARE MODE"), "embedding"),
    # Indexing: every chunk is stored; CREATE INDEX waits (ROW EXCLUSIVE conflicts with its SHARE lock).
    KillScenario("indexing", (_BEFORE_CHUNKING, "LOCK TABLE {chunks} IN ROW EXCLUSIVE MODE"), "indexing"),
    # Completing: membership and documents are written in the final transaction, which waits on the row.
    KillScenario(
        "completing",
        (_BEFORE_CHUNKING, "SELECT 1 FROM ragops.kb_versions WHERE id = {version_id} FOR UPDATE"),
        "completing",
    ),
]


@contextmanager
def held(dsn: str, statement: str) -> Iterator[int]:
    """`statement` executed in an open transaction, held until the block ends; yields the holder's backend pid."""
    with psycopg.connect(dsn) as connection:
        connection.execute(statement)
        row = connection.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        yield int(row[0])
        connection.rollback()


def wait_blocked_by(dsn: str, holder: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 90
    with psycopg.connect(dsn, autocommit=True) as connection:
        while time.monotonic() < deadline:
            row = connection.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))", (holder,)
            ).fetchone()
            if row is not None and row[0] > 0:
                return
            assert process.poll() is None, f"the build ended before it was held: {log.read_text()}"
            time.sleep(0.05)
    raise AssertionError(f"the build was never blocked by the test's lock: {log.read_text()}")


def version_id(dsn: str) -> int:
    with psycopg.connect(dsn) as connection:
        row = connection.execute(
            "SELECT id FROM ragops.kb_versions WHERE kb = %s AND version = %s", (KB, VERSION)
        ).fetchone()
    assert row is not None
    return int(row[0])


def ensure_schema(dsn: str) -> None:
    import asyncio

    async def connect() -> None:
        async with await KnowledgeStore.connect(dsn):
            pass

    asyncio.run(connect())


@pytest.mark.parametrize("scenario", KILL_SCENARIOS, ids=[s.phase for s in KILL_SCENARIOS])
def test_a_build_killed_in_any_phase_is_reported_failed_and_resumes_to_the_same_version(
    pg_dsn: str, other_pg_dsn: str, tmp_path: Path, scenario: KillScenario
) -> None:
    corpus = write_pages(tmp_path / "pages")
    ensure_schema(pg_dsn)
    log = tmp_path / "build.log"
    with running_openai_embeddings_server(DIMENSIONS) as server:
        if not scenario.locks:
            server.script(*[Reply.slow(30) for _ in range(4)])
        with ExitStack() as locks, log.open("wb") as stderr:
            first = scenario.locks[0] if scenario.locks else None
            holder = locks.enter_context(held(pg_dsn, first)) if first else None
            process = subprocess.Popen(cli_build(corpus, server, pg_dsn), stdout=subprocess.DEVNULL, stderr=stderr)
            try:
                if holder is None:
                    deadline = time.monotonic() + 90
                    while not server.requests and time.monotonic() < deadline and process.poll() is None:
                        time.sleep(0.05)
                    assert server.requests, log.read_text()
                else:
                    wait_blocked_by(pg_dsn, holder, process, log)
                    for statement in scenario.locks[1:]:
                        table = chunk_table_name(KB, build_request(corpus, server).space)
                        statement = statement.format(chunks=f'ragops."{table}"', version_id=version_id(pg_dsn))
                        previous = locks
                        locks = ExitStack()
                        holder = locks.enter_context(held(pg_dsn, statement))
                        previous.close()  # the builder moves on, to the next lock
                        wait_blocked_by(pg_dsn, holder, process, log)
                stages = [line for line in log.read_text().splitlines() if not line.startswith(" ")]
                assert stages and stages[-1].startswith(scenario.printed), log.read_text()
                process.send_signal(signal.SIGKILL)
                process.wait(timeout=30)
            finally:
                if process.poll() is None:
                    process.kill()
                locks.close()
        assert process.returncode == -signal.SIGKILL

        # Never stuck: the builder's lease went with it, so the version reads as an interrupted build.
        reported = listed_version(pg_dsn)
        assert reported["status"] == "failed" and "interrupted" in str(reported["error"]), reported

        server.script()  # no more delays
        resumed = subprocess.run(
            [*cli_build(corpus, server, pg_dsn), "--json"], capture_output=True, text=True, timeout=300
        )
        assert resumed.returncode == 0, resumed.stderr
        assert listed_version(pg_dsn)["status"] == "built"
        assert_same_as_a_clean_build(pg_dsn, other_pg_dsn, corpus, server)


# ---- PostgreSQL and the embedding API failing during a build ------------------------------------------------


def test_a_build_cut_off_from_postgresql_fails_clearly_and_resumes(
    pg_dsn: str, other_pg_dsn: str, tmp_path: Path
) -> None:
    """The server ends the builder's session mid-build (a restart, a failover, a proxy cutting the connection)."""
    corpus = write_pages(tmp_path / "pages")
    with running_openai_embeddings_server(DIMENSIONS) as server:
        server.script(Reply(), *[Reply.slow(1.0) for _ in range(200)])
        process = subprocess.Popen(
            cli_build(corpus, server, pg_dsn), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        deadline = time.monotonic() + 90
        while len(server.completed) < 1 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        with psycopg.connect(pg_dsn, autocommit=True) as admin:
            cut = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
            ).fetchall()
        assert cut, "no builder session to cut"
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 1, stderr
        assert "lost PostgreSQL during the build" in stderr and "Traceback" not in stderr
        reported = listed_version(pg_dsn)
        assert reported["status"] == "failed" and "interrupted" in str(reported["error"]), reported

        server.script()
        resumed = subprocess.run(cli_build(corpus, server, pg_dsn), capture_output=True, text=True, timeout=300)
        assert resumed.returncode == 0, resumed.stderr
        assert_same_as_a_clean_build(pg_dsn, other_pg_dsn, corpus, server)


@dataclass(frozen=True)
class EmbeddingFault:
    name: str
    replies: tuple[Reply, ...]
    fails: str | None
    """The error the build fails with, or None when the embedder's retries ride it out."""


EMBEDDING_FAULTS = [
    EmbeddingFault("429 then recovered", (Reply.rate_limited("0"),) * 2, None),
    EmbeddingFault("500 then recovered", (Reply.server_error(500),), None),
    EmbeddingFault("429 persistent", (Reply.rate_limited("0"),) * 50, "429"),
    EmbeddingFault("500 persistent", (Reply(),) + (Reply.server_error(500),) * 50, "500"),
    EmbeddingFault("timeout persistent", (Reply(),) + (Reply.slow(3.0),) * 50, "no response within"),
]


@pytest.mark.parametrize("fault", EMBEDDING_FAULTS, ids=[f.name for f in EMBEDDING_FAULTS])
async def test_embedding_api_failures_during_a_build_are_ridden_out_or_fail_clearly(
    pg_dsn: str, other_pg_dsn: str, tmp_path: Path, fault: EmbeddingFault
) -> None:
    corpus = write_pages(tmp_path / "pages")
    with running_openai_embeddings_server(DIMENSIONS) as server:
        request = build_request(corpus, server)
        server.script(*fault.replies)
        embedder = OpenAIEmbedder(
            server.url, "emb", DIMENSIONS, None, timeout=0.5, max_retries=2, backoff_base=0.01, backoff_max=0.05
        )
        async with await KnowledgeStore.connect(pg_dsn) as store:
            try:
                if fault.fails is None:
                    report = await build_version(store, request, embedder=embedder)
                    assert report.record.status == "built"
                else:
                    with pytest.raises(BuildError, match=fault.fails):
                        await build_version(store, request, embedder=embedder)
                    record = await store.get_version(KB, VERSION)
                    assert record is not None and record.status == "failed" and fault.fails in (record.error or "")
                    server.script()
                    assert (await build_version(store, request, embedder=embedder)).record.status == "built"
            finally:
                await embedder.aclose()
        clean_server_url = server.url
        assert clean_server_url == request.embedding.endpoint
        await _clean_build(other_pg_dsn, request)
    assert version_content(pg_dsn, KB, VERSION) == version_content(other_pg_dsn, KB, VERSION)


async def _clean_build(dsn: str, request: BuildRequest) -> None:
    async with await KnowledgeStore.connect(dsn) as store:
        await build_version(store, request)


def test_a_second_builder_of_the_same_version_is_refused_while_the_first_runs(pg_dsn: str, tmp_path: Path) -> None:
    """Two Jobs (or a Job and a person) building one version: the second is told, and loses nothing."""
    import asyncio

    corpus = write_pages(tmp_path / "pages")
    with running_openai_embeddings_server(DIMENSIONS) as server:
        server.script(*[Reply.slow(0.5) for _ in range(200)])
        process = subprocess.Popen(cli_build(corpus, server, pg_dsn), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

        async def second_builder() -> None:
            async with await KnowledgeStore.connect(pg_dsn) as store:
                with pytest.raises(StoreError, match="is being built by another process"):
                    await build_version(store, build_request(corpus, server))
                assert await store.fail_interrupted_builds(KB) == []  # alive, so not interrupted

        try:
            deadline = time.monotonic() + 90
            while not server.requests and time.monotonic() < deadline:
                time.sleep(0.05)
            asyncio.run(second_builder())
        finally:
            process.kill()
            process.wait()
