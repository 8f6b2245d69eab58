"""Knowledge-base versions end to end on real PostgreSQL + pgvector: build, rebuild, resume, gate, CLI."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest
import yaml

from ragops_runtime.kb.build import BuildError, BuildRequest, EmbeddingSettings, IndexSettings, build_version
from ragops_runtime.kb.evaluation import Thresholds
from ragops_runtime.kb.gate import GateError, evaluate_version
from ragops_runtime.store import ActivationRefused, KnowledgeStore
from ragops_runtime.store.knowledge import chunk_table_name
from tests.support.knowledge import version_content
from tests.support.openai_embeddings import Reply, running_openai_embeddings_server

RAGOPS = str(Path(sys.executable).parent / "ragops")
TOPICS = [
    "glacier",
    "volcano",
    "harbor",
    "orchard",
    "lighthouse",
    "canyon",
    "meadow",
    "reef",
    "tundra",
    "prairie",
    "lagoon",
    "savanna",
    "fjord",
    "delta",
    "plateau",
    "marsh",
    "atoll",
    "dune",
    "geyser",
    "steppe",
]


def write_corpus(root: Path, *, edited: tuple[int, ...] = (), sections: int = 3) -> Path:
    """20 Markdown documents, one per topic, with sections long enough to make several chunks."""
    root.mkdir(parents=True, exist_ok=True)
    for number, topic in enumerate(TOPICS):
        parts = [f"# The {topic} handbook\n"]
        for section in range(sections):
            sentences = " ".join(
                f"The {topic} {word} number {section}-{n} is described in detail for visitors."
                for n, word in enumerate(["trail", "guide", "season", "permit", "shelter", "map"])
            )
            parts.append(f"## {topic.title()} section {section}\n\n{sentences}\n")
        if number in edited:
            parts.append(f"## Update\n\nThe {topic} rules changed this year: bring a {topic} pass.\n")
        (root / f"{topic}.md").write_text("\n".join(parts))
    return root


def golden(path: Path) -> Path:
    cases = [{"id": f"q-{t}", "query": f"{t} trail permit", "relevant": [f"{t}.md"]} for t in TOPICS]
    path.write_text(yaml.safe_dump({"cases": cases}))
    return path


def request(corpus: Path, version: str, **embedding: object) -> BuildRequest:
    return BuildRequest(
        knowledge_base="docs",
        version=version,
        sources=(str(corpus),),
        embedding=EmbeddingSettings(**embedding) if embedding else EmbeddingSettings(dimensions=64),  # type: ignore[arg-type]
    )


async def test_build_stores_chunks_and_manifest(pg_dsn: str, tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus")
    async with await KnowledgeStore.connect(pg_dsn) as store:
        report = await build_version(store, request(corpus, "v1"))
        manifest = report.manifest
        assert report.record.status == "built"
        assert manifest["documents"] == 20 and manifest["chunks"] >= 20
        assert manifest["reusedEmbeddings"] == 0 and manifest["embeddedChunks"] == manifest["chunks"]
        assert (manifest["embeddingModel"], manifest["dimensions"], manifest["chunking"]) == (
            "wordllama-l2-supercat",
            64,
            "recursive/512/64",
        )
        assert manifest["index"] == "hnsw/m=16/ef=64/cosine"
        assert await store.document_ids(report.record) == {f"{t}.md" for t in TOPICS}
        again = await build_version(store, request(corpus, "v1"))
        assert again.already_built and again.manifest == manifest


async def test_rebuild_embeds_only_changed_chunks_and_a_new_model_embeds_all(pg_dsn: str, tmp_path: Path) -> None:
    dims = 32
    with running_openai_embeddings_server(dims) as server:
        settings = {"provider": "openai", "model": "emb-a", "dimensions": dims, "endpoint": server.url, "batch_size": 8}
        async with await KnowledgeStore.connect(pg_dsn) as store:
            full = await build_version(store, request(write_corpus(tmp_path / "v1"), "v1", **settings))
            texts_full = [text for r in server.requests for text in r.inputs]
            assert len(texts_full) == full.manifest["chunks"]

            before = len(server.requests)
            changed = await build_version(store, request(write_corpus(tmp_path / "v2", edited=(3,)), "v2", **settings))
            new_texts = [text for r in server.requests[before:] for text in r.inputs]
            # Only the edited document's new section is new text; every other chunk is shared.
            assert new_texts and all(TOPICS[3] in text for text in new_texts)
            assert changed.manifest["embeddedChunks"] == len(new_texts)
            assert changed.manifest["reusedEmbeddings"] == changed.manifest["chunks"] - len(new_texts)
            assert len(new_texts) / changed.manifest["chunks"] < 0.05

            before = len(server.requests)
            other_model = await build_version(store, request(tmp_path / "v2", "v3", **{**settings, "model": "emb-b"}))
            assert sum(len(r.inputs) for r in server.requests[before:]) == other_model.manifest["chunks"]
            assert other_model.record.chunk_table != changed.record.chunk_table


async def test_failed_build_never_serves_and_a_rerun_completes(pg_dsn: str, tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus")
    with running_openai_embeddings_server(16) as server:
        settings = {"provider": "openai", "model": "emb", "dimensions": 16, "endpoint": server.url, "batch_size": 4}
        server.script(Reply(), Reply.error(400, "input too long"))
        async with await KnowledgeStore.connect(pg_dsn) as store:
            with pytest.raises(BuildError, match="input too long"):
                await build_version(store, request(corpus, "v1", **settings))
            record = await store.get_version("docs", "v1")
            assert record is not None and record.status == "failed" and "input too long" in (record.error or "")
            with pytest.raises(ActivationRefused, match="is failed, not built"):
                await store.activate("docs", "v1", force=True)
            report = await build_version(store, request(corpus, "v1", **settings))
            assert report.record.status == "built"


async def test_dimension_mismatch_from_the_endpoint_fails_the_build(pg_dsn: str, tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus")
    with running_openai_embeddings_server(48) as server:
        async with await KnowledgeStore.connect(pg_dsn) as store:
            with pytest.raises(BuildError, match="dimension mismatch"):
                await build_version(
                    store, request(corpus, "v1", provider="openai", model="m", dimensions=16, endpoint=server.url)
                )


async def test_unreachable_endpoint_fails_the_build(pg_dsn: str, tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus")
    async with await KnowledgeStore.connect(pg_dsn) as store:
        with pytest.raises(BuildError, match="cannot reach embedding endpoint"):
            await build_version(
                store,
                request(corpus, "v1", provider="openai", model="m", dimensions=16, endpoint="http://127.0.0.1:9/v1"),
            )


def test_killed_build_resumes_without_reembedding_stored_chunks(pg_dsn: str, tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus", sections=12)
    dims = 16
    with running_openai_embeddings_server(dims) as server:
        server.script(*[Reply.slow(0.05) for _ in range(10_000)])
        args = [
            RAGOPS,
            "kb",
            "build",
            "--dsn",
            pg_dsn,
            "--kb",
            "docs",
            "--version",
            "v1",
            "--source",
            str(corpus),
            "--embedding-provider",
            "openai",
            "--embedding-model",
            "m",
            "--embedding-dimensions",
            str(dims),
            "--embedding-endpoint",
            server.url,
            "--batch-size",
            "8",
            "--concurrency",
            "1",
            "--chunk-size",
            "64",
            "--chunk-overlap",
            "8",
        ]
        process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        table = chunk_table_name("docs", _space(dims))
        deadline = time.monotonic() + 60
        stored = 0
        while time.monotonic() < deadline and stored == 0:
            time.sleep(0.1)
            stored = _count_rows(pg_dsn, table)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert stored > 0, process.stderr.read().decode() if process.stderr else ""
        assert _status(pg_dsn) == "building"  # not built, so never activatable

        first_run = {text for r in server.requests for text in r.inputs}
        server.script()  # no more delays
        before = len(server.requests)
        result = subprocess.run([*args, "--json"], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        manifest = json.loads(result.stdout)
        second_run = [text for r in server.requests[before:] for text in r.inputs]
        assert _status(pg_dsn) == "built"
        assert manifest["reusedEmbeddings"] >= stored
        assert len(second_run) + stored <= len(first_run | set(second_run)) + 8  # at most one batch in flight lost
        assert len(second_run) < manifest["chunks"]


def _space(dims: int):  # type: ignore[no-untyped-def]
    from ragops_runtime.store import EmbeddingSpace

    return EmbeddingSpace(provider="openai", model="m", dimensions=dims)


def _count_rows(dsn: str, table: str) -> int:
    with psycopg.connect(dsn) as connection:
        try:
            row = connection.execute(
                psycopg.sql.SQL("SELECT count(*) FROM {}").format(psycopg.sql.Identifier("ragops", table))
            ).fetchone()
        except psycopg.errors.UndefinedTable:
            return 0
        return int(row[0]) if row else 0


def _status(dsn: str) -> str:
    with psycopg.connect(dsn) as connection:
        row = connection.execute(
            "SELECT status FROM ragops.kb_versions WHERE kb = 'docs' AND version = 'v1'"
        ).fetchone()
        return str(row[0]) if row else "missing"


async def test_gate_scores_the_serving_path_and_records_the_verdict(pg_dsn: str, tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus")
    cases = golden(tmp_path / "golden.yaml")
    lenient = Thresholds(precision_at_k=0.1, recall_at_k=0.9, mrr=0.8, ndcg_at_k=0.8)
    async with await KnowledgeStore.connect(pg_dsn) as store:
        record = (await build_version(store, request(corpus, "v1"))).record
        report = await evaluate_version(store, "docs", "v1", cases, k=3, thresholds=lenient)
        assert report.passed, report.failed_metrics
        assert report.metrics["recallAtK"] == 1.0 and report.metrics["mrr"] == 1.0
        stored = await store.get_version("docs", "v1")
        assert stored is not None and stored.gate_passed is True and stored.gate is not None
        assert stored.gate["metrics"] == report.metrics and stored.gate["hybrid"] is True
        await store.activate("docs", "v1")

        strict = Thresholds(precision_at_k=0.9, recall_at_k=0.9, mrr=0.8, ndcg_at_k=0.8)
        failing = await evaluate_version(store, "docs", "v1", cases, k=3, thresholds=strict)
        assert not failing.passed and failing.failed_metrics[0].startswith("precisionAtK=0.333<0.9")
        assert record.id == (await store.get_version("docs", "v1")).id  # type: ignore[union-attr]


async def test_gate_refuses_a_golden_set_naming_unknown_documents(pg_dsn: str, tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus")
    path = tmp_path / "golden.yaml"
    path.write_text(yaml.safe_dump([{"id": "q1", "query": "glacier", "relevant": ["glacier.md", "missing.md"]}]))
    async with await KnowledgeStore.connect(pg_dsn) as store:
        await build_version(store, request(corpus, "v1"))
        with pytest.raises(GateError, match=re.escape("case 'q1' names unknown document(s) 'missing.md'")):
            await evaluate_version(store, "docs", "v1", path, k=3, thresholds=Thresholds(0.1, 0.1, 0.1, 0.1))
        with pytest.raises(GateError, match="has no version 'v2'"):
            await evaluate_version(store, "docs", "v2", path, k=3, thresholds=Thresholds(0.1, 0.1, 0.1, 0.1))


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RAGOPS, "kb", *args], capture_output=True, text=True, timeout=180, env=env)


@pytest.mark.parametrize("mode", ["dsn", "embedded"])
def test_cli_build_eval_activate_rollback_list_gc(pg_dsn: str, tmp_path: Path, mode: str) -> None:
    env = {**os.environ}
    if mode == "embedded":
        data = tmp_path / "data"
        data.mkdir()
        os.chmod(tmp_path, 0o755)
        env["RAGOPS_DATA_DIR"] = str(data)
        target = ["--embedded"]
    else:
        target = ["--dsn", pg_dsn]
    cases = golden(tmp_path / "golden.yaml")
    lenient = ["--k", "3", "--min-precision", "0.1"]
    for number, edited in enumerate([(), (1,), (2,)], start=1):
        corpus = write_corpus(tmp_path / f"c{number}", edited=edited)
        built = _cli(
            "build",
            *target,
            "--kb",
            "docs",
            "--version",
            f"v{number}",
            "--source",
            str(corpus),
            "--embedding-dimensions",
            "64",
            "--json",
            env=env,
        )
        assert built.returncode == 0, built.stderr
        assert json.loads(built.stdout)["version"] == f"v{number}"
        evaluated = _cli(
            "eval",
            *target,
            "--kb",
            "docs",
            "--version",
            f"v{number}",
            "--golden",
            str(cases),
            *lenient,
            "--json",
            env=env,
        )
        assert evaluated.returncode == 0, evaluated.stderr
        report = json.loads(evaluated.stdout)
        assert report["passed"] is True and len(report["cases"]) == 20
        assert report["cases"][0]["retrieved"][0] == report["cases"][0]["relevant"][0]
        activated = _cli("activate", *target, "--kb", "docs", "--version", f"v{number}", env=env)
        assert activated.returncode == 0, activated.stderr

    failing = _cli("eval", *target, "--kb", "docs", "--version", "v3", "--golden", str(cases), "--k", "3", env=env)
    assert failing.returncode == 1 and "gate: FAILED (precisionAtK=0.333<0.600" in failing.stdout
    refused = _cli("activate", *target, "--kb", "docs", "--version", "v3", env=env)
    assert refused.returncode == 0  # already active: a no-op, not an error

    rolled = _cli("rollback", *target, "--kb", "docs", "--reason", "p95 breach", env=env)
    assert rolled.returncode == 0 and "rolled back to v2" in rolled.stdout
    listed = json.loads(_cli("list", *target, "--kb", "docs", "--json", env=env).stdout)
    assert (listed["active"], listed["previous"]) == ("v2", "v3")
    # Every verdict is listed with what it was judged with: v3 passed a lenient gate, then failed the default.
    verdicts = listed["versions"][2]["verdicts"]
    assert [(v["passed"], v["k"], v["thresholds"]["precisionAtK"]) for v in verdicts] == [
        (True, 3, 0.1),
        (False, 3, 0.6),
    ]
    assert verdicts[0]["goldenDigest"] == verdicts[1]["goldenDigest"] and verdicts[1]["metrics"]["precisionAtK"] < 0.6
    # v1 passed only the lenient gate: activation that requires the default precision is refused.
    strict = _cli("activate", *target, "--kb", "docs", "--version", "v1", "--k", "3", "--min-precision", "0.6", env=env)
    assert strict.returncode == 1 and "no passing verdict made with the required gate (k=3" in strict.stderr
    # A second rollback goes further back (issue 16, item 5), never to v3 again.
    again = _cli("rollback", *target, "--kb", "docs", "--reason", "still breaching", env=env)
    assert again.returncode == 0 and "rolled back to v1" in again.stdout
    collected = _cli("gc", *target, "--kb", "docs", "--keep", "0", env=env)
    assert collected.returncode == 0 and "dropped v3" in collected.stdout
    listed = json.loads(_cli("list", *target, "--kb", "docs", "--json", env=env).stdout)
    assert [v["version"] for v in listed["versions"]] == ["v1", "v2"]


def test_cli_reports_bad_input_clearly(pg_dsn: str, tmp_path: Path) -> None:
    missing = _cli("build", "--dsn", pg_dsn, "--kb", "docs", "--version", "v1", "--source", str(tmp_path / "nope"))
    assert missing.returncode == 1 and "nope" in missing.stderr and "Traceback" not in missing.stderr
    no_source = _cli("build", "--dsn", pg_dsn, "--kb", "docs", "--version", "v1")
    assert no_source.returncode == 2 and "--source" in no_source.stderr
    both = _cli("list", "--dsn", pg_dsn, "--embedded", "--kb", "docs")
    assert both.returncode == 2 and "either --embedded or --dsn" in both.stderr
    overlap = _cli(
        "build",
        "--dsn",
        pg_dsn,
        "--kb",
        "docs",
        "--version",
        "v1",
        "--source",
        str(tmp_path),
        "--chunk-size",
        "64",
        "--chunk-overlap",
        "64",
    )
    assert overlap.returncode == 2 and "--chunk-overlap" in overlap.stderr
    unreachable = _cli("list", "--dsn", "postgresql://u:hunter2@127.0.0.1:1/x?connect_timeout=2", "--kb", "docs")
    assert unreachable.returncode == 1 and "cannot connect to PostgreSQL" in unreachable.stderr
    assert "hunter2" not in unreachable.stderr


def test_eval_checks_generated_answers_when_asked(pg_dsn: str, tmp_path: Path) -> None:
    from ragops_runtime import sample
    from tests.support.anthropic_messages import DEFAULT_API_KEY, Reply, running_anthropic_server

    built = _cli("build", "--dsn", pg_dsn, "--kb", "sample", "--version", "v1", "--source", str(sample.CORPUS_DIR))
    assert built.returncode == 0, built.stderr
    gate = ["--k", "3", "--min-precision", "0.3", "--min-recall", "0.7", "--min-mrr", "0.6", "--min-ndcg", "0.6"]
    check_answers = [
        "eval",
        "--dsn",
        pg_dsn,
        "--kb",
        "sample",
        "--version",
        "v1",
        "--golden",
        str(sample.GOLDEN_SET),
        *gate,
        "--check-answers",
        "--min-answer-pass-rate",
    ]
    with running_anthropic_server() as fake:
        env = {**os.environ, "ANTHROPIC_API_KEY": DEFAULT_API_KEY, "RAGOPS_ANTHROPIC_BASE_URL": fake.url}
        cases = yaml.safe_load(sample.GOLDEN_SET.read_text())["cases"]
        fake.script(*[Reply.answer("Per [1]: " + "; ".join(case["answerContains"])) for case in cases])
        result = _cli(
            *check_answers,
            "0.0",
            "--json",
            env=env,
        )
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        checked = [case for case in report["cases"] if "answerPassed" in case]
        assert len(checked) == 30 == len([r for r in fake.requests if not r.streaming])
        assert report["metrics"]["answerPassRate"] == 1.0 and all(case["answerPassed"] for case in checked)
        first = fake.requests[0].user_text
        assert cases[0]["query"] in first and "[1] (source:" in first  # the question and numbered context

        fake.script(*[Reply.server_error(500)] * 30)
        failing = _cli(
            *check_answers,
            "0.5",
            env=env,
        )
        assert failing.returncode == 1 and "answerPassRate=0.000<0.500" in failing.stdout
    no_key = _cli(
        "eval",
        "--dsn",
        pg_dsn,
        "--kb",
        "sample",
        "--version",
        "v1",
        "--golden",
        str(sample.GOLDEN_SET),
        "--check-answers",
        env={k: v for k, v in os.environ.items() if "ANTHROPIC" not in k},
    )
    assert no_key.returncode == 2 and "needs $ANTHROPIC_API_KEY" in no_key.stderr


async def test_a_renamed_file_reuses_its_stored_embeddings(pg_dsn: str, tmp_path: Path) -> None:
    """Issue 16, item 1: a text already embedded under another chunk key (a renamed or moved file)."""
    corpus = write_corpus(tmp_path / "v1")
    async with await KnowledgeStore.connect(pg_dsn) as store:
        first = await build_version(store, request(corpus, "v1"))
        (corpus / "glacier.md").rename(corpus / "ice-sheet.md")
        moved = await build_version(store, request(corpus, "v2"))
        assert moved.record.status == "built"
        assert await store.document_ids(moved.record) == (await store.document_ids(first.record) - {"glacier.md"}) | {
            "ice-sheet.md"
        }
        # Every chunk of the moved file has a new key (its document id changed) but a text embedded before.
        assert moved.manifest["embeddedChunks"] == 0
        assert moved.manifest["reusedEmbeddings"] == moved.manifest["chunks"]


async def test_new_index_parameters_reuse_every_embedding(pg_dsn: str, tmp_path: Path) -> None:
    """Issue 16, item 2: vectors depend on the text and the model, not on the HNSW index built over them."""
    corpus = write_corpus(tmp_path / "corpus")
    with running_openai_embeddings_server(16) as server:
        settings = {"provider": "openai", "model": "emb", "dimensions": 16, "endpoint": server.url, "batch_size": 8}
        async with await KnowledgeStore.connect(pg_dsn) as store:
            first = await build_version(store, request(corpus, "v1", **settings))
            before = len(server.requests)
            retuned = await build_version(
                store, replace(request(corpus, "v2", **settings), index=IndexSettings(m=8, ef_construction=32))
            )
            assert retuned.record.chunk_table != first.record.chunk_table  # an index of its own
            assert len(server.requests) == before and retuned.manifest["embeddedChunks"] == 0
            assert retuned.manifest["reusedEmbeddings"] == retuned.manifest["chunks"] == first.manifest["chunks"]
            assert _embeddings(pg_dsn, retuned.record.chunk_table) == _embeddings(pg_dsn, first.record.chunk_table)

            # Another model (or another endpoint serving a model of that name) shares nothing.
            other = await build_version(
                store,
                replace(
                    request(corpus, "v3", **{**settings, "model": "emb-2"}),
                    index=IndexSettings(m=8, ef_construction=32),
                ),
            )
            assert other.manifest["embeddedChunks"] == other.manifest["chunks"]


def _embeddings(dsn: str, table: str) -> dict[str, bytes]:
    """chunk key -> the stored vector's bytes, for comparing two chunk tables."""
    with psycopg.connect(dsn) as connection:
        rows = connection.execute(
            psycopg.sql.SQL("SELECT chunk_key, embedding::text FROM {}").format(psycopg.sql.Identifier("ragops", table))
        ).fetchall()
    return {key: vector.encode() for key, vector in rows}


