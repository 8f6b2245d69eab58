"""Benchmark (issue 7, item 2): what a new knowledge-base version costs when 1 % of its documents changed.

Measured in one run on the embedded PostgreSQL + pgvector, with the built-in hashing embedder:

- full: a first build of the whole corpus (ingest, chunk, embed, COPY, HNSW + GIN index, manifest);
- incremental: a new version with 1 % of the documents edited, on ragops' shared chunk table
  (median of three, each editing a different 1 %): wall time, texts embedded and embedding requests;
- per-version table: the alternative layout's floor, i.e. copying every row (embeddings already
  computed, so no embedding cost at all) into a fresh table and building its HNSW index, which
  is what a table per version must do for every version.

It also times filtered retrieval on the shared table (the membership filter) against the same
query on the per-version table (no filter). Ratios are against the full build of this run.

Then the same on a real HTML corpus (issue 16, item 3), where converting HTML used to dominate a
rebuild: the 490 pages of Debian's python3.11-doc (bench/real_corpus.py), built with the default
settings (static embedder, recursive chunks); then three new versions, each editing another 1 % of
the pages (5 pages, a paragraph added to each, on top of the previous edits): wall time of each
against the full build, and how many pages were converted and chunked again.
Writes bench/results/kb_incremental.json (format: bench/common.py).

    .venv/bin/python -m bench.kb_incremental [--quick] [--chunks 100000] [--only jsonl|html]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from psycopg import sql

from bench.common import (
    CHUNKS_PER_DOCUMENT,
    DIMENSIONS,
    HNSW_EF_CONSTRUCTION,
    HNSW_M,
    INDEX_BUILD_MEMORY,
    TOP_K,
    Postgres,
    Row,
    build_request,
    load_average,
    machine,
    median,
    print_rows,
    query_texts,
    result_document,
    write_corpus,
    write_result,
)
from bench.real_corpus import HTML_ROOT
from ragops_runtime.embedding import HashingEmbedder
from ragops_runtime.kb.build import BuildRequest, build_version
from ragops_runtime.store import KnowledgeStore
from ragops_runtime.store.identifiers import SCHEMA

EDITIONS = (2, 3, 4)


async def per_version_table_seconds(store: KnowledgeStore, chunk_table: str) -> float:
    """COPY-equivalent of every row into a fresh table plus its HNSW index: the alternative's floor."""
    source = sql.Identifier(SCHEMA, chunk_table)
    target = sql.Identifier(SCHEMA, "bench_per_version")
    conn = store.connection
    await conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(target))
    started = time.perf_counter()
    await conn.execute(
        sql.SQL("CREATE TABLE {t} AS SELECT id, document_id, text, embedding FROM {s}").format(t=target, s=source)
    )
    async with conn.transaction():
        await conn.execute(sql.SQL("SET LOCAL maintenance_work_mem = {}").format(sql.Literal(INDEX_BUILD_MEMORY)))
        await conn.execute(
            sql.SQL(
                "CREATE INDEX ON {t} USING hnsw (embedding vector_cosine_ops) WITH (m = {m}, ef_construction = {ef})"
            ).format(t=target, m=sql.Literal(HNSW_M), ef=sql.Literal(HNSW_EF_CONSTRUCTION))
        )
    return time.perf_counter() - started


async def query_latencies(store: KnowledgeStore, version: str, queries: int) -> tuple[float, float]:
    """Median seconds of a top-k query: on the shared table with its membership filter, and on a table alone."""
    record = await store.get_version("bench", version)
    assert record is not None
    embedder = HashingEmbedder(dimensions=DIMENSIONS)
    vectors = [np.asarray(embedder.embed_one(text), dtype=np.float32) for text in query_texts(queries)]
    shared, alone = [], []
    target = sql.Identifier(SCHEMA, "bench_per_version")
    for vector in vectors:
        started = time.perf_counter()
        await store.vector_search(record, vector, TOP_K)
        shared.append(time.perf_counter() - started)
        started = time.perf_counter()
        async with store.connection.transaction():
            await store.connection.execute("SET LOCAL hnsw.ef_search = 40")
            await store.connection.execute(
                sql.SQL("SELECT id FROM {t} ORDER BY embedding <=> %s LIMIT %s").format(t=target), (vector, TOP_K)
            )
        alone.append(time.perf_counter() - started)
    return median(shared), median(alone)


