"""The README's marked snippets (`<!-- snippet: NAME -->` before a fenced block), for the tests that run them."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
_SNIPPET = re.compile(r"<!-- snippet: (?P<name>[a-z0-9-]+) -->\n```[a-z]+\n(?P<body>.*?)```\n", re.DOTALL)


def readme_snippet(name: str) -> str:
    found = {match["name"]: match["body"] for match in _SNIPPET.finditer(README.read_text())}
    assert name in found, f"README.md has no snippet {name!r} (it has {sorted(found)})"
    return found[name]
