"""The knowledge store on real PostgreSQL + pgvector: versions, sharing, activation, deletion, search."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import psycopg.conninfo
import pytest
from psycopg import sql

from ragops_runtime.store import (
    ACTIVATION_CHANNEL,
    ActivationRefused,
    ChunkRow,
    DocumentRow,
    EmbeddingSpace,
    GateRequirement,
    GateVerdict,
    KnowledgeStore,
    PgvectorMissing,
    ProbePlan,
    ProbeQuery,
    StoreError,
    VersionConflict,
    VersionRecord,
)
from ragops_runtime.store.knowledge import chunk_table_name

SPACE = EmbeddingSpace(provider="hashing", model="hashing-v1", dimensions=8)
SETTINGS: dict[str, Any] = {"chunking": "recursive/512/64"}


def vector(seed: int) -> np.ndarray:
    values = np.random.default_rng(seed).standard_normal(SPACE.dimensions).astype(np.float32)
    return values / np.linalg.norm(values)


def row(document: str, position: int, text: str, seed: int) -> ChunkRow:
    return ChunkRow(
        document_id=document,
        source=f"/src/{document}",
        position=position,
        heading_path=("Intro",),
        text=text,
        text_digest=str(hash(text)),
        token_count=len(text.split()),
        metadata={},
        embedding=vector(seed),
    )


def verdict(
    passed: bool, *, k: int = 5, recall: float = 0.8, golden: str = "g" * 64, failed: list[str] | None = None
) -> GateVerdict:
    """A gate verdict as `kb eval` records it (thresholds as the CLI's defaults unless given)."""
    thresholds = {"precisionAtK": 0.6, "recallAtK": recall, "mrr": 0.5, "ndcgAtK": 0.6, "answerPassRate": None}
    metrics = {"precisionAtK": 0.7, "recallAtK": 0.9, "mrr": 0.8, "ndcgAtK": 0.8}
    report = {"k": k, "metrics": metrics, "passed": passed, "failedMetrics": failed or [], "cases": []}
    return GateVerdict(passed, k, thresholds, golden, metrics, report)


async def build(
    store: KnowledgeStore, kb: str, version: str, rows: list[ChunkRow], *, gate: bool | None = True
) -> VersionRecord:
    record = await store.begin_version(kb, version, SPACE, SETTINGS)
    known = await store.known_chunks(record, [r.key for r in rows])
    ids = dict(known)
    ids.update(await store.insert_chunks(record, [r for r in rows if r.key not in known]))
    await store.ensure_indexes(record)
    documents = sorted({r.document_id for r in rows})
    record = await store.complete_version(
        record, ids.values(), [DocumentRow(d, f"/src/{d}", None, "digest", 1) for d in documents], {"chunks": len(rows)}
    )
    if gate is not None:
        await store.record_gate(record, verdict(gate, failed=[] if gate else ["recallAtK=0.1<0.8"]))
    return record


ROWS_V1 = [
    row("a.md", 0, "postgres stores vectors", 1),
    row("b.md", 0, "kubernetes runs pods", 2),
    row("c.md", 0, "helm installs charts", 3),
]


async def test_versions_share_unchanged_chunks(pg_dsn: str) -> None:
    async with await KnowledgeStore.connect(pg_dsn) as store:
        v1 = await build(store, "docs", "v1", ROWS_V1)
        changed = [*ROWS_V1[:2], row("c.md", 0, "helm upgrades charts", 4)]
        record = await store.begin_version("docs", "v2", SPACE, SETTINGS)
        known = await store.known_chunks(record, [r.key for r in changed])
        assert len(known) == 2  # only the edited chunk is new
        v2 = await build(store, "docs", "v2", changed)
        table = chunk_table_name("docs", SPACE)
        count = await (await store.connection.execute(f'SELECT count(*) FROM ragops."{table}"')).fetchone()
        assert count == (4,)
        hits_v1 = await store.vector_search(v1, vector(3), 3)
        hits_v2 = await store.vector_search(v2, vector(3), 3)
        assert "helm installs charts" in {h.text for h in hits_v1}
        assert "helm installs charts" not in {h.text for h in hits_v2}
        assert hits_v1[0].text == "helm installs charts" and hits_v1[0].score == pytest.approx(1.0, abs=1e-5)


async def test_two_versions_built_at_once_share_the_chunks_both_add(pg_dsn: str) -> None:
    """Both builds look before either inserts (as two build Jobs at once do): the second one's batch
    meets the first one's rows and must reuse them, not fail on the unique chunk key."""
    v1_rows = ROWS_V1
    v2_rows = [*ROWS_V1[:2], row("d.md", 0, "argo syncs applications", 5)]
    async with await KnowledgeStore.connect(pg_dsn) as first, await KnowledgeStore.connect(pg_dsn) as second:
        r1 = await first.begin_version("docs", "v1", SPACE, SETTINGS)
        r2 = await second.begin_version("docs", "v2", SPACE, SETTINGS)
        assert await first.known_chunks(r1, [r.key for r in v1_rows]) == {}
        assert await second.known_chunks(r2, [r.key for r in v2_rows]) == {}
        ids_1 = await first.insert_chunks(r1, v1_rows)
        ids_2 = await second.insert_chunks(r2, v2_rows)
        assert set(ids_2) == {r.key for r in v2_rows}
        shared = {r.key for r in ROWS_V1[:2]}
        assert {key: ids_2[key] for key in shared} == {key: ids_1[key] for key in shared}
        table = chunk_table_name("docs", SPACE)
        count = await (await first.connection.execute(f'SELECT count(*) FROM ragops."{table}"')).fetchone()
        assert count == (4,)
        # And truly at once: overlapping batches from two connections, none lost, none doubled.
        r3 = await first.begin_version("docs", "v3", SPACE, SETTINGS)
        r4 = await second.begin_version("docs", "v4", SPACE, SETTINGS)
        batch = [row(f"n{i}.md", 0, f"new text {i}", 100 + i) for i in range(300)]
        got_3, got_4 = await asyncio.gather(first.insert_chunks(r3, batch), second.insert_chunks(r4, batch[::-1]))
        assert got_3 == got_4 and len(got_3) == 300
        count = await (await first.connection.execute(f'SELECT count(*) FROM ragops."{table}"')).fetchone()
        assert count == (304,)


async def test_rebuild_is_idempotent_and_settings_are_immutable(pg_dsn: str) -> None:
    async with await KnowledgeStore.connect(pg_dsn) as store:
        first = await build(store, "docs", "v1", ROWS_V1)
        again = await build(store, "docs", "v1", ROWS_V1)
        assert (again.id, again.status) == (first.id, "built")
        with pytest.raises(VersionConflict, match="already exists with other settings"):
            await store.begin_version("docs", "v1", SPACE, {"chunking": "fixed/128/0"})


async def test_text_search_and_hostile_input(pg_dsn: str) -> None:
    async with await KnowledgeStore.connect(pg_dsn) as store:
        record = await build(store, "docs", "v1", ROWS_V1)
        hits = await store.text_search(record, "pods", 5)
        assert [h.document_id for h in hits] == ["b.md"]
        # Operators, quotes and SQL in a query are just words to websearch_to_tsquery.
        assert await store.text_search(record, "'); DROP TABLE ragops.kb_versions; --", 5) == []
        assert await store.text_search(record, '"unbalanced -(', 5) == []


@pytest.mark.parametrize(
    "kb",
    ['docs"; DROP TABLE ragops.kb_versions; --', "Robert'); DROP TABLE students;--", "ünïcødé-知识库", "x" * 300],
)
async def test_hostile_knowledge_base_names_are_only_ever_identifiers(pg_dsn: str, kb: str) -> None:
    async with await KnowledgeStore.connect(pg_dsn) as store:
        record = await build(store, kb, "v1; DELETE FROM ragops.kb_activation", ROWS_V1)
        await store.activate(kb, record.version)
        assert (await store.activation(kb)).active == record.version
        assert len(record.chunk_table) <= 63
        assert [h.document_id for h in await store.text_search(record, "charts", 5)] == ["c.md"]
        tables = await (
            await store.connection.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'ragops'"
            )
        ).fetchone()
        # six meta tables (versions, documents, activation, its history, extractions, verdicts), chunks,
        # members, BM25 lexicon (3): nothing stray
        assert tables == (11,)


