"""The static embedder: the real model from the installed wheel, offline; determinism, dimensions, checks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ragops_runtime.embedding import EmbeddingError, StaticEmbedder, make_embedder
from ragops_runtime.embedding import static as static_module


def test_same_text_same_vector_across_instances_and_batches() -> None:
    first = StaticEmbedder().embed_many(["How do I delete a file?", "unrelated text"])
    second = StaticEmbedder().embed_many(["How do I delete a file?"])
    assert first.dtype == np.float32
    assert np.array_equal(first[0], second[0])


@pytest.mark.parametrize("dimensions", [64, 128, 256])
def test_vectors_have_the_requested_dimensions_and_unit_length(dimensions: int) -> None:
    vectors = StaticEmbedder(dimensions=dimensions).embed_many(["pretty print JSON", "a"])
    assert vectors.shape == (2, dimensions)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_smaller_dimensions_are_the_normalised_prefix_of_the_full_vector() -> None:
    """Matryoshka: 64 dimensions are the first 64 of the 256, renormalised (step 2 of the contract)."""
    full = StaticEmbedder(dimensions=256).embed_many(["remove a directory tree"])[0]
    prefix = StaticEmbedder(dimensions=64).embed_many(["remove a directory tree"])[0]
    assert np.allclose(prefix, full[:64] / np.linalg.norm(full[:64]), atol=1e-6)


def test_it_is_semantic_where_hashing_is_not() -> None:
    delete, remove, cake = StaticEmbedder().embed_many(
        ["how do I delete a file", "remove a file from the disk", "bake a chocolate cake"]
    )
    assert float(delete @ remove) > float(delete @ cake) + 0.3


async def test_empty_text_is_all_zeros_and_the_async_api_matches() -> None:
    embedder = make_embedder("static", model="wordllama-l2-supercat", dimensions=128)
    vectors = await embedder.embed_batch(["", "text"])
    assert vectors[0] == [0.0] * 128
    assert vectors[1] == StaticEmbedder(dimensions=128).embed_one("text")
    assert await embedder.embed_batch([]) == []


def test_unknown_models_and_dimensions_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown static embedding model 'potion-8m'"):
        StaticEmbedder(model="potion-8m")
    with pytest.raises(ValueError, match="has dimensions 64, 128, 256, not 384"):
        StaticEmbedder(dimensions=384)


def test_weights_that_differ_from_the_pinned_digest_are_refused() -> None:
    """Another wordllama release with other weights must not embed queries for versions built with these."""
    spec = dataclasses.replace(static_module.MODELS["wordllama-l2-supercat"], weights_sha256="0" * 64)
    with pytest.raises(EmbeddingError, match="not the pinned 000000000000"):
        static_module._load(spec)
