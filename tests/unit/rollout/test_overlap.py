"""Overlap of two rankings: Jaccard and rank-biased overlap (RBO_ext), by chunk and by document."""

from __future__ import annotations

import random

import pytest

from ragops_runtime.rollout.overlap import compare, jaccard, rank_biased_overlap
from ragops_runtime.store import RetrievedChunk


def rbo_ext_by_definition(first: list[str], second: list[str], p: float = 0.9) -> float:
    """Webber et al. (2010), eq. 32, written out with set intersections: the reference to check against."""
    short, long = (first, second) if len(first) <= len(second) else (second, first)
    s, length = len(short), len(long)

    def overlap(depth: int) -> int:
        return len(set(short[: min(depth, s)]) & set(long[:depth]))

    x_s, x_l = overlap(s), overlap(length)
    total = sum(overlap(d) / d * p**d for d in range(1, length + 1))
    total += sum(x_s * (d - s) / (s * d) * p**d for d in range(s + 1, length + 1))
    return (1 - p) / p * total + ((x_l - x_s) / length + x_s / s) * p**length


def test_identical_rankings_are_1_and_disjoint_ones_0() -> None:
    ranking = [f"d{i}" for i in range(10)]
    assert rank_biased_overlap(ranking, ranking) == pytest.approx(1.0)
    assert rank_biased_overlap(ranking, [f"x{i}" for i in range(10)]) == 0.0
    assert rank_biased_overlap([], []) == 1.0 and rank_biased_overlap(ranking, []) == 0.0
    assert jaccard(ranking, list(reversed(ranking))) == 1.0 and jaccard([], []) == 1.0
    assert jaccard(["a", "b"], ["b", "c"]) == pytest.approx(1 / 3)


def test_rbo_weights_the_top_more_than_jaccard_does() -> None:
    base = [f"d{i}" for i in range(10)]
    top_swapped = [base[1], base[0], *base[2:]]
    bottom_swapped = [*base[:8], base[9], base[8]]
    assert jaccard(base, top_swapped) == jaccard(base, bottom_swapped) == 1.0
    assert rank_biased_overlap(base, top_swapped) < rank_biased_overlap(base, bottom_swapped) < 1.0
    lost_top = ["new", *base[1:]]
    lost_bottom = [*base[:9], "new"]
    assert rank_biased_overlap(base, lost_top) < rank_biased_overlap(base, lost_bottom)


@pytest.mark.parametrize("seed", range(40))
def test_rbo_matches_its_definition_on_uneven_rankings(seed: int) -> None:
    rng = random.Random(seed)
    universe = [f"d{i}" for i in range(25)]
    first = rng.sample(universe, rng.randint(1, 12))
    second = rng.sample(universe, rng.randint(1, 12))
    value = rank_biased_overlap(first, second)
    assert value == pytest.approx(rbo_ext_by_definition(first, second), abs=1e-12)
    assert value == pytest.approx(rank_biased_overlap(second, first), abs=1e-12)
    assert 0.0 <= value <= 1.0


def test_persistence_must_be_a_probability() -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        rank_biased_overlap(["a"], ["a"], p=1.0)


def chunk(chunk_id: int, document: str, text: str) -> RetrievedChunk:
    return RetrievedChunk(chunk_id, document, f"/src/{document}", 0, (), text, 0.5)


def test_compare_matches_chunks_by_content_across_embedding_spaces() -> None:
    # Another embedding space stores the same chunks in another table, under other ids.
    stable = [chunk(1, "a.md", "alpha"), chunk(2, "a.md", "beta"), chunk(3, "b.md", "gamma")]
    candidate = [chunk(901, "a.md", "alpha"), chunk(902, "c.md", "delta"), chunk(903, "a.md", "beta")]
    values = compare(stable, candidate, k=3)
    assert values[("chunk", "jaccard")] == pytest.approx(2 / 4)
    # Documents at their first rank: stable (a, b), candidate (a, c).
    assert values[("document", "jaccard")] == pytest.approx(1 / 3)
    assert values[("document", "rbo")] == pytest.approx(rbo_ext_by_definition(["a.md", "b.md"], ["a.md", "c.md"]))
    assert compare(stable, stable, k=3) == {key: pytest.approx(1.0) for key in values}
    # Only the top k count.
    assert compare(stable, [*stable[:1], chunk(9, "z.md", "other")], k=1)[("chunk", "jaccard")] == 1.0
