"""A version built by several shards (issue 18, item 5) equals one built by one process, on real PostgreSQL.

Equal means what `version_content` compares (every chunk with its vector, the documents, the
manifest but for the build's cost) and what retrieval reads besides: the BM25 postings and their
impacts, document frequencies and average length, and the ranked results of vector, BM25 and
hybrid queries.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from ragops_runtime.embedding import make_embedder
from ragops_runtime.kb.build import BuildError, BuildRequest, EmbeddingSettings, ShardReport, build_shard, build_version
from ragops_runtime.kb.sharding import Shard
from ragops_runtime.store import EmbeddingSpace, Fusion, KnowledgeStore
from ragops_runtime.store.identifiers import sanitized_name
from tests.integration.test_kb import TOPICS, write_site
from tests.support.knowledge import version_content
from tests.support.openai_embeddings import Reply, running_openai_embeddings_server

QUERIES = ["glacier trail permit", "which season suits the volcano", "shelter map of the harbor", "lagoon guide storm"]


def sources(root: Path) -> tuple[str, ...]:
    """Markdown handbooks (400 chunks: more than a first stored group) and an HTML site with boilerplate."""
    licence = "All content licensed CC-BY 4.0 by Example Corp."
    return (str(write_handbooks(root / "handbooks")), str(write_site(root / "site", {licence: set(range(7))})))


def write_handbooks(root: Path) -> Path:
    """20 handbooks of 20 sections, each section its own mix of words and length.

    Varied on purpose: chunks that score exactly alike tie, and a tie is broken by chunk id,
    which two databases number differently.
    """
    rng = random.Random(18)
    root.mkdir(parents=True, exist_ok=True)
    for topic in TOPICS:
        parts = [f"# The {topic} handbook\n"]
        for section in range(20):
            words = " ".join(rng.choice(VOCABULARY) for _ in range(rng.randint(30, 120)))
            parts.append(f"## {topic.title()} section {section}\n\nThe {topic} {words}.\n")
        (root / f"{topic}.md").write_text("\n".join(parts))
    return root


VOCABULARY = (
    "trail guide season permit shelter map river bridge summit camp ranger weather snow rain wind sun lake "
    "forest path boat dock tide wave rock cliff cave moss fern pine oak birch bird fish deer wolf bear fox "
    "water food fire tent rope boot lamp stove hut cabin road gate fence farm field crop seed soil storm"
).split()


def request(corpus: tuple[str, ...], embedding: EmbeddingSettings) -> BuildRequest:
    return BuildRequest(knowledge_base="docs", version="v1", sources=corpus, embedding=embedding)


# Small groups (256 chunks, the least) so the first stored group, which fixes BM25's average length,
# is not the whole corpus: a shard storing first must not change it.
STATIC = EmbeddingSettings(dimensions=64, batch_size=16, concurrency=2)


async def build_in_shards(dsn: str, build: BuildRequest, count: int, **options: Any) -> list[ShardReport]:
    async def one(index: int) -> ShardReport:
        async with await KnowledgeStore.connect(dsn) as store:
            return await build_shard(store, build, Shard(index, count), **options)

    return list(await asyncio.gather(*(one(index) for index in range(count))))


def lexicon(dsn: str, kb: str, space: EmbeddingSpace) -> tuple[set[tuple[str, str, float]], set[tuple[Any, ...]], Any]:
    """(chunk key, term, impact) of every posting, (term, df) of every term, and the table's stats row."""

    def table(suffix: str) -> sql.Identifier:
        return sql.Identifier("ragops", sanitized_name(kb, space.key, suffix=suffix))

    with psycopg.connect(dsn) as connection:
        postings = connection.execute(
            sql.SQL("SELECT c.chunk_key, p.term, p.impact FROM {p} p JOIN {c} c ON c.id = p.chunk_id").format(
                p=table("_postings"), c=table("_chunks")
            )
        ).fetchall()
        terms = connection.execute(sql.SQL("SELECT term, df FROM {}").format(table("_terms"))).fetchall()
        stats = connection.execute(
            sql.SQL("SELECT chunks, average_length FROM {}").format(table("_lexstats"))
        ).fetchone()
    return {tuple(row) for row in postings}, {tuple(row) for row in terms}, stats


Ranking = tuple[tuple[float, ...], frozenset[tuple[str, int]]]


