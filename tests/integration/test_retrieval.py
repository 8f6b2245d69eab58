"""Retrieval on real PostgreSQL + pgvector with the default embedder: cleaning, BM25, fusion, filters, GC.

The fixture corpus is a small documentation site written here: HTML pages with navigation bars and a
footer on every page, each page about one topic, so a question has one right page.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import psycopg
import pytest
import yaml
from psycopg import sql

from ragops_runtime.embedding import StaticEmbedder
from ragops_runtime.kb.build import BuildRequest, build_version
from ragops_runtime.kb.evaluation import Thresholds
from ragops_runtime.kb.gate import evaluate_version
from ragops_runtime.replica import configure_connection
from ragops_runtime.retrieval.hybrid import retrieve
from ragops_runtime.store import Fusion, KnowledgeStore, VersionRecord
from ragops_runtime.store.identifiers import derived_identifier
from ragops_runtime.store.knowledge import MIN_EF_SEARCH

pytestmark = pytest.mark.postgres

PAGES = {
    "files/remove-tree.html": (
        "Removing directories",
        "To erase a folder together with all the files and subfolders it contains, call rmtree with its path. "
        "Read-only files can be handled with an onerror callback that clears the flag and retries.",
    ),
    "files/temporary.html": (
        "Temporary files",
        "A scratch file that disappears when it is closed is created by TemporaryFile; NamedTemporaryFile "
        "gives it a visible name on the file system.",
    ),
    "net/http-client.html": (
        "Fetching web pages",
        "urlopen sends an HTTP GET request to a URL and returns the response, whose read method gives the body "
        "as bytes; add headers with a Request object.",
    ),
    "data/json.html": (
        "JSON encoding",
        "dumps serialises a dictionary to a JSON string; pass indent=4 for human-readable output with nested "
        "structures laid out on separate lines.",
    ),
    "time/sleep.html": (
        "Suspending execution",
        "sleep suspends the calling thread for the given number of seconds, which may be a floating point "
        "number for sub-second precision.",
    ),
    "math/random.html": (
        "Random numbers",
        "randint returns a random integer N such that a <= N <= b; choice picks a random element from a "
        "non-empty sequence.",
    ),
}


def page(title: str, body: str) -> str:
    return (
        f"<html><head><title>{title} - Example Docs</title><script>track()</script></head><body>"
        '<div class="related" role="navigation"><a>index</a> <a>modules</a> <a>next</a> <a>previous</a></div>'
        f'<div role="main"><h1>{title}</h1><p>{body}</p></div>'
        '<div class="sphinxsidebar"><h3>This page</h3><p>Show source</p></div>'
        '<div class="legal"><p>Example Docs are licensed under CC-BY 4.0. Found a mistake? Tell us.</p></div>'
        "</body></html>"
    )


def write_site(root: Path) -> Path:
    for path, (title, body) in PAGES.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(page(title, body))
    return root


async def build_site(store: KnowledgeStore, root: Path, version: str = "v1") -> VersionRecord:
    report = await build_version(store, BuildRequest("site", version, (str(write_site(root)),)))
    return report.record


def vector(text: str) -> np.ndarray:
    return np.asarray(StaticEmbedder().embed_one(text), dtype=np.float32)


async def test_the_default_build_ranks_the_known_page_first_and_its_gate_passes(pg_dsn: str, tmp_path: Path) -> None:
    questions = {
        "delete a directory and everything inside it": "files/remove-tree.html",
        "pause my program for two seconds": "time/sleep.html",
        "pretty print a dict as json": "data/json.html",
        "download a web page": "net/http-client.html",
        "pick a random whole number between 1 and 6": "math/random.html",
    }
    async with await KnowledgeStore.connect(pg_dsn) as store:
        record = await build_site(store, tmp_path / "site")
        manifest = record.manifest or {}
        assert (manifest["embeddingProvider"], manifest["embeddingModel"], manifest["dimensions"]) == (
            "static",
            "wordllama-l2-supercat",
            256,
        )
        # The footer repeated on every page and the navigation markup went before chunking.
        assert manifest["boilerplate"]["repeatedBlocks"] == len(PAGES)
        assert manifest["boilerplate"]["markupChars"] > 0
        for question, expected in questions.items():
            hits = await retrieve(store, record, vector(question), question, top_k=5, hybrid=True)
            assert hits[0].document_id == expected, question
            assert all("licensed" not in hit.text and "previous" not in hit.text for hit in hits)

        golden = tmp_path / "golden.yaml"
        cases = [{"id": f"q{n}", "query": q, "relevant": [p]} for n, (q, p) in enumerate(questions.items())]
        golden.write_text(yaml.safe_dump({"cases": cases}))
        report = await evaluate_version(
            store, "site", "v1", golden, k=1, thresholds=Thresholds(precision_at_k=1, recall_at_k=1, mrr=1, ndcg_at_k=1)
        )
        assert report.passed, report.failed_metrics


async def test_bm25_matches_any_word_and_weighs_rare_words_higher(pg_dsn: str, tmp_path: Path) -> None:
    async with await KnowledgeStore.connect(pg_dsn) as store:
        record = await build_site(store, tmp_path / "site")
        # Most of these words are in no page at all: with AND semantics nothing would match.
        hits = await store.text_search(record, "what is the quickest way to call rmtree on my stuff", 3)
        assert [hit.document_id for hit in hits][:1] == ["files/remove-tree.html"]
        assert hits[0].score > 0
        # "random" is in one page, "number" in two: the rare word decides the order.
        hits = await store.text_search(record, "number random", 6)
        assert hits[0].document_id == "math/random.html"
        assert {hit.document_id for hit in hits} >= {"math/random.html", "time/sleep.html"}
        assert hits == sorted(hits, key=lambda hit: -hit.score)
        # Stop words only: nothing to rank, no error.
        assert await store.text_search(record, "the and of", 5) == []


async def test_fusion_weights_decide_between_the_two_rankings(pg_dsn: str, tmp_path: Path) -> None:
    question = "erase a folder"
    async with await KnowledgeStore.connect(pg_dsn) as store:
        record = await build_site(store, tmp_path / "site")
        dense = await store.vector_search(record, vector(question), 6)
        lexical = await store.text_search(record, question, 6)
        only_vector = await store.hybrid_search(
            record, vector(question), question, 6, fusion=Fusion(vector_weight=1, lexical_weight=0)
        )
        only_lexical = await store.hybrid_search(
            record, vector(question), question, 6, fusion=Fusion(vector_weight=0, lexical_weight=1)
        )
    assert [hit.chunk_id for hit in only_vector] == [hit.chunk_id for hit in dense]
    assert [hit.chunk_id for hit in only_lexical][: len(lexical)] == [hit.chunk_id for hit in lexical]


async def test_hybrid_search_honours_metadata_filters(pg_dsn: str, tmp_path: Path) -> None:
    records = [
        {"id": f"{product}-{topic}", "text": f"How to {topic} the {product}.", "metadata": {"product": product}}
        for product in ("alpha", "beta")
        for topic in ("install", "upgrade", "remove")
    ]
    corpus = tmp_path / "records.jsonl"
    corpus.write_text("\n".join(json.dumps(record) for record in records))
    async with await KnowledgeStore.connect(pg_dsn) as store:
        record = (await build_version(store, BuildRequest("records", "v1", (str(corpus),)))).record
        hits = await retrieve(
            store, record, vector("upgrade"), "upgrade", top_k=6, hybrid=True, metadata={"product": "beta"}
        )
    assert hits and all(hit.metadata == {"product": "beta"} for hit in hits)
    assert hits[0].document_id == "beta-upgrade"


async def test_dropping_a_version_removes_its_postings_and_frequencies(pg_dsn: str, tmp_path: Path) -> None:
    async with await KnowledgeStore.connect(pg_dsn) as store:
        await build_site(store, tmp_path / "one", "v1")
        extra = tmp_path / "two" / "extra" / "zebra.html"
        extra.parent.mkdir(parents=True)
        extra.write_text(page("Zebras", "A zebra page about quagga stripes."))
        v2 = await build_site(store, tmp_path / "two", "v2")
        assert [hit.document_id for hit in await store.text_search(v2, "quagga", 5)] == ["extra/zebra.html"]
        # v1 shares the chunk table with v2 but not the zebra page: its searches never return it.
        v1 = await store.get_version("site", "v1")
        assert v1 is not None
        assert await store.text_search(v1, "quagga", 5) == []
        assert "extra/zebra.html" not in {
            hit.document_id for hit in await retrieve(store, v1, vector("zebra"), "zebra quagga", top_k=6, hybrid=True)
        }
        await store.activate("site", "v1", force=True)
        await store.drop_version("site", "v2")
        connection = store.connection
        terms = derived_identifier("site", v2.space.key, suffix="_terms")
        postings = derived_identifier("site", v2.space.key, suffix="_postings")
        frequency = await connection.execute(sql.SQL("SELECT df FROM {} WHERE term = 'quagga'").format(terms))
        assert await frequency.fetchone() == (0,)
        remaining = await connection.execute(sql.SQL("SELECT count(*) FROM {} WHERE term = 'quagga'").format(postings))
        assert await remaining.fetchone() == (0,)
        assert (await store.text_search(v1, "rmtree", 1))[0].document_id == "files/remove-tree.html"


async def test_a_pooled_search_session_answers_as_a_search_that_sets_its_settings(pg_dsn: str, tmp_path: Path) -> None:
    """The runtime's pooled connections keep the search settings for their session and run a search as one
    statement; the same searches with each setting set for its transaction find the same chunks and scores,
    and a search deeper than the session's sets its own for its transaction only."""
    questions = ("delete a directory and everything inside it", "pause my program", "download a web page")
    async with await KnowledgeStore.connect(pg_dsn) as store:
        record = await build_site(store, tmp_path / "site")
        pooled = await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True)
        async with pooled:
            await configure_connection(pooled)
            session = KnowledgeStore(pooled)
            for question in questions:
                for top_k in (5, 30):  # a fused top 30 ranks 60 deep: more than the session's 40
                    for hybrid in (True, False):
                        expected = await retrieve(store, record, vector(question), question, top_k=top_k, hybrid=hybrid)
                        found = await retrieve(session, record, vector(question), question, top_k=top_k, hybrid=hybrid)
                        assert found == expected, (question, top_k, hybrid)
                assert await session.text_search(record, question, 5) == await store.text_search(record, question, 5)
            settings = await pooled.execute(
                "SELECT current_setting('plan_cache_mode'), current_setting('hnsw.iterative_scan'), "
                "current_setting('hnsw.ef_search')"
            )
            assert await settings.fetchone() == ("force_generic_plan", "relaxed_order", str(MIN_EF_SEARCH))
        unset = await store.connection.execute("SELECT current_setting('plan_cache_mode')")
        assert await unset.fetchone() == ("auto",)  # a connection of its own keeps the server's defaults
