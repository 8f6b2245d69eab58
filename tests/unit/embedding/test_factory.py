"""make_embedder: provider names from a spec or settings become embedders, or a clear ValueError."""

from __future__ import annotations

import pytest

from ragops_runtime.embedding import HashingEmbedder, OpenAIEmbedder, make_embedder
from tests.support.openai_embeddings import running_openai_embeddings_server


async def test_hashing() -> None:
    embedder = make_embedder("hashing", model="hashing-v1", dimensions=64)
    assert isinstance(embedder, HashingEmbedder)
    assert (embedder.provider, embedder.model, embedder.dimensions) == ("hashing", "hashing-v1", 64)


async def test_openai_is_wired_to_its_endpoint_key_and_dimensions() -> None:
    with running_openai_embeddings_server(12) as server:
        embedder = make_embedder(
            "openai", model="text-embedding-3-small", dimensions=12, endpoint=server.url, api_key="sk-factory-key"
        )
        try:
            assert isinstance(embedder, OpenAIEmbedder)
            assert (embedder.provider, embedder.model, embedder.dimensions) == ("openai", "text-embedding-3-small", 12)
            [vector] = await embedder.embed_batch(["hello"])
        finally:
            await embedder.aclose()
        [request] = server.requests
    assert len(vector) == 12
    assert request.headers["authorization"] == "Bearer sk-factory-key"
    assert request.body["model"] == "text-embedding-3-small"
    assert "dimensions" not in request.body


@pytest.mark.parametrize("endpoint", [None, ""])
def test_openai_without_an_endpoint_is_refused(endpoint: str | None) -> None:
    with pytest.raises(ValueError, match="'openai' needs an endpoint: the /v1 base URL"):
        make_embedder("openai", model="m", dimensions=8, endpoint=endpoint)


def test_an_unknown_provider_is_refused_with_the_known_ones() -> None:
    with pytest.raises(
        ValueError, match="unknown embedding provider 'cohere': expected one of static, hashing, openai"
    ):
        make_embedder("cohere", model="m", dimensions=8)
