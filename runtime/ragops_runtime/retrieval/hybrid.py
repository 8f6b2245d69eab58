"""Hybrid retrieval: pgvector similarity and BM25 over the chunks' words, fused by weighted reciprocal rank.

The golden-set gate and the runtime both call `retrieve`, so a version is judged on exactly the
path that will serve it. The fusion itself runs in the database, in the same statement as both
halves (see `KnowledgeStore.hybrid_search`): one round trip per query.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..store import Fusion, KnowledgeStore, RetrievedChunk, VersionRecord


async def retrieve(
    store: KnowledgeStore,
    record: VersionRecord,
    query_vector: np.ndarray,
    query_text: str,
    *,
    top_k: int,
    hybrid: bool,
    fusion: Fusion | None = None,
    metadata: dict[str, Any] | None = None,
) -> list[RetrievedChunk]:
    """The top_k chunks of `record` for a query: vector search, fused with BM25 when hybrid.

    `metadata` keeps only chunks whose document metadata contains every given key and value.
    """
    vector = query_vector.astype(np.float32)
    if not hybrid:
        return await store.vector_search(record, vector, top_k, metadata=metadata)
    return await store.hybrid_search(record, vector, query_text, top_k, fusion=fusion or Fusion(), metadata=metadata)