async def test_activation_refuses_what_cannot_serve(pg_dsn: str) -> None:
    async with await KnowledgeStore.connect(pg_dsn) as store:
        with pytest.raises(ActivationRefused, match="has no version 'v9'"):
            await store.activate("docs", "v9")
        await build(store, "docs", "ungated", ROWS_V1, gate=None)
        with pytest.raises(ActivationRefused, match="has not been evaluated"):
            await store.activate("docs", "ungated")
        await build(store, "docs", "bad", ROWS_V1, gate=False)
        with pytest.raises(ActivationRefused, match=r"failed its gate \(recallAtK=0.1<0.8\)"):
            await store.activate("docs", "bad")
        building = await store.begin_version("docs", "half", SPACE, SETTINGS)
        with pytest.raises(ActivationRefused, match="is building, not built"):
            await store.activate("docs", building.version, force=True)
        await build(store, "docs", "good", ROWS_V1)
        await store.activate("docs", "good")
        wide = EmbeddingSpace(provider="hashing", model="hashing-v1", dimensions=16)
        record = await store.begin_version("docs", "wide", wide, SETTINGS)
        wide_row = ChunkRow("a.md", "/src/a.md", 0, (), "wide", "d", 1, {}, np.full(16, 0.25, dtype=np.float32))
        ids = await store.insert_chunks(record, [wide_row])
        record = await store.complete_version(record, ids.values(), [], {})
        await store.record_gate(record, verdict(True))
        with pytest.raises(
            ActivationRefused, match="uses 16-dimension embeddings but the active version 'good' uses 8"
        ):
            await store.activate("docs", "wide")
        assert (await store.activation("docs")).active == "good"
        await store.activate("docs", "bad", force=True)
        assert (await store.activation("docs")).active == "bad"


