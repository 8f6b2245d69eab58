"""The one place names from users (knowledge bases, versions, embedding spaces) become SQL identifiers.

Every table name derived from a user-chosen name goes through `derived_identifier`: lower-cased,
reduced to [a-z0-9_], truncated with a hash of the original so distinct names never collide
after truncation, and returned as `psycopg.sql.Identifier`, so it is always quoted and never
formatted into SQL text. Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import re

from psycopg import sql

SCHEMA = "ragops"
# PostgreSQL truncates identifiers to NAMEDATALEN - 1 = 63 bytes; stay below it with room for suffixes.
_MAX_IDENTIFIER = 63
_HASH_LENGTH = 10
_UNSAFE = re.compile(r"[^a-z0-9_]+")


def sanitized_name(*parts: str, suffix: str = "") -> str:
    """A readable, collision-free table name for `parts` ("docs", "v1") plus a fixed `suffix`.

    The hash covers the original parts, so "a-b" and "a_b" (equal once sanitized) differ.
    """
    raw = "\x1f".join(parts)
    digest = hashlib.sha256(raw.encode("utf-8")).hexdigest()[:_HASH_LENGTH]
    readable = _UNSAFE.sub("_", "_".join(parts).lower()).strip("_") or "x"
    room = _MAX_IDENTIFIER - len(suffix) - _HASH_LENGTH - 1
    return f"{readable[:room].rstrip('_')}_{digest}{suffix}"


def derived_identifier(*parts: str, suffix: str = "") -> sql.Identifier:
    """The schema-qualified, quoted identifier of a table derived from user-chosen names."""
    return sql.Identifier(SCHEMA, sanitized_name(*parts, suffix=suffix))
