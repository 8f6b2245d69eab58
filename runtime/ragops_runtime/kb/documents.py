"""The values that flow through a knowledge-base build: documents in, chunks out.

Shared vocabulary of ingestion, chunking, embedding and storage. Pure data, no I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

DocumentFormat = Literal["markdown", "text", "html", "jsonl"]
MetadataValue = str | int | float | bool | None


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Document:
    """One source document, its text already extracted (Markdown stays Markdown).

    `id` is stable across versions: a local file's path relative to the --source directory
    it was found under (POSIX separators), a JSONL record's given id, or a URL. `digest` is
    the SHA-256 of `text`, so an unchanged document keeps its digest across builds.
    """

    id: str
    source: str
    text: str
    format: DocumentFormat
    title: str | None = None
    metadata: Mapping[str, MetadataValue] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        return sha256_hex(self.text)


@dataclass(frozen=True)
class Chunk:
    """A piece of one document, the unit that is embedded, indexed and retrieved.

    `position` is the 0-based index of the chunk within its document; `heading_path` the
    Markdown/HTML headings enclosing it, outermost first; `token_count` the approximate
    token count (see chunking.approximate_tokens).
    """

    document_id: str
    position: int
    text: str
    token_count: int
    heading_path: tuple[str, ...] = ()

    @property
    def digest(self) -> str:
        """SHA-256 of the text alone: the embedding cache key (with provider, model, dimensions)."""
        return sha256_hex(self.text)