async def test_activate_rollback_and_notification(pg_dsn: str) -> None:
    async with await KnowledgeStore.connect(pg_dsn) as store:
        for version in ("v1", "v2"):
            await build(store, "docs", version, ROWS_V1)
        listener = await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True)
        await listener.execute(f"LISTEN {ACTIVATION_CHANNEL}")
        await store.activate("docs", "v1")
        await store.activate("docs", "v2", reason="promote")
        assert (await store.activation("docs")).previous == "v1"
        rolled = await store.rollback("docs", reason="p95 breach")
        assert (rolled.active, rolled.previous) == ("v1", "v2")
        notes = []
        async with asyncio.timeout(5):
            async for note in listener.notifies():
                notes.append(json.loads(note.payload))
                if len(notes) == 3:
                    break
        await listener.close()
        assert [(n["version"], n["action"]) for n in notes] == [
            ("v1", "activate"),
            ("v2", "activate"),
            ("v1", "rollback"),
        ]
        history = await store.history("docs")
        assert [(h["action"], h["from_version"], h["to_version"], h["reason"]) for h in history] == [
            ("rollback", "v2", "v1", "p95 breach"),
            ("activate", "v1", "v2", "promote"),
            ("activate", None, "v1", ""),
        ]


PROBES = ProbePlan(
    queries=(ProbeQuery("how do pods run?", ("b.md",)), ProbeQuery("recorded production query")),
    per_minute=30.0,
    top_k=5,
)


async def notifications(listener: psycopg.AsyncConnection[Any], *, wait: float = 1.0) -> list[dict[str, Any]]:
    """Every notification that arrives within `wait` seconds."""
    return [json.loads(note.payload) async for note in listener.notifies(timeout=wait)]


async def wide_version(store: KnowledgeStore, kb: str, version: str) -> VersionRecord:
    """A gated version embedded in another space (16 dimensions): an embedding-model migration."""
    wide = EmbeddingSpace(provider="hashing", model="hashing-v2", dimensions=16)
    record = await store.begin_version(kb, version, wide, SETTINGS)
    wide_row = ChunkRow("a.md", "/src/a.md", 0, (), "wide", "d", 1, {}, np.full(16, 0.25, dtype=np.float32))
    ids = await store.insert_chunks(record, [wide_row])
    record = await store.complete_version(record, ids.values(), [], {})
    await store.record_gate(record, verdict(True))
    return record


