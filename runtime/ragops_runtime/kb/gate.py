"""The golden-set gate of a built version: retrieve every case on the serving path, score, record.

Retrieval goes through `retrieval.hybrid.retrieve`, the same function the runtime answers with,
so the gate measures what users will get. The verdict is added to the version's verdicts in the
store (earlier ones are kept), with the k, thresholds and golden-set digest it was made with;
activation checks them. Metrics and the verdict itself are computed by the pure `evaluation` module.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from ..embedding import Embedder, make_embedder
from ..generation.anthropic import AnthropicGenerator, GenerationUnavailable
from ..retrieval.hybrid import retrieve
from ..store import GateVerdict, KnowledgeStore, VersionRecord
from .evaluation import (
    EvaluationReport,
    GoldenCase,
    Thresholds,
    evaluate,
    golden_set_digest,
    load_golden_set,
    unknown_relevant_ids,
)


class GateError(Exception):
    """The evaluation cannot run (version not built, golden set inconsistent with the version)."""


def candidates_for(k: int) -> int:
    """Chunks retrieved per case: several chunks of one document count once, so fetch more than k."""
    return max(20, 4 * k)


async def evaluate_version(
    store: KnowledgeStore,
    knowledge_base: str,
    version: str,
    golden_path: Path,
    *,
    k: int,
    thresholds: Thresholds,
    hybrid: bool = True,
    api_key: str | None = None,
    embedder: Embedder | None = None,
    generator: AnthropicGenerator | None = None,
    context_passages: int = 5,
) -> EvaluationReport:
    """Scores `version` on the golden set, records the verdict in the store and returns the report.

    With a `generator`, every case that has answerContains is also answered from its top
    `context_passages` passages, as the runtime would, and the expected phrases are checked; a
    generation failure counts as a failed check (the report cannot vouch for that answer).
    """
    record = await store.get_version(knowledge_base, version)
    if record is None:
        raise GateError(f"knowledge base {knowledge_base!r} has no version {version!r}")
    if record.status != "built":
        raise GateError(f"version {version!r} is {record.status}, not built: build it before evaluating")
    golden = load_golden_set(golden_path)
    digest = golden_set_digest(golden)
    cases = await _cases_in_document_ids(store, record, golden)

    owned = embedder is None
    if embedder is None:
        embedder = make_embedder(
            record.space.provider,
            model=record.space.model,
            dimensions=record.space.dimensions,
            endpoint=(record.settings.get("embedding") or {}).get("endpoint"),
            api_key=api_key,
        )
    try:
        vectors = await embedder.embed_batch([case.query for case in cases])
        retrieved: dict[str, list[str]] = {}
        answers: dict[str, str] = {}
        for case, vector in zip(cases, vectors, strict=True):
            hits = await retrieve(
                store, record, np.asarray(vector, dtype=np.float32), case.query, top_k=candidates_for(k), hybrid=hybrid
            )
            retrieved[case.id] = [hit.document_id for hit in hits]
            if generator is not None and case.answer_contains:
                try:
                    answers[case.id] = (await generator.generate(case.query, hits[:context_passages])).text
                except GenerationUnavailable:
                    answers[case.id] = ""
    finally:
        if owned:
            await embedder.aclose()

    report = evaluate(cases, retrieved, k=k, thresholds=thresholds, answers=answers if generator else None)
    await store.record_gate(
        record,
        GateVerdict(
            passed=report.passed,
            k=k,
            thresholds=thresholds.to_json(),
            golden_digest=digest,
            metrics=dict(report.metrics),
            report={**report.to_json(), "hybrid": hybrid},
        ),
    )
    return report


async def _cases_in_document_ids(
    store: KnowledgeStore, record: VersionRecord, cases: list[GoldenCase]
) -> list[GoldenCase]:
    """Golden cases may name documents by id or by source path; retrieval returns ids."""
    sources = await store.source_of_documents(record)
    alias = {document_id: document_id for document_id in sources}
    for document_id, source in sources.items():
        alias.setdefault(source, document_id)
    unknown = unknown_relevant_ids(cases, alias.keys())
    if unknown:
        details = "; ".join(
            f"case {case_id!r} names unknown document(s) {', '.join(map(repr, ids))}"
            for case_id, ids in sorted(unknown.items())
        )
        raise GateError(f"the golden set does not match version {record.version!r}: {details}")
    return [replace(case, relevant=tuple(dict.fromkeys(alias[r] for r in case.relevant))) for case in cases]
