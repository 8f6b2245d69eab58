"""Benchmark (issue 17, item 4): retrieval quality and speed on a real corpus that no one here wrote.

Corpus: the Python 3.11 documentation from Debian's python3.11-doc package, the 490 HTML pages under
/usr/share/doc/python3.11/html/*/ (library, tutorial, howto, reference, faq, c-api, whatsnew, ...);
`make bench` installs the package (tools/bench-corpus.sh). Golden set: bench/golden/python-docs.yaml,
60 questions written from the pages, each naming its relevant pages, split into dev (20, the only
ones any retrieval setting may be tuned on) and test (40, held out).

Systems, all measured in this run over the same pages:

- bm25s over whole pages: the peer baseline, plain Okapi BM25 (bm25s defaults, English stop words,
  Snowball stemming) over each page's text as ragops' ingestion extracts it;
- ragops, one version built with the default settings (static embedder, recursive 512/64 chunks),
  queried three ways: BM25 only (`text_search`), vector only (`vector_search`) and hybrid
  (`retrieve`, the default path of the runtime and of the golden-set gate).

Metrics are per page, as the golden set is: a chunk list becomes the list of its pages, first
occurrence kept (50 chunks are retrieved, enough for 10 distinct pages). recall@5, MRR@10 and nDCG@10
per split. Speed: the build's chunks per second (ingest, clean, chunk, embed, store, index), and the
in-process query latency (query embedding + hybrid retrieval, top 20) over the 60 questions, repeated.

    .venv/bin/python -m bench.real_corpus [--quick] [--embedding-provider static|hashing] [--rounds 5]

--quick times one round only and writes to a temp directory.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from psycopg_pool import AsyncConnectionPool

from bench.common import Postgres, Row, load_average, machine, percentile, print_rows, result_document, write_result
from ragops_runtime.embedding import make_embedder
from ragops_runtime.kb.build import BuildRequest, EmbeddingSettings, build_version
from ragops_runtime.kb.evaluation import ndcg_at_k, recall_at_k, reciprocal_rank
from ragops_runtime.kb.ingest import load_documents
from ragops_runtime.retrieval.hybrid import retrieve
from ragops_runtime.store import KnowledgeStore, VersionRecord

HTML_ROOT = Path("/usr/share/doc/python3.11/html")
GOLDEN = Path(__file__).parent / "golden" / "python-docs.yaml"
CORPUS = "python3.11-doc"
RETRIEVED_CHUNKS = 50
SERVED_TOP_K = 20
DEFAULT_MODELS = {"static": ("wordllama-l2-supercat", 256), "hashing": ("hashing-v1", 384)}


@dataclass(frozen=True)
class Case:
    id: str
    split: str
    query: str
    relevant: tuple[str, ...]


@dataclass(frozen=True)
class Scores:
    recall_at_5: float
    mrr_at_10: float
    ndcg_at_10: float


def load_cases(path: Path = GOLDEN) -> list[Case]:
    raw = yaml.safe_load(path.read_text())["cases"]
    return [Case(c["id"], c["split"], c["query"], tuple(c["relevant"])) for c in raw]


def score(cases: Sequence[Case], ranked_pages: dict[str, list[str]]) -> Scores:
    """Mean page-level metrics; `ranked_pages` maps a case id to pages in rank order (repeats allowed)."""
    recall = [recall_at_k(ranked_pages[c.id], c.relevant, 5) for c in cases]
    mrr = [reciprocal_rank(ranked_pages[c.id], c.relevant, 10) for c in cases]
    ndcg = [ndcg_at_k(ranked_pages[c.id], c.relevant, 10) for c in cases]
    return Scores(float(np.mean(recall)), float(np.mean(mrr)), float(np.mean(ndcg)))


SOURCES = (str(HTML_ROOT / "*" / "*.html"),)
"""One glob, so document ids are paths under html/ ("library/json.html"), as the golden set names them."""


def bm25_pages(cases: Sequence[Case]) -> dict[str, list[str]]:
    """The peer: bm25s over whole pages, the page text as ragops' ingestion extracts it."""
    import bm25s  # type: ignore[import-not-found,import-untyped,unused-ignore]
    import Stemmer  # type: ignore[import-not-found,import-untyped,unused-ignore]

    pages: list[str] = []
    texts: list[str] = []
    for document in load_documents(list(SOURCES)).documents:
        pages.append(document.id)
        texts.append(f"{document.title or ''}\n{document.text}")
    stemmer = Stemmer.Stemmer("english")
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False), show_progress=False)
    tokens = bm25s.tokenize([c.query for c in cases], stopwords="en", stemmer=stemmer, show_progress=False)
    results, _ = retriever.retrieve(tokens, k=10, show_progress=False, n_threads=1)
    return {case.id: [pages[int(index)] for index in results[row]] for row, case in enumerate(cases)}


async def build(dsn: str, provider: str) -> tuple[VersionRecord, dict[str, Any], float]:
    model, dimensions = DEFAULT_MODELS[provider]
    request = BuildRequest(
        knowledge_base="pydocs",
        version="v1",
        sources=SOURCES,
        embedding=EmbeddingSettings(provider=provider, model=model, dimensions=dimensions),
    )
    async with await KnowledgeStore.connect(dsn) as store:
        started = time.perf_counter()
        report = await build_version(store, request)
        seconds = time.perf_counter() - started
        await store.activate("pydocs", "v1", force=True, reason="benchmark")
    return report.record, report.manifest, seconds