async def test_traffic_split_is_set_idempotently_notified_recorded_and_cleared(pg_dsn: str) -> None:
    async with await KnowledgeStore.connect(pg_dsn) as store:
        for version in ("v1", "v2"):
            await build(store, "docs", version, ROWS_V1)
        await store.activate("docs", "v1")
        idle = await store.traffic("docs")
        assert (idle.stable, idle.canary, idle.canary_weight, idle.shadow_percent, idle.probe) == (
            "v1",
            None,
            0,
            0,
            None,
        )
        assert not idle.active
        listener = await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True)
        await listener.execute(f"LISTEN {ACTIVATION_CHANNEL}")

        split = await store.set_traffic(
            "docs", canary="v2", weight=10, shadow_percent=50, split_id="r1/0", probe=PROBES, reason="step 1"
        )
        assert (split.stable, split.canary, split.canary_weight, split.shadow_percent, split.split_id) == (
            "v1",
            "v2",
            10,
            50.0,
            "r1/0",
        )
        assert split.probe == PROBES and split.active
        # The same values again: nothing changes, nothing is notified or recorded.
        again = await store.set_traffic(
            "docs", canary="v2", weight=10, shadow_percent=50, split_id="r1/0", probe=PROBES
        )
        assert again == split
        await store.set_traffic("docs", canary="v2", weight=50, shadow_percent=0, split_id="r1/2")
        assert (await store.traffic("docs")).probe is None
        cleared = await store.clear_traffic("docs", reason="analysis failed: p95 ratio 1.8 > 1.2")
        assert (cleared.stable, cleared.canary, cleared.canary_weight, cleared.shadow_percent) == ("v1", None, 0, 0)
        assert (cleared.split_id, cleared.probe) == (None, None)
        assert await store.clear_traffic("docs") == cleared  # nothing left to clear: a no-op

        notes = await notifications(listener)
        await listener.close()
        assert [(n["kb"], n["action"], n["version"]) for n in notes] == [
            ("docs", "split", "v2"),
            ("docs", "split", "v2"),
            ("docs", "abort", "v1"),
        ]
        history = await store.history("docs")
        assert [
            (h["action"], h["from_version"], h["to_version"], h["canary_weight"], h["shadow_percent"], h["split_id"])
            for h in history
        ] == [
            ("abort", "v2", "v1", 0, 0.0, None),
            ("split", "v1", "v2", 50, 0.0, "r1/2"),
            ("split", "v1", "v2", 10, 50.0, "r1/0"),
            ("activate", None, "v1", None, None, None),
        ]
        assert history[0]["reason"] == "analysis failed: p95 ratio 1.8 > 1.2"
        assert (await store.activation("docs")).active == "v1"  # the pointer never moved


async def test_set_traffic_refuses_what_cannot_serve(pg_dsn: str) -> None:
    async with await KnowledgeStore.connect(pg_dsn) as store:
        await build(store, "docs", "v1", ROWS_V1)
        with pytest.raises(ActivationRefused, match="has no active version: activate a stable version before"):
            await store.set_traffic("docs", canary="v1", weight=10, shadow_percent=0, split_id="s")
        await store.activate("docs", "v1")
        await build(store, "docs", "good", ROWS_V1)
        await build(store, "docs", "ungated", ROWS_V1, gate=None)
        await build(store, "docs", "bad", ROWS_V1, gate=False)
        await build(store, "faq", "faq-v1", ROWS_V1)
        half = await store.begin_version("docs", "half", SPACE, SETTINGS)
        refused = {
            "v1": "'v1' is already the stable version of 'docs'",
            "v9": "knowledge base 'docs' has no version 'v9'",
            "faq-v1": "version 'faq-v1' belongs to knowledge base 'faq', not 'docs'",
            half.version: "is building, not built",
            "ungated": "has not been evaluated",
            "bad": r"failed its gate \(recallAtK=0.1<0.8\)",
        }
        for canary, reason in refused.items():
            with pytest.raises(ActivationRefused, match=reason):
                await store.set_traffic("docs", canary=canary, weight=10, shadow_percent=0, split_id="s")
        for weight, shadow, split_id in [
            (101, 0, "s"),
            (-1, 0, "s"),
            (True, 0, "s"),
            (10, 100.5, "s"),
            (10, -0.1, "s"),
        ]:
            with pytest.raises(ActivationRefused, match="from 0 to 100"):
                await store.set_traffic("docs", canary="good", weight=weight, shadow_percent=shadow, split_id=split_id)
        with pytest.raises(ActivationRefused, match="from 0 to 100"):
            await store.set_traffic("docs", canary="good", weight=10, shadow_percent=float("nan"), split_id="s")
        with pytest.raises(ActivationRefused, match="split_id must be a non-empty"):
            await store.set_traffic("docs", canary="good", weight=10, shadow_percent=0, split_id="")
        assert not (await store.traffic("docs")).active and await store.history("docs", limit=2) == [
            h for h in await store.history("docs", limit=2) if h["action"] == "activate"
        ]
        # Force skips the gate (as for activation), never the build.
        forced = await store.set_traffic("docs", canary="ungated", weight=5, shadow_percent=0, split_id="s", force=True)
        assert forced.canary == "ungated"
        with pytest.raises(ActivationRefused, match="is building, not built"):
            await store.set_traffic("docs", canary=half.version, weight=5, shadow_percent=0, split_id="s", force=True)
        with pytest.raises(ValueError, match="at least one query"):
            ProbePlan(queries=(), per_minute=10)
        with pytest.raises(ValueError, match="probes per minute"):
            ProbePlan(queries=(ProbeQuery("q"),), per_minute=0)


