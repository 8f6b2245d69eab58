"""Embedding: texts to vectors, for knowledge-base builds (`embed_all`) and the query path.

The public surface of the package. `make_embedder` is the one place a provider name from a spec or
settings becomes an embedder; it validates and constructs, and does no I/O.
"""

from __future__ import annotations

from ragops_runtime.embedding.base import Embedder, EmbeddingError, EmbeddingStats
from ragops_runtime.embedding.batching import embed_all
from ragops_runtime.embedding.hashing import HashingEmbedder
from ragops_runtime.embedding.openai import OpenAIEmbedder
from ragops_runtime.embedding.static import StaticEmbedder

PROVIDERS = ("static", "hashing", "openai")
DEFAULT_PROVIDER = "static"
DEFAULT_MODELS: dict[str, str] = {"static": "wordllama-l2-supercat", "hashing": "hashing-v1"}
"""The model a provider uses when none is named; `openai` has none: its model is whatever the endpoint serves."""
DEFAULT_DIMENSIONS: dict[str, int] = {"static": 256, "hashing": 384, "openai": 384}


def make_embedder(
    provider: str,
    *,
    model: str,
    dimensions: int,
    endpoint: str | None = None,
    api_key: str | None = None,
    send_dimensions: bool = False,
) -> Embedder:
    """The embedder for `provider` ("static", "hashing" or "openai"); ValueError for anything it can't build.

    `endpoint` (the /v1 base URL) is required for "openai" and ignored by the others, as is `api_key`.
    `send_dimensions` asks an OpenAI model to shorten its vectors to `dimensions` (see OpenAIEmbedder).
    """
    if provider == "static":
        return StaticEmbedder(model=model, dimensions=dimensions)
    if provider == "hashing":
        return HashingEmbedder(dimensions=dimensions, model=model)
    if provider == "openai":
        if not endpoint:
            raise ValueError(
                "embedding provider 'openai' needs an endpoint: the /v1 base URL, "
                "e.g. https://api.openai.com/v1 or http://tei.default.svc:8080/v1"
            )
        return OpenAIEmbedder(endpoint, model, dimensions, api_key, send_dimensions=send_dimensions)
    raise ValueError(f"unknown embedding provider {provider!r}: expected one of {', '.join(PROVIDERS)}")


__all__ = [
    "DEFAULT_DIMENSIONS",
    "DEFAULT_MODELS",
    "DEFAULT_PROVIDER",
    "PROVIDERS",
    "Embedder",
    "EmbeddingError",
    "EmbeddingStats",
    "HashingEmbedder",
    "OpenAIEmbedder",
    "StaticEmbedder",
    "embed_all",
    "make_embedder",
]
