"""The values that flow through a knowledge-base build: documents in, chunks out.

Shared vocabulary of ingestion, chunking, embedding and storage. Pure data, no I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

DocumentFormat = Literal["markdown", "rst", "text", "html", "jsonl"]
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
    token count (see chunking.approximate_tokens). `context` says where the chunk sits, the
    document's title and its section headings ("json — JSON encoder and decoder > Basic Usage"):
    a chunk from the middle of a long section does not repeat them, yet both its embedding and
    its full-text entry need them, and a citation shows them.
    """

    document_id: str
    position: int
    text: str
    token_count: int
    heading_path: tuple[str, ...] = ()
    context: str = ""

    @property
    def embedding_text(self) -> str:
        """What is embedded and indexed for full-text search: the context line, then the text."""
        return f"{self.context}\n\n{self.text}" if self.context else self.text

    @property
    def digest(self) -> str:
        """SHA-256 of `embedding_text`: the embedding cache key (with provider, model, dimensions)."""
        return sha256_hex(self.embedding_text)
