"""/v1/query's JSON is built directly from the answer; it must be exactly what the QueryResponse model gives."""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import replace

import pytest

from ragops_runtime.app import Citation, QueryResponse, Usage, response_json
from ragops_runtime.service import Answer, passages
from ragops_runtime.store import RetrievedChunk

CHUNKS = (
    RetrievedChunk(
        chunk_id=7,
        document_id="batteries/error-codes.md",
        source="batteries/error-codes.md",
        position=2,
        heading_path=("Batteries", "Error codes — E4 « niveau »"),
        text="E4 means the cell is too cold: charge it at room temperature. 温度",
        score=0.032786885245901641,
        metadata={"product": "ebike"},
    ),
    RetrievedChunk(
        chunk_id=12,
        document_id="warranty/frame.md",
        source="https://docs.example.com/warranty/frame",
        position=0,
        heading_path=(),
        text='Frames carry a "lifetime" warranty.\n\nSee the terms.',
        score=1.0,
    ),
)
RETRIEVAL_ONLY = Answer(
    query_id=uuid.UUID("5f0c6a4e-8d8a-4a43-9b6e-0e2f5d1c9a11"),
    knowledge_base="sample",
    kb_version="v1",
    answer=None,
    mode="retrieval_only",
    degraded_reason=None,
    chunks=CHUNKS,
    input_tokens=0,
    output_tokens=0,
    cost_usd=0.0,
    timings_ms={"embed": 0.41, "retrieve": 3.2, "total": 4.0},
)
CASES = {
    "retrieval only": RETRIEVAL_ONLY,
    "generated, canary": replace(
        RETRIEVAL_ONLY,
        answer="Charge it at room temperature [1].",
        mode="generated",
        role="canary",
        input_tokens=812,
        output_tokens=41,
        cost_usd=0.003051,
        timings_ms={"embed": 0.4, "retrieve": 3.1, "generate": 812.5, "total": 816.0},
    ),
    "degraded, no price, no passages": replace(
        RETRIEVAL_ONLY, degraded_reason="reranker timeout: kept the retrieval order", cost_usd=None, chunks=()
    ),
    "cached": replace(RETRIEVAL_ONLY, mode="cached", timings_ms={"total": 0.2}),
    "non-finite numbers": replace(
        RETRIEVAL_ONLY, chunks=(replace(CHUNKS[0], score=math.nan),), timings_ms={"total": math.inf}
    ),
}


def through_the_model(answer: Answer) -> dict[str, object]:
    """The answer validated into QueryResponse and dumped as JSON: what the runtime sent before."""
    return QueryResponse(
        query_id=answer.query_id,
        knowledge_base=answer.knowledge_base,
        kb_version=answer.kb_version,
        role=answer.role,
        answer=answer.answer,
        mode=answer.mode,
        degraded=answer.degraded,
        degraded_reason=answer.degraded_reason,
        citations=[Citation.model_validate(p) for p in passages(answer.chunks)],
        usage=Usage(input_tokens=answer.input_tokens, output_tokens=answer.output_tokens),
        cost_usd=answer.cost_usd,
        timings_ms=dict(answer.timings_ms),
    ).model_dump(mode="json", by_alias=True)


@pytest.mark.parametrize("answer", CASES.values(), ids=CASES.keys())
def test_the_response_json_is_what_the_model_gives(answer: Answer) -> None:
    # The same keys in the same order and the same values (NaN included, which == would not tell).
    assert json.dumps(response_json(answer)) == json.dumps(through_the_model(answer))