async def rankings(dsn: str, embedding: EmbeddingSettings) -> list[Ranking]:
    """Every query's exact vector, BM25 and hybrid top 10: scores in rank order, and the chunks above the last.

    Vector search goes through HNSW, an approximate index whose graph is random (pgvector draws
    each node's level from the server's PRNG), so two one-process builds differ there too: the
    exact vector ranking is compared, by a plain scan, and hybrid search with index scans off on its
    connection, so that its vector half is exact too (at a candidate depth of 50 over these 430
    chunks HNSW still missed a neighbour once in a full run, changing a fused score).
    """
    embedder = make_embedder(embedding.provider, model=embedding.model, dimensions=embedding.dimensions)
    found: list[Ranking] = []
    async with await KnowledgeStore.connect(dsn) as store:
        await store.connection.execute("SET enable_indexscan = off")
        record = await store.get_version("docs", "v1")
        assert record is not None and record.status == "built"
        vectors = await embedder.embed_batch(QUERIES)
        for query, listed in zip(QUERIES, vectors, strict=True):
            vector = np.asarray(listed, dtype=np.float32)
            for results in (
                _exact_nearest(dsn, record.space, vector),
                [(r.document_id, r.position, r.score) for r in await store.text_search(record, query, 10)],
                [
                    (r.document_id, r.position, r.score)
                    for r in await store.hybrid_search(record, vector, query, 50, fusion=Fusion())
                ][:10],
            ):
                scores = tuple(round(score, 6) for _, _, score in results)
                above = frozenset(
                    (document, position) for document, position, score in results if round(score, 6) > scores[-1]
                )
                found.append((scores, above))
    await embedder.aclose()
    return found


def _exact_nearest(dsn: str, space: EmbeddingSpace, vector: np.ndarray) -> list[tuple[str, int, float]]:
    """The version's 10 chunks nearest to `vector` by cosine distance, by a scan of every member."""
    chunks, members = (sanitized_name("docs", space.key, suffix=suffix) for suffix in ("_chunks", "_members"))
    with psycopg.connect(dsn) as connection:
        rows = connection.execute(
            sql.SQL(
                "SELECT c.document_id, c.position, 1 - (c.embedding <=> %s::text::vector) FROM {m} m "
                "JOIN {c} c ON c.id = m.chunk_id JOIN ragops.kb_versions v ON v.id = m.version_id "
                "WHERE v.kb = 'docs' AND v.version = 'v1' ORDER BY 3 DESC LIMIT 10"
            ).format(m=sql.Identifier("ragops", members), c=sql.Identifier("ragops", chunks)),
            ("[" + ",".join(repr(float(x)) for x in vector) + "]",),
        ).fetchall()
    return [(document, position, float(score)) for document, position, score in rows]


def space_of(dsn: str) -> EmbeddingSpace:
    with psycopg.connect(dsn) as connection:
        row = connection.execute("SELECT space FROM ragops.kb_versions WHERE kb = 'docs' AND version = 'v1'").fetchone()
    assert row is not None
    return EmbeddingSpace.from_json(row[0])


async def test_a_three_shard_build_equals_a_one_process_build(pg_dsn: str, other_pg_dsn: str, tmp_path: Path) -> None:
    build = request(sources(tmp_path), STATIC)
    async with await KnowledgeStore.connect(other_pg_dsn) as store:
        whole = await build_version(store, build)
    assert whole.manifest["chunks"] > 256 and whole.manifest["boilerplate"]["repeatedBlocks"] == 7

    reports = await build_in_shards(pg_dsn, build, 3)

    published = [report.published for report in reports if report.published is not None]
    assert len(published) == 1, "exactly one shard completes the version"
    # Every shard stored a real share (greedy by size over 30 documents), together all of them.
    assert all(report.documents > 0 for report in reports)
    assert sum(report.documents for report in reports) == whole.manifest["documents"]
    assert sum(report.chunks for report in reports) == whole.manifest["chunks"]
    assert published[0].manifest["contentDigest"] == whole.manifest["contentDigest"]
    assert published[0].manifest["embeddedChunks"] == whole.manifest["embeddedChunks"]
    sharded = version_content(pg_dsn, "docs", "v1")
    assert sharded.status == "built"
    assert sharded == version_content(other_pg_dsn, "docs", "v1")
    space = space_of(pg_dsn)
    assert lexicon(pg_dsn, "docs", space) == lexicon(other_pg_dsn, "docs", space)
    assert await rankings(pg_dsn, STATIC) == await rankings(other_pg_dsn, STATIC)
    with psycopg.connect(pg_dsn) as connection:
        assert connection.execute("SELECT count(*) FROM ragops.kb_build_parts").fetchone() == (0,)

    # Running a shard again, or the whole build, finds the version built and changes nothing.
    again = await build_in_shards(pg_dsn, build, 3)
    assert all(report.already_built and report.published is None for report in again)
    assert version_content(pg_dsn, "docs", "v1") == sharded


