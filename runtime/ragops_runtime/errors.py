"""Text of errors as the runtime reports them (status messages, logs, degraded reasons)."""

from __future__ import annotations


def first_line(error: BaseException) -> str:
    """The error's first line, or its type's name when it has no text: a driver's multi-line
    message (psycopg adds context lines) would otherwise spill into a one-line status."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