async def test_activate_clears_the_split_and_a_canary_of_another_dimension_is_promoted(pg_dsn: str) -> None:
    async with await KnowledgeStore.connect(pg_dsn) as store:
        await build(store, "docs", "v1", ROWS_V1)
        await store.activate("docs", "v1")
        await wide_version(store, "docs", "wide")
        # Another embedding space is served side by side: a canary needs no force for it.
        await store.set_traffic("docs", canary="wide", weight=20, shadow_percent=0, split_id="migrate/0")
        with pytest.raises(StoreError, match="is the canary of a rollout; clear the split first"):
            await store.drop_version("docs", "wide")
        assert "wide" not in await store.gc("docs", keep=0)
        # Promote = activate the candidate: it has served in its own space, so no force, and the split ends.
        promoted = await store.activate("docs", "wide", reason="promote")
        assert (promoted.active, promoted.previous) == ("wide", "v1")
        after = await store.traffic("docs")
        assert (after.stable, after.canary, after.canary_weight, after.split_id) == ("wide", None, 0, None)
        # Activating the version already stable while a split runs ends the split too.
        await store.set_traffic("docs", canary="v1", weight=30, shadow_percent=10, split_id="back/0", force=True)
        assert (await store.activate("docs", "wide", reason="serve wide to everyone")).active == "wide"
        assert not (await store.traffic("docs")).active
        assert [(h["action"], h["from_version"], h["to_version"]) for h in await store.history("docs", limit=2)] == [
            ("activate", "wide", "wide"),
            ("split", "wide", "v1"),
        ]
        # With nothing to clear, activating the active version changes nothing (as before splits).
        assert len(await store.history("docs")) == 5
        await store.activate("docs", "wide")
        assert len(await store.history("docs")) == 5


async def test_a_store_created_by_the_previous_release_gets_the_split_columns(pg_dsn: str) -> None:
    async with await KnowledgeStore.connect(pg_dsn) as store:
        await build(store, "docs", "v1", ROWS_V1)
        await build(store, "docs", "v2", ROWS_V1)
    # Back to the previous release's schema (before the split), with a version active and its history.
    with psycopg.connect(pg_dsn, autocommit=True) as old:
        for column in ("canary_version_id", "canary_weight", "shadow_percent", "split_id", "probe"):
            old.execute(f"ALTER TABLE ragops.kb_activation DROP COLUMN {column}")
        for column in ("canary_weight", "shadow_percent", "split_id"):
            old.execute(f"ALTER TABLE ragops.kb_activation_history DROP COLUMN {column}")
        v1 = old.execute("SELECT id FROM ragops.kb_versions WHERE version = 'v1'").fetchone()
        assert v1 is not None
        old.execute("INSERT INTO ragops.kb_activation (kb, active_version_id) VALUES ('docs', %s)", v1)
        old.execute(
            "INSERT INTO ragops.kb_activation_history (kb, action, to_version) VALUES ('docs', 'activate', 'v1')"
        )
    async with await KnowledgeStore.connect(pg_dsn) as store:
        assert (await store.activation("docs")).active == "v1"
        assert (await store.traffic("docs")).stable == "v1"
        split = await store.set_traffic("docs", canary="v2", weight=25, shadow_percent=5, split_id="r/0", probe=PROBES)
        assert (split.canary, split.canary_weight, split.probe) == ("v2", 25, PROBES)
        assert [h["action"] for h in await store.history("docs")] == ["split", "activate"]
        with pytest.raises(psycopg.errors.CheckViolation):
            await store.connection.execute("UPDATE ragops.kb_activation SET canary_weight = 101")
    # A long reader of the pointer: connecting must not queue behind it once the columns exist.
    with psycopg.connect(pg_dsn, autocommit=True) as reader:
        reader.execute("BEGIN")
        reader.execute("SELECT * FROM ragops.kb_activation")  # holds ACCESS SHARE until rollback

        async def connect() -> None:
            async with asyncio.timeout(5):
                async with await KnowledgeStore.connect(pg_dsn):
                    pass

        await connect()  # an ALTER TABLE here would wait for the reader and time out
        reader.execute("ROLLBACK")


