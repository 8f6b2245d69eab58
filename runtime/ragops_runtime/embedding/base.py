"""The embedding contract: what every embedder offers, the one error it raises, the counters it keeps.

Types only. Nothing here embeds, talks to a network or reads configuration; implementations live in
`static`, `hashing` and `openai`, batching in `batching`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


class EmbeddingError(Exception):
    """Embedding failed. The message names the endpoint (or provider) and model and the cause.

    It never contains an API key: implementations redact the key from anything a server echoes
    back, because these messages end up in Kubernetes status conditions and logs.
    """


class Embedder(Protocol):
    """Turns texts into fixed-length vectors; the same text always yields the same vector.

    `provider`, `model` and `dimensions` together identify the vector space: vectors from embedders
    that differ in any of them must never be compared or stored in the same index.
    """

    provider: str  # "static" | "hashing" | "openai"
    model: str
    dimensions: int
    # Requests retried since construction, so `embed_all` can report them; 0 for an embedder that never retries.
    retries: int

    async def embed_batch(self, texts: Sequence[str]) -> list[list[float]]:
        """One request's worth: a vector of length `dimensions` per text, in input order."""
        ...

    async def aclose(self) -> None:
        """Release connections; the embedder is unusable afterwards."""
        ...


@dataclass
class EmbeddingStats:
    """What one `embed_all` call did: batches sent, texts embedded, requests retried."""

    requests: int = 0
    texts: int = 0
    retries: int = 0