def write_site(root: Path, footers: dict[str, set[int]], *, edits: dict[int, str] | None = None) -> Path:
    """10 HTML pages with site navigation; `footers` maps a footer line to the pages carrying it."""
    root.mkdir(parents=True, exist_ok=True)
    for number, topic in enumerate(TOPICS[:10]):
        body = " ".join(
            f"<p>The {topic} {word} number {n} is described for visitors of the {topic}.</p>"
            for n, word in enumerate(["trail", "guide", "season", "permit", "shelter"])
        )
        extra = f"<p>{(edits or {}).get(number, '')}</p>" if number in (edits or {}) else ""
        footer = "".join(f"<p>{line}</p>" for line, pages in sorted(footers.items()) if number in pages)
        (root / f"{topic}.html").write_text(
            f"<html><head><title>{topic}</title></head><body><nav><a>Home</a> <a>Next</a></nav>"
            f"<main><h1>The {topic} page</h1><h2>Visiting</h2>{body}{extra}</main>"
            f"<div class='legal'>{footer}</div></body></html>"
        )
    return root


async def test_an_incremental_build_equals_a_build_from_nothing(pg_dsn: str, other_pg_dsn: str, tmp_path: Path) -> None:
    """Issue 16, item 3: unchanged files are not converted nor chunked again, with the same result.

    Repeated blocks are found across all of a source's pages (5 of these 10), so editing one page
    changes what is boilerplate on others: a footer on 5 pages drops below the threshold when one
    page loses it (and is kept on the other 4), another reaches it when one more page gets it.
    """
    licence, support = "All content licensed CC-BY 4.0 by Example Corp.", "Questions? Ask the rangers."
    site = tmp_path / "site"
    write_site(site, {licence: {0, 1, 2, 3, 4}, support: {5, 6, 7, 8}})
    async with await KnowledgeStore.connect(pg_dsn) as store:
        first = await build_version(store, request(site, "v1"))
        assert first.manifest["boilerplate"]["repeatedBlocks"] == 5  # the licence; support is on 4 pages
        write_site(site, {licence: {1, 2, 3, 4}, support: {5, 6, 7, 8, 9}}, edits={7: "The rules changed."})
        second = await build_version(store, request(site, "v2"))
    async with await KnowledgeStore.connect(other_pg_dsn) as store:
        scratch = await build_version(store, request(site, "v2"))

    # Pages 0, 7 and 9 changed on disk: the other 7 came from the conversion cache.
    assert (second.manifest["reusedExtractions"], scratch.manifest["reusedExtractions"]) == (7, 0)
    # The licence (pages 1-4) is content now, the support line (5-9) boilerplate: only the pages
    # whose cleaned text is the same as in v1 reuse their chunks, page 0 (it lost the licence, which
    # was boilerplate anyway) and page 9 (it got the support line, which is boilerplate now).
    assert second.manifest["reusedDocuments"] == 2 and second.manifest["boilerplate"]["repeatedBlocks"] == 5
    incremental = version_content(pg_dsn, "docs", "v2")
    assert incremental == version_content(other_pg_dsn, "docs", "v2")
    assert second.manifest["contentDigest"] == scratch.manifest["contentDigest"] != first.manifest["contentDigest"]
    assert any(licence in chunk[4] for chunk in incremental.chunks.values())
    assert not any(support in chunk[4] for chunk in incremental.chunks.values())

    # An edit that changes no page's boilerplate: the 9 other pages keep their chunks, unchunked.
    write_site(site, {licence: {1, 2, 3, 4}, support: {5, 6, 7, 8, 9}}, edits={7: "The rules changed again."})
    async with await KnowledgeStore.connect(pg_dsn) as store:
        third = await build_version(store, request(site, "v3"))
    async with await KnowledgeStore.connect(other_pg_dsn) as store:
        await build_version(store, request(site, "v3"))
    assert (third.manifest["reusedExtractions"], third.manifest["reusedDocuments"]) == (9, 9)
    assert version_content(pg_dsn, "docs", "v3") == version_content(other_pg_dsn, "docs", "v3")