async def ragops_pages(dsn: str, record: VersionRecord, cases: Sequence[Case]) -> dict[str, dict[str, list[str]]]:
    """Each mode's ranked pages per case."""
    embedder = make_embedder(record.space.provider, model=record.space.model, dimensions=record.space.dimensions)
    vectors = await embedder.embed_batch([case.query for case in cases])
    ranked: dict[str, dict[str, list[str]]] = {"lexical": {}, "vector": {}, "hybrid": {}}
    async with await KnowledgeStore.connect(dsn) as store:
        for case, raw in zip(cases, vectors, strict=True):
            vector = np.asarray(raw, dtype=np.float32)
            hits = {
                "lexical": await store.text_search(record, case.query, RETRIEVED_CHUNKS),
                "vector": await store.vector_search(record, vector, RETRIEVED_CHUNKS),
                "hybrid": await retrieve(store, record, vector, case.query, top_k=RETRIEVED_CHUNKS, hybrid=True),
            }
            for mode, chunks in hits.items():
                ranked[mode][case.id] = [chunk.document_id for chunk in chunks]
    return ranked


async def query_latencies(dsn: str, record: VersionRecord, cases: Sequence[Case], rounds: int) -> list[float]:
    """Seconds per query on the runtime's hybrid path in process: embed the query, retrieve the top 20."""
    embedder = make_embedder(record.space.provider, model=record.space.model, dimensions=record.space.dimensions)
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(dsn, min_size=1, max_size=1, kwargs={"autocommit": True})
    latencies: list[float] = []
    async with pool:
        await pool.wait()
        async with pool.connection() as connection:
            from pgvector.psycopg import register_vector_async  # type: ignore[import-untyped,unused-ignore]

            await register_vector_async(connection)
            store = KnowledgeStore(connection)
            for round_number in range(rounds + 1):
                for case in cases:
                    started = time.perf_counter()
                    vector = np.asarray((await embedder.embed_batch([case.query]))[0], dtype=np.float32)
                    await retrieve(store, record, vector, case.query, top_k=SERVED_TOP_K, hybrid=True)
                    if round_number:  # the first round warms caches and is not counted
                        latencies.append(time.perf_counter() - started)
    return latencies


def measure(pg: Postgres, provider: str, rounds: int) -> list[Row]:
    cases = load_cases()
    rows: list[Row] = []
    with pg.database() as dsn:
        record, manifest, seconds = asyncio.run(build(dsn, provider))
        chunks = int(manifest["chunks"])
        boilerplate = manifest.get("boilerplate") or {}
        print(
            f"built {manifest['documents']} pages into {chunks} chunks in {seconds:.1f} s "
            f"({manifest['embeddingModel']}); boilerplate dropped: {boilerplate}",
            flush=True,
        )
        ranked = asyncio.run(ragops_pages(dsn, record, cases))
        latencies = asyncio.run(query_latencies(dsn, record, cases, rounds))
    ranked["bm25s"] = bm25_pages(cases)

    label = f"{CORPUS} ({manifest['documents']} pages, {chunks} chunks, {manifest['embeddingModel']})"
    names = {
        "bm25s": "bm25s BM25 over whole pages (peer)",
        "lexical": "ragops BM25 only",
        "vector": "ragops vector only",
        "hybrid": "ragops hybrid (default)",
    }
    for split in ("test", "dev"):
        subset = [c for c in cases if c.split == split]
        if not subset:
            continue
        for mode in ("bm25s", "lexical", "vector", "hybrid"):
            scores = score(subset, ranked[mode])
            for metric, value in (
                ("recall@5", scores.recall_at_5),
                ("MRR@10", scores.mrr_at_10),
                ("nDCG@10", scores.ndcg_at_10),
            ):
                prefix = f"{label}, {split} split ({len(subset)} questions)"
                baseline = None if mode == "bm25s" else f"{prefix}: {names['bm25s']}, {metric}"
                rows.append(Row(f"{prefix}: {names[mode]}, {metric}", round(value, 4), "score", baseline))
    rows.append(Row(f"{label}: build (ingest, clean, chunk, embed, store, index)", chunks / seconds, "chunks/s"))
    rows.append(
        Row(
            f"{label}: boilerplate dropped by cleaning",
            100 * float(boilerplate.get("droppedShare", 0.0)),
            "% of extracted text",
        )
    )
    for name, q in (("p50", 50), ("p95", 95)):
        rows.append(
            Row(
                f"{label}: query embedding + hybrid top-{SERVED_TOP_K} in process, 1 client, {name}",
                percentile(latencies, q) * 1000,
                "ms",
                repeats=len(latencies),
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one timed round; results to a temp directory")
    parser.add_argument("--embedding-provider", choices=sorted(DEFAULT_MODELS), default="static")
    parser.add_argument("--rounds", type=int, default=5, help="timed passes over the questions")
    args = parser.parse_args()
    if not (HTML_ROOT / "library" / "json.html").exists():
        raise SystemExit(f"{HTML_ROOT} is missing: install Debian's python3.11-doc (bash tools/bench-corpus.sh)")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    load_before = load_average()
    started = datetime.now(UTC)
    with Postgres() as pg:
        rows = measure(pg, args.embedding_provider, 1 if args.quick else args.rounds)
        document = result_document(
            "real_corpus", machine(pg.version), rows, started, load=f"{load_before} -> {load_average()}"
        )
    print_rows(document)
    print(f"wrote {write_result(document, quick=args.quick)}")


if __name__ == "__main__":
    main()
