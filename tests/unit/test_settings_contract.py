"""The README's settings table is exactly the runtime's settings class: users configure from it."""

from __future__ import annotations

import re
from pathlib import Path

from ragops_runtime.settings import RuntimeSettings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_lists_every_setting_with_its_default() -> None:
    text = README.read_text()
    table = text.split("<!-- settings-table", 1)[1].split("<!-- /settings-table -->", 1)[0]
    documented = dict(re.findall(r"^\| `([^`]+)` \| ([^|]*) \|", table, re.MULTILINE))
    expected = {}
    for name, field in RuntimeSettings.model_fields.items():
        choices = getattr(field.validation_alias, "choices", None)
        variable = " / ".join(map(str, choices)) if choices else f"RAGOPS_{name.upper()}"
        default = "hostname" if field.default_factory is not None else "—" if field.default is None else field.default
        expected[variable] = str(default)
    assert {k: v.strip() for k, v in documented.items()} == expected
