"""The builders stay pure: their imports are the standard library's pure parts and the API models.

An import-linter contract would say the same for third-party modules; this also keeps out the
standard library's I/O and clock (os, pathlib, subprocess, time, datetime).
"""

from __future__ import annotations

import ast
from pathlib import Path

import ragops_operator.builders

BUILDERS = Path(ragops_operator.builders.__file__).parent
ALLOWED = {"__future__", "collections.abc", "dataclasses", "hashlib", "json", "posixpath", "re", "typing"}


def imported_modules(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            modules.add("." * node.level + (node.module or ""))
    return modules


def test_builders_import_only_pure_modules() -> None:
    for path in sorted(BUILDERS.glob("*.py")):
        for module in imported_modules(path):
            relative_ok = module.startswith(".") and (not module.startswith("..") or module.startswith("..api"))
            assert module in ALLOWED or relative_ok, f"{path.name} imports {module}"
