"""The benchmarks' pure helpers: statistics, ratios against a named baseline, the README table."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from bench.common import Row, percentile, result_document, summarize, with_ratios
from bench.report import BEGIN, END, format_number, render, splice, validate

MACHINE = {"cpu": "Test CPU", "cores": 2, "memory_gb": 8.0, "python": "3.11.9", "postgres": "PostgreSQL 18 + pgvector"}


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([5.0], 50, 5.0),
        ([1.0, 2.0, 3.0, 4.0], 50, 2.5),
        ([1.0, 2.0, 3.0, 4.0, 5.0], 95, 4.8),
        ([3.0, 1.0, 2.0], 0, 1.0),
        ([3.0, 1.0, 2.0], 100, 3.0),
    ],
)
def test_percentile_interpolates_between_closest_ranks(values: list[float], q: float, expected: float) -> None:
    assert percentile(values, q) == pytest.approx(expected)


def test_percentile_refuses_nothing_and_out_of_range() -> None:
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_summarize_reports_milliseconds_and_throughput() -> None:
    summary = summarize([0.010, 0.020, 0.030, 0.040], wall_seconds=0.5)
    assert summary.p50_ms == pytest.approx(25.0)
    assert summary.qps == pytest.approx(8.0)


def test_ratios_come_from_the_named_baseline_row() -> None:
    rows = with_ratios(
        [Row("floor", 4000.0, "chunks/s"), Row("ragops", 1000.0, "chunks/s", baseline="floor", repeats=3)]
    )
    assert rows[0].ratio is None
    assert rows[1].ratio == pytest.approx(0.25)
    with pytest.raises(ValueError, match="not a row"):
        with_ratios([Row("ragops", 1.0, "s", baseline="missing")])


def test_result_document_has_the_shared_format() -> None:
    document = result_document(
        "kb_build", MACHINE, [Row("a", 2.0, "s"), Row("b", 1.0, "s", "a")], datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    )
    assert document == {
        "benchmark": "kb_build",
        "machine": MACHINE,
        "ran_at": "2026-01-02T03:04:05+00:00",
        "rows": [
            {"measure": "a", "value": 2.0, "unit": "s", "baseline": None, "ratio": None, "repeats": 1},
            {"measure": "b", "value": 1.0, "unit": "s", "baseline": "a", "ratio": 0.5, "repeats": 1},
        ],
    }


@pytest.mark.parametrize(
    ("value", "text"), [(100000, "100,000"), (1234.56, "1,235"), (5.8123, "5.812"), (0.00101, "0.00101")]
)
def test_numbers_keep_four_significant_digits(value: float, text: str) -> None:
    assert format_number(value) == text


def _document(name: str, machine: dict[str, Any] = MACHINE) -> dict[str, Any]:
    return {
        "benchmark": name,
        "machine": machine,
        "ran_at": "2026-01-02T03:04:05+00:00",
        "rows": [
            {"measure": "x | y", "value": 3.0, "unit": "ms", "baseline": None, "ratio": None, "repeats": 3},
            {"measure": "z", "value": 1.5, "unit": "ms", "baseline": "x | y", "ratio": 0.5, "repeats": 3},
        ],
    }


def test_render_names_the_machine_once_and_orders_known_benchmarks() -> None:
    block = render([_document("version_switch"), _document("zzz_other"), _document("kb_build")])
    assert block.count("Test CPU, 2 cores, 8.0 GB RAM") == 1
    assert block.index("**kb_build**") < block.index("**version_switch**") < block.index("**zzz_other**")
    assert "| x \\| y | 3 ms |  |  | 3 |" in block
    assert "| z | 1.5 ms | 0.5 | x \\| y | 3 |" in block


def test_render_names_each_machine_when_they_differ() -> None:
    block = render([_document("kb_build"), _document("retrieval", {**MACHINE, "cpu": "Other CPU"})])
    assert "Machine:" not in block
    assert "on Test CPU" in block and "on Other CPU" in block


def test_splice_replaces_only_the_marked_block() -> None:
    readme = f"# title\n\n{BEGIN}\nold\n{END}\n\nafter\n"
    assert splice(readme, "new") == f"# title\n\n{BEGIN}\nnew\n{END}\n\nafter\n"
    with pytest.raises(ValueError):
        splice("no markers", "new")
    with pytest.raises(ValueError):
        splice(f"{END}\n{BEGIN}", "new")


def test_validate_names_the_file_and_what_is_missing() -> None:
    with pytest.raises(ValueError, match=r"operator_scale\.json: missing machine"):
        validate({"benchmark": "x", "ran_at": "t", "rows": []}, "operator_scale.json")
    with pytest.raises(ValueError, match="row 0 lacks repeats"):
        validate(
            {**_document("x"), "rows": [{"measure": "m", "value": 1, "unit": "s", "baseline": None, "ratio": None}]},
            "f",
        )
