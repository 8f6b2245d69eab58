"""Hybrid retrieval: pgvector similarity and PostgreSQL full-text search, fused by reciprocal rank.

The golden-set gate and the runtime both call `retrieve`, so a version is judged on exactly the
path that will serve it. Fusion is pure (`reciprocal_rank_fusion`); SQL stays in the store.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from ..store import KnowledgeStore, RetrievedChunk, VersionRecord

RRF_K = 60
"""The constant of Cormack et al. (2009): damps the weight of top ranks; 60 is their default."""


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[RetrievedChunk]], k: int, rrf_k: int = RRF_K
) -> list[RetrievedChunk]:
    """Merges rankings by sum of 1 / (rrf_k + rank); the fused score replaces the per-list scores.

    Ties are broken by the best single rank, then by chunk id, so the order is deterministic.
    """
    scores: dict[int, float] = {}
    best_rank: dict[int, int] = {}
    chunks: dict[int, RetrievedChunk] = {}
    for ranking in rankings:
        for rank, chunk in enumerate(ranking, start=1):
            scores[chunk.chunk_id] = scores.get(chunk.chunk_id, 0.0) + 1.0 / (rrf_k + rank)
            best_rank[chunk.chunk_id] = min(best_rank.get(chunk.chunk_id, rank), rank)
            chunks.setdefault(chunk.chunk_id, chunk)
    order = sorted(scores, key=lambda chunk_id: (-scores[chunk_id], best_rank[chunk_id], chunk_id))
    return [replace(chunks[chunk_id], score=scores[chunk_id]) for chunk_id in order[:k]]


async def retrieve(
    store: KnowledgeStore,
    record: VersionRecord,
    query_vector: np.ndarray,
    query_text: str,
    *,
    top_k: int,
    hybrid: bool,
    metadata: dict[str, Any] | None = None,
) -> list[RetrievedChunk]:
    """The top_k chunks of `record` for a query: vector search, fused with full-text when hybrid.

    `metadata` keeps only chunks whose document metadata contains every given key and value.
    """
    vector_hits = await store.vector_search(record, query_vector.astype(np.float32), top_k, metadata=metadata)
    if not hybrid:
        return vector_hits
    text_hits = await store.text_search(record, query_text, top_k, metadata=metadata)
    return reciprocal_rank_fusion([vector_hits, text_hits], top_k)