async def test_gc_keeps_active_previous_and_newest_and_deletes_rows(pg_dsn: str) -> None:
    async with await KnowledgeStore.connect(pg_dsn) as store:
        for number in range(1, 6):
            rows = [*ROWS_V1[:2], row("c.md", 0, f"helm edition {number}", 10 + number)]
            await build(store, "docs", f"v{number}", rows)
        await store.activate("docs", "v1")
        await store.activate("docs", "v2")
        dropped = await store.gc("docs", keep=1)
        assert sorted(dropped) == ["v3", "v4"]
        assert sorted(v.version for v in await store.list_versions("docs")) == ["v1", "v2", "v5"]
        with pytest.raises(StoreError, match="is active"):
            await store.drop_version("docs", "v2")
        with pytest.raises(StoreError, match="rollback target"):
            await store.drop_version("docs", "v1")
        table = chunk_table_name("docs", SPACE)
        texts = await (await store.connection.execute(f'SELECT text FROM ragops."{table}" ORDER BY text')).fetchall()
        # v3's and v4's own chunks are gone; shared ones stay.
        assert [t for (t,) in texts] == [
            "helm edition 1",
            "helm edition 2",
            "helm edition 5",
            "kubernetes runs pods",
            "postgres stores vectors",
        ]


@pytest.fixture
def empty_extension_dir() -> Iterator[Path]:
    # Outside pytest's 0700 temp tree: the server runs as a system user of its own.
    empty = Path(tempfile.mkdtemp(prefix="ragops-no-extensions-"))
    (empty / "extension").mkdir()
    for path in (empty, empty / "extension"):
        path.chmod(0o755)
    yield empty
    shutil.rmtree(empty, ignore_errors=True)


async def test_missing_pgvector_is_a_clear_error(pg_dsn: str, empty_extension_dir: Path) -> None:
    # PostgreSQL 18 looks for extensions only where extension_control_path says: an empty
    # directory makes this database a real server without pgvector for every connection.
    empty = empty_extension_dir
    dbname = psycopg.conninfo.conninfo_to_dict(pg_dsn)["dbname"]
    with psycopg.connect(pg_dsn, autocommit=True) as admin:
        admin.execute(
            sql.SQL("ALTER DATABASE {} SET extension_control_path = {}").format(
                sql.Identifier(str(dbname)), sql.Literal(str(empty))
            )
        )
    with pytest.raises(PgvectorMissing, match="the pgvector extension is not installed on this PostgreSQL server"):
        await KnowledgeStore.connect(pg_dsn)


async def test_unreachable_database_is_a_clear_error() -> None:
    with pytest.raises(StoreError, match="cannot connect to PostgreSQL"):
        await KnowledgeStore.connect("postgresql://nobody:secret@127.0.0.1:1/none?connect_timeout=2")


async def test_a_second_rollback_never_re_promotes_the_version_rolled_back(pg_dsn: str) -> None:
    """Issue 16, item 5: rollback walks back through known-good versions, skipping the rolled back."""
    async with await KnowledgeStore.connect(pg_dsn) as store:
        for version in ("v0", "v1", "v2"):
            await build(store, "docs", version, ROWS_V1)
            await store.activate("docs", version)
        assert (await store.rollback("docs", reason="p95 breach")).active == "v1"
        # The pointer's `previous` is v2 now; a second rollback still goes back, not forward.
        assert (await store.rollback("docs", reason="still breaching")).active == "v0"
        with pytest.raises(ActivationRefused, match=r"no known-good version before 'v0'.*rolled back before: v1, v2"):
            await store.rollback("docs")
        with pytest.raises(ActivationRefused, match="'v2' of 'docs' was rolled back"):
            await store.rollback("docs", to="v2")
        assert (await store.activation("docs")).active == "v0"

        # Activating a rolled-back version again is deliberate: it may be rolled back from, to v0.
        await store.activate("docs", "v2", reason="fixed upstream, serve it again")
        assert (await store.rollback("docs")).active == "v0"
        # A version whose newest verdict failed is not known-good: v3 -> (v1 rolled back, v2 too) -> v0.
        await build(store, "docs", "v3", ROWS_V1)
        await store.activate("docs", "v3")
        await store.record_gate(await _version(store, "v0"), verdict(False, failed=["mrr=0.1<0.5"]))
        with pytest.raises(ActivationRefused, match="no known-good version before 'v3'"):
            await store.rollback("docs")
        history = [(h["action"], h["from_version"], h["to_version"]) for h in await store.history("docs", limit=4)]
        assert history == [
            ("activate", "v0", "v3"),
            ("rollback", "v2", "v0"),
            ("activate", "v0", "v2"),
            ("rollback", "v1", "v0"),
        ]