def test_eval_exit_codes_tell_a_failed_gate_from_an_evaluation_error(pg_dsn: str, tmp_path: Path) -> None:
    """Issue 16, item 6: 0 passed, 1 gate failed (a verdict), 3 no verdict (the evaluation could not run)."""
    corpus, cases = write_corpus(tmp_path / "corpus"), golden(tmp_path / "golden.yaml")
    with running_openai_embeddings_server(16) as server:
        built = _cli(
            "build", "--dsn", pg_dsn, "--kb", "docs", "--version", "v1", "--source", str(corpus),
            "--embedding-provider", "openai", "--embedding-model", "emb", "--embedding-dimensions", "16",
            "--embedding-endpoint", server.url,
        )  # fmt: skip
        assert built.returncode == 0, built.stderr
        evaluate = ["eval", "--dsn", pg_dsn, "--kb", "docs", "--golden", str(cases), "--k", "3"]
        lenient = ["--min-precision", "0.1", "--min-recall", "0.1", "--min-mrr", "0.1", "--min-ndcg", "0.1"]
        passed = _cli(*evaluate, "--version", "v1", *lenient)
        assert passed.returncode == 0 and "gate: passed" in passed.stdout, passed.stderr
        failed = _cli(*evaluate, "--version", "v1")
        assert failed.returncode == 1 and "gate: FAILED (" in failed.stdout
    # The embedding endpoint is gone now: no verdict, and none recorded.
    down = _cli(*evaluate, "--version", "v1")
    assert down.returncode == 3 and "error:" in down.stderr and "Traceback" not in down.stderr
    unknown = _cli(*evaluate, "--version", "v9")
    assert unknown.returncode == 3 and "has no version 'v9'" in unknown.stderr
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(yaml.safe_dump({"cases": [{"id": "q", "query": "x", "relevant": ["missing.md"]}]}))
    mismatched = _cli("eval", "--dsn", pg_dsn, "--kb", "docs", "--version", "v1", "--golden", str(wrong))
    assert mismatched.returncode == 3 and "names unknown document(s) 'missing.md'" in mismatched.stderr
    unreachable = _cli(
        "eval", "--dsn", "postgresql://u@127.0.0.1:1/x?connect_timeout=2", "--kb", "docs", "--version", "v1",
        "--golden", str(cases),
    )  # fmt: skip
    assert unreachable.returncode == 3 and "cannot connect to PostgreSQL" in unreachable.stderr
    usage = _cli("eval", "--dsn", pg_dsn, "--kb", "docs", "--golden", str(cases))
    assert usage.returncode == 2 and "--version" in usage.stderr
    listed = json.loads(_cli("list", "--dsn", pg_dsn, "--kb", "docs", "--json").stdout)
    assert [v["passed"] for v in listed["versions"][0]["verdicts"]] == [True, False]
    documented = _cli("eval", "--help")
    assert all(f"{code}  " in documented.stdout for code in "0123")