async def measure(pg: Postgres, chunks: int) -> list[Row]:
    documents = max(chunks // CHUNKS_PER_DOCUMENT, 100)
    with pg.database() as dsn:
        async with await KnowledgeStore.connect(dsn) as store:
            corpus = pg.work / "v1.jsonl"
            write_corpus(corpus, documents)
            started = time.perf_counter()
            full = await build_version(store, build_request(corpus, "v1"))
            full_seconds = time.perf_counter() - started
            print(f"full build: {full.manifest['chunks']} chunks in {full_seconds:.1f}s", flush=True)

            seconds, embedded, requests = [], [], []
            for edition in EDITIONS:
                changed = set(range(edition, documents, 100))  # 1 % of the documents, different each time
                corpus = pg.work / f"v{edition}.jsonl"
                write_corpus(corpus, documents, edited=changed, edition=edition)
                started = time.perf_counter()
                report = await build_version(store, build_request(corpus, f"v{edition}"))
                seconds.append(time.perf_counter() - started)
                embedded.append(report.manifest["embeddedChunks"])
                requests.append(report.embedding_requests)
                print(
                    f"1% rebuild v{edition}: {embedded[-1]} chunks embedded in {seconds[-1]:.1f}s",
                    flush=True,
                )

            alternative = await per_version_table_seconds(store, full.record.chunk_table)
            print(f"per-version table (copy + HNSW, no embedding): {alternative:.1f}s", flush=True)
            shared_query, alone_query = await query_latencies(store, f"v{EDITIONS[-1]}", queries=200)

    size = f"{full.manifest['chunks'] // 1000}k chunks"
    full_name = f"{size}: full build, wall"
    query_alone = f"{size}: top-{TOP_K} query, a table of its own (median of 200)"
    repeats = len(EDITIONS)
    return [
        Row(full_name, full_seconds, "s"),
        Row(f"{size}, 1 % of documents changed: new version, wall", median(seconds), "s", full_name, None, repeats),
        Row(f"{size}: full build, texts embedded", full.manifest["embeddedChunks"], "texts"),
        Row(
            f"{size}, 1 % changed: texts embedded",
            median(embedded),
            "texts",
            f"{size}: full build, texts embedded",
            None,
            repeats,
        ),
        Row(f"{size}: full build, embedding requests", full.embedding_requests, "requests"),
        Row(
            f"{size}, 1 % changed: embedding requests",
            median(requests),
            "requests",
            f"{size}: full build, embedding requests",
            None,
            repeats,
        ),
        Row(f"{size}: a table per version instead, copy + HNSW only (no embedding)", alternative, "s", full_name),
        Row(query_alone, alone_query * 1000, "ms", repeats=200),
        Row(
            f"{size}: top-{TOP_K} query, shared table with membership filter (median of 200)",
            shared_query * 1000,
            "ms",
            query_alone,
            None,
            200,
        ),
    ]


HTML_EDIT_SHARE = 0.01


def edit_pages(pages: list[Path], edition: int) -> list[Path]:
    """Adds a paragraph to another 1 % of `pages` (at least one), a different set each edition."""
    count = max(1, round(len(pages) * HTML_EDIT_SHARE))
    step = len(pages) // count
    chosen = [pages[(index * step + edition) % len(pages)] for index in range(count)]
    for page in chosen:
        html = page.read_text(encoding="utf-8")
        note = f"<p>Edition {edition} of {page.stem}: revised; the example below now uses keyword arguments.</p>"
        # In the page's content (the first paragraph after the main role), not in its navigation.
        cut = html.find("</p>", html.find('role="main"'))
        assert cut >= 0 and 'role="main"' in html, f"{page} has no paragraph to edit"
        page.write_text(html[: cut + 4] + note + html[cut + 4 :], encoding="utf-8")
    return chosen


async def measure_html(pg: Postgres) -> list[Row]:
    corpus = pg.work / "python3.11-doc"
    pages: list[Path] = []
    for page in sorted(HTML_ROOT.glob("*/*.html")):
        target = corpus / page.relative_to(HTML_ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(page, target)
        pages.append(target)

    def request(version: str) -> BuildRequest:
        # One glob, as bench/real_corpus.py builds it; default chunking and embedder.
        return BuildRequest(knowledge_base="pydocs", version=version, sources=(str(corpus / "*" / "*.html"),))

    with pg.database("html") as dsn:
        async with await KnowledgeStore.connect(dsn) as store:
            started = time.perf_counter()
            full = await build_version(store, request("v1"))
            full_seconds = time.perf_counter() - started
            print(f"html full build: {len(pages)} pages, {full.manifest['chunks']} chunks in {full_seconds:.1f}s")
            seconds, converted, chunked = [], [], []
            for edition in EDITIONS:
                edited = edit_pages(pages, edition)
                started = time.perf_counter()
                report = await build_version(store, request(f"v{edition}"))
                seconds.append(time.perf_counter() - started)
                converted.append(report.manifest["documents"] - report.manifest["reusedExtractions"])
                chunked.append(report.manifest["documents"] - report.manifest["reusedDocuments"])
                assert report.manifest["embeddedChunks"] > 0, "the edits changed no chunk: they missed the content"
                print(
                    f"html 1% rebuild v{edition}: {len(edited)} pages edited, {converted[-1]} converted, "
                    f"{chunked[-1]} chunked, {report.manifest['embeddedChunks']} chunks embedded in {seconds[-1]:.2f}s",
                    flush=True,
                )
    name = f"python3.11-doc HTML ({len(pages)} pages): full build, wall"
    repeats = len(EDITIONS)
    return [
        Row(name, full_seconds, "s"),
        Row("python3.11-doc HTML, 1 % of pages edited: new version, wall", median(seconds), "s", name, None, repeats),
        Row("python3.11-doc HTML, 1 % edited: pages converted again", median(converted), "pages", repeats=repeats),
        Row("python3.11-doc HTML, 1 % edited: pages chunked again", median(chunked), "pages", repeats=repeats),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5 000 chunks; results to a temp directory")
    parser.add_argument("--chunks", type=int, default=None)
    parser.add_argument("--only", choices=("jsonl", "html"), default=None, help="Run one of the two corpora.")
    args = parser.parse_args()
    chunks = args.chunks or (5_000 if args.quick else 100_000)
    load_before = load_average()
    started = datetime.now(UTC)
    with Postgres() as pg:
        rows = asyncio.run(measure(pg, chunks)) if args.only != "html" else []
        if args.only != "jsonl":
            if not (HTML_ROOT / "library" / "json.html").exists():
                raise SystemExit(f"the HTML corpus is missing ({HTML_ROOT}): run `bash tools/bench-corpus.sh`")
            rows += asyncio.run(measure_html(pg))
        document: dict[str, Any] = result_document(
            "kb_incremental", machine(pg.version), rows, started, load=f"{load_before} -> {load_average()}"
        )
    print_rows(document)
    print(f"wrote {write_result(document, quick=args.quick)}")


if __name__ == "__main__":
    main()