async def _version(store: KnowledgeStore, version: str) -> VersionRecord:
    record = await store.get_version("docs", version)
    assert record is not None
    return record


async def test_verdicts_are_kept_and_activation_needs_one_made_with_the_required_gate(pg_dsn: str) -> None:
    """Issue 16, item 4: a re-evaluation with weaker thresholds is recorded beside the first and opens nothing."""
    required = GateRequirement(
        k=5, thresholds={"precisionAtK": 0.6, "recallAtK": 0.8, "mrr": 0.5, "ndcgAtK": 0.6, "answerPassRate": None}
    )
    async with await KnowledgeStore.connect(pg_dsn) as store:
        record = await build(store, "docs", "v1", ROWS_V1, gate=None)
        await store.record_gate(record, verdict(False, failed=["recallAtK=0.700<0.800"]))
        await store.record_gate(record, verdict(True, recall=0.5))  # re-gated with a weaker recall threshold
        verdicts = await store.verdicts(record)
        assert [(v.passed, v.k, v.thresholds["recallAtK"], v.golden_digest) for v in verdicts] == [
            (False, 5, 0.8, "g" * 64),
            (True, 5, 0.5, "g" * 64),
        ]
        assert verdicts[0].metrics["recallAtK"] == 0.9 and verdicts[0].report["failedMetrics"] == [
            "recallAtK=0.700<0.800"
        ]
        assert all(v.evaluated_at is not None for v in verdicts)
        assert (await _version(store, "v1")).gate_passed is True  # the newest

        with pytest.raises(
            ActivationRefused, match=r"no passing verdict made with the required gate \(k=5, .*recallAtK>=0.8"
        ):
            await store.activate("docs", "v1", requirement=required)
        await store.record_gate(record, verdict(True, k=10))  # the right thresholds, another k
        with pytest.raises(ActivationRefused, match="3 verdict"):
            await store.activate("docs", "v1", requirement=required)
        assert (await store.activation("docs")).active is None

        await store.record_gate(record, verdict(True, recall=0.9))  # stricter than required: qualifies
        assert (await store.activate("docs", "v1", requirement=required)).active == "v1"
        # A golden set other than the one required does not qualify either.
        await build(store, "docs", "v2", ROWS_V1)
        with pytest.raises(ActivationRefused, match="golden set 000000000000"):
            await store.activate("docs", "v2", requirement=GateRequirement(5, {}, golden_digest="0" * 64))
        # Dropping a version drops its verdicts.
        await store.drop_version("docs", "v2")
        async with store.connection.transaction():
            cursor = await store.connection.execute("SELECT count(*) FROM ragops.kb_verdicts")
            assert (await cursor.fetchone()) == (3 + 1,)


async def test_first_builds_of_several_versions_at_once_all_register(pg_dsn: str) -> None:
    # Three build Jobs of a new knowledge base start together: each creates the shared chunk and
    # lexicon tables "if not exists", which PostgreSQL does not make safe against a concurrent
    # creator (a catalog unique violation). A full suite run lost a build Job attempt to it.
    stores = [await KnowledgeStore.connect(pg_dsn) for _ in range(3)]
    try:
        for attempt in range(5):
            records = await asyncio.gather(
                *(store.begin_version(f"kb{attempt}", f"v{i}", SPACE, SETTINGS) for i, store in enumerate(stores))
            )
            assert [record.version for record in records] == ["v0", "v1", "v2"]
            for store, record in zip(stores, records, strict=True):
                await store.end_build(record)
    finally:
        for store in stores:
            await store.close()
