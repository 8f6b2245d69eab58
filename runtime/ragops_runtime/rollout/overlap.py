"""How much two rankings of the same query agree: Jaccard and rank-biased overlap, by chunk and document.

Shadow retrieval and golden probes compare the candidate's top-k with stable's. Two measures:
Jaccard (shared items over all items) ignores order; rank-biased overlap (Webber, Moffat and Zobel, "A
similarity measure for indefinite rankings", TOIS 2010) weights agreement at the top more, with
persistence `p` (0.9: the first 10 ranks carry about 86 % of the weight). RBO here is their
extrapolated form, RBO_ext (eq. 32), which handles lists of different lengths and is 1 for
identical lists.

Chunks are compared by (document id, text), not by row id: two versions in different embedding
spaces store the same chunk in different tables under different ids. Documents are compared by
id, each at its first rank. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Literal

from ..store import RetrievedChunk

Level = Literal["chunk", "document"]
Measure = Literal["jaccard", "rbo"]
LEVELS: tuple[Level, ...] = ("chunk", "document")
MEASURES: tuple[Measure, ...] = ("jaccard", "rbo")
RBO_PERSISTENCE = 0.9


def jaccard(first: Sequence[Hashable], second: Sequence[Hashable]) -> float:
    """Shared over all distinct items of the two lists' items; 1.0 when both are empty (they agree)."""
    a, b = set(first), set(second)
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def rank_biased_overlap(first: Sequence[Hashable], second: Sequence[Hashable], p: float = RBO_PERSISTENCE) -> float:
    """RBO_ext of two rankings without repeated items; 1.0 for identical ones, 0.0 for disjoint ones."""
    if not 0 < p < 1:
        raise ValueError(f"persistence p must be between 0 and 1, got {p}")
    short, long = (first, second) if len(first) <= len(second) else (second, first)
    s, length = len(short), len(long)
    if s == 0:
        return 1.0 if length == 0 else 0.0
    seen_short: set[Hashable] = set()
    seen_long: set[Hashable] = set()
    overlap = 0
    weighted = 0.0
    overlap_at_s = 0
    for depth in range(1, length + 1):
        item = long[depth - 1]
        if depth <= s:
            other = short[depth - 1]
            # overlap grows by each item now seen in both prefixes
            if item == other:
                overlap += 1
            else:
                overlap += (item in seen_short) + (other in seen_long)
            seen_short.add(other)
            seen_long.add(item)
            if depth == s:
                overlap_at_s = overlap
        elif item in seen_short:
            overlap += 1  # beyond the short list, only the long list grows
        weighted += overlap / depth * p**depth
        if depth > s:
            weighted += overlap_at_s * (depth - s) / (s * depth) * p**depth
    tail = ((overlap - overlap_at_s) / length + overlap_at_s / s) * p**length
    return (1 - p) / p * weighted + tail


def chunk_identity(chunk: RetrievedChunk) -> tuple[str, str]:
    return (chunk.document_id, chunk.text)


def document_ranking(chunks: Sequence[RetrievedChunk]) -> list[str]:
    """Document ids in the order of their best chunk."""
    return list(dict.fromkeys(chunk.document_id for chunk in chunks))


def compare(
    stable: Sequence[RetrievedChunk], candidate: Sequence[RetrievedChunk], k: int
) -> dict[tuple[str, str], float]:
    """Every (level, measure) of the two top-k lists."""
    stable_chunks = list(dict.fromkeys(chunk_identity(c) for c in stable[:k]))
    candidate_chunks = list(dict.fromkeys(chunk_identity(c) for c in candidate[:k]))
    stable_documents = document_ranking(stable[:k])
    candidate_documents = document_ranking(candidate[:k])
    return {
        ("chunk", "jaccard"): jaccard(stable_chunks, candidate_chunks),
        ("chunk", "rbo"): rank_biased_overlap(stable_chunks, candidate_chunks),
        ("document", "jaccard"): jaccard(stable_documents, candidate_documents),
        ("document", "rbo"): rank_biased_overlap(stable_documents, candidate_documents),
    }