async def test_a_failed_shard_is_retried_alone_and_the_result_is_unchanged(
    pg_dsn: str, other_pg_dsn: str, tmp_path: Path
) -> None:
    """A shard whose embedding requests fail marks the version failed; its retry resumes and completes it."""
    corpus = sources(tmp_path)
    with running_openai_embeddings_server(32) as server:
        embedding = EmbeddingSettings(
            provider="openai", model="fake-embed", dimensions=32, endpoint=server.url, batch_size=16, concurrency=2
        )
        build = request(corpus, embedding)
        async with await KnowledgeStore.connect(other_pg_dsn) as store:
            whole = await build_version(store, build)

        # The delta handbook is some shard's; its first request carrying it is refused (a 400 is not retried).
        server.fail_inputs_containing("The delta ", Reply(status=400, message="refused this once"), times=1)
        outcomes = await asyncio.gather(
            *(_shard_outcome(pg_dsn, build, Shard(index, 3)) for index in range(3)), return_exceptions=False
        )
        failed = [index for index, outcome in enumerate(outcomes) if isinstance(outcome, BuildError)]
        assert len(failed) == 1, outcomes
        assert all(
            isinstance(outcome, ShardReport) and outcome.published is None
            for index, outcome in enumerate(outcomes)
            if index not in failed
        )
        async with await KnowledgeStore.connect(pg_dsn) as store:
            record = await store.get_version("docs", "v1")
            assert record is not None and record.status == "failed" and "refused this once" in (record.error or "")

        async with await KnowledgeStore.connect(pg_dsn) as store:
            retried = await build_shard(store, build, Shard(failed[0], 3))
        assert retried.published is not None
        # The retry embedded its own share only, not the others' stored chunks.
        assert retried.embedded_chunks == retried.published.manifest["embeddedChunks"] - sum(
            outcome.embedded_chunks for outcome in outcomes if isinstance(outcome, ShardReport)
        )
        assert retried.embedded_chunks < whole.manifest["chunks"]

    assert version_content(pg_dsn, "docs", "v1") == version_content(other_pg_dsn, "docs", "v1")


async def _shard_outcome(dsn: str, build: BuildRequest, shard: Shard) -> ShardReport | BuildError:
    async with await KnowledgeStore.connect(dsn) as store:
        try:
            return await build_shard(store, build, shard)
        except BuildError as error:
            return error


async def test_a_whole_build_waits_for_the_shards_and_a_missing_shard_leaves_the_version_unbuilt(
    pg_dsn: str, tmp_path: Path
) -> None:
    build = request(sources(tmp_path), STATIC)
    reports = await build_in_shards(pg_dsn, build, 3)
    assert sum(report.published is not None for report in reports) == 1

    other = BuildRequest(knowledge_base="docs", version="v2", sources=build.sources, embedding=STATIC)
    async with await KnowledgeStore.connect(pg_dsn) as first, await KnowledgeStore.connect(pg_dsn) as second:
        only = await build_shard(first, other, Shard(0, 2))
        assert only.published is None and only.documents > 0
        record = await second.get_version("docs", "v2")
        assert record is not None and record.status == "building"
        # Shard 1 never ran: the version holds nothing a reader could serve.
        assert not await second.holds(record)
        done = await build_shard(second, other, Shard(1, 2))
        assert done.published is not None
        v1 = next(report.published for report in reports if report.published is not None)
        assert done.published.manifest["chunks"] == v1.manifest["chunks"]
        # v2 reused every chunk of v1 (same chunk table): nothing embedded twice.
        assert done.published.manifest["embeddedChunks"] == 0
        assert done.record.status == "built"
