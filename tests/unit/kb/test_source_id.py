"""What a document's location is called where clients see it: relative to its source, never a server path."""

from __future__ import annotations

import pytest

from ragops_runtime.kb.ingest import source_id


@pytest.mark.parametrize(
    ("location", "sources", "shown"),
    [
        ("/srv/docs/a/b.md", ["/srv/docs"], "a/b.md"),
        ("/srv/docs/a/b.md", ["/srv/docs/"], "a/b.md"),
        ("/srv/docs/a/b.md", ["/srv", "/srv/docs"], "a/b.md"),  # the nearest source
        ("/srv/x.md", ["/srv/x.md"], "x.md"),  # a file named as a source
        ("/srv/docs/a/b.md", ["/srv/docs/**/*.md"], "a/b.md"),  # relative to the glob's fixed directory
        ("/srv/notes.jsonl:12", ["/srv/notes.jsonl"], "notes.jsonl:12"),  # a skipped JSONL line
        ("docs/a.md", ["docs"], "a.md"),  # a build from a relative path
        ("/elsewhere/q.md", ["/srv/docs"], "q.md"),  # under no source: the name only
        ("/srv/docs", ["/srv/docs"], "docs"),  # a source itself
        ("https://example.com/a?b=1", ["https://example.com/a?b=1"], "https://example.com/a?b=1"),
        ("/srv/docs/a.md", [], "a.md"),  # a version without a manifest
    ],
)
def test_source_id(location: str, sources: list[str], shown: str) -> None:
    assert source_id(location, sources) == shown
