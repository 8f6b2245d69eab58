"""The cost estimator's pure parts: what-if usage, prices, the monthly projection, the budget and the CLI."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from ragops_operator.cli import main
from ragops_runtime.cost import (
    MONTH,
    CostInputError,
    Usage,
    budget_from_ragdeployment,
    default_prices,
    estimate,
    parse_prices,
    parse_window,
    usage_what_if,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_what_if_matches_a_hand_computed_month() -> None:
    usage = usage_what_if(queries_per_month=100_000, context_tokens=3072, output_tokens=200, rerank=True)
    result = estimate(
        usage,
        default_prices(),
        model="claude-sonnet-4-6",
        embedding_model="text-embedding-3-small",
        reranker_model="rerank-v3.5",
    )
    by_service = {line.service: line.usd for line in result.lines}
    # Sonnet $3/$15 per Mtok, text-embedding-3-small $0.02 per Mtok, rerank-v3.5 $2 per 1000 calls.
    assert by_service == pytest.approx(
        {
            "generation input": 100_000 * 3072 * 3 / 1e6,
            "generation output": 100_000 * 200 * 15 / 1e6,
            "embedding": 100_000 * 20 * 0.02 / 1e6,
            "rerank": 100_000 * 2 / 1000,
        }
    )
    assert result.total_usd == pytest.approx(921.6 + 300 + 0.04 + 200)
    assert result.cost_per_query_usd == pytest.approx((921.6 + 300 + 0.04 + 200) / 100_000)
    assert result.scale == 1 and not result.unknown


def test_cache_hits_cost_nothing_but_count_as_queries() -> None:
    usage = usage_what_if(queries_per_month=1000, context_tokens=1000, output_tokens=100, cache_hit_rate=0.25)
    result = estimate(
        usage, default_prices(), model="claude-haiku-4-5", embedding_model="hashing-v1", reranker_model=None
    )
    assert result.monthly_queries == 1000
    assert result.total_usd == pytest.approx(750 * (1000 * 1.0 + 100 * 5.0) / 1e6)


def test_measured_usage_is_scaled_from_its_window_to_a_month() -> None:
    usage = Usage(
        "answer log",
        timedelta(days=3),
        queries=300,
        input_tokens=3e5,
        output_tokens=3e4,
        embedding_calls=300,
        embedding_tokens=6000,
        rerank_calls=0,
    )
    result = estimate(
        usage, default_prices(), model="claude-sonnet-4-6", embedding_model="hashing-v1", reranker_model=None
    )
    assert result.scale == 10
    assert result.monthly_queries == 3000
    assert result.total_usd == pytest.approx(10 * (3e5 * 3 + 3e4 * 15) / 1e6)


def test_an_unknown_price_is_unknown_never_zero() -> None:
    usage = usage_what_if(queries_per_month=10, context_tokens=10, output_tokens=10, rerank=True)
    result = estimate(usage, default_prices(), model="gpt-9", embedding_model="my-embedder", reranker_model="bge")
    assert {line.service: line.usd for line in result.lines} == {
        "generation input": None,
        "generation output": None,
        "embedding": None,
        "rerank": None,
    }
    assert len(result.unknown) == 3 and result.to_json()["complete"] is False
    assert (result.total_usd, result.cost_per_query_usd, result.known_usd) == (None, None, 0.0)


def test_budget_overrun_is_flagged() -> None:
    usage = usage_what_if(queries_per_month=1000, context_tokens=3000, output_tokens=300)
    prices = default_prices()
    over = estimate(
        usage,
        prices,
        model="claude-sonnet-4-6",
        embedding_model="hashing-v1",
        reranker_model=None,
        max_cost_per_query_usd=0.01,
    )
    assert over.cost_per_query_usd == pytest.approx((3000 * 3 + 300 * 15) / 1e6)  # 0.0135
    assert over.over_budget
    under = estimate(
        usage,
        prices,
        model="claude-haiku-4-5",
        embedding_model="hashing-v1",
        reranker_model=None,
        max_cost_per_query_usd=0.01,
    )
    assert not under.over_budget


def test_price_file_replaces_sections_and_must_say_when_it_was_checked() -> None:
    table = parse_prices("checked: 2026-01-15\ngeneration: {my-model: {input: 1, output: 2}}\nrerank: {bge: 0}\n")
    assert table.checked == "2026-01-15"
    assert set(table.generation) == {"my-model"} and table.rerank == {"bge": 0.0}
    assert table.embedding == default_prices().embedding
    with pytest.raises(CostInputError, match="checked"):
        parse_prices("generation: {}\n")
    with pytest.raises(CostInputError, match="unknown section"):
        parse_prices("checked: x\nllm: {}\n")
    with pytest.raises(CostInputError, match="not below 0"):
        parse_prices("checked: x\nembedding: {e: -1}\n")
    with pytest.raises(CostInputError, match="input: usd_per_mtok"):
        parse_prices("checked: x\ngeneration: {m: {input: 1}}\n")


def test_budget_comes_from_a_ragdeployment_file() -> None:
    assert budget_from_ragdeployment((EXAMPLES / "ragdeployment.yaml").read_text()) == 0.01
    custom = "kind: RagDeployment\nspec: {slo: {maxCostPerQueryUsd: 0.002}}\n"
    assert budget_from_ragdeployment(custom) == 0.002
    with pytest.raises(CostInputError, match="exactly one RagDeployment"):
        budget_from_ragdeployment("kind: ConfigMap\n")


def test_windows() -> None:
    assert parse_window("7d") == timedelta(days=7) and parse_window("90s") == timedelta(seconds=90)
    assert MONTH / parse_window("30d") == 1
    for bad in ("", "7", "0h", "1y", "-1d"):
        with pytest.raises(CostInputError):
            parse_window(bad)


def test_cli_exit_codes_gate_on_the_budget(tmp_path: Path) -> None:
    runner = CliRunner()
    base = ["cost", "estimate", "--queries-per-month", "1000", "--context-tokens", "3000", "--output-tokens", "300"]
    over = runner.invoke(main, [*base, "--ragdeployment", str(EXAMPLES / "ragdeployment.yaml"), "--output", "json"])
    assert over.exit_code == 3, over.output
    body = json.loads(over.output)
    assert body["overBudget"] is True and body["maxCostPerQueryUsd"] == 0.01
    assert body["costPerQueryUsd"] == pytest.approx(0.0135)
    within = runner.invoke(main, [*base, "--model", "claude-haiku-4-5", "--max-cost-per-query", "0.01"])
    assert within.exit_code == 0, within.output
    assert "within budget" in within.output and "generation output" in within.output
    unknown = runner.invoke(main, [*base, "--model", "gpt-9", "--max-cost-per-query", "0.01"])
    assert unknown.exit_code == 4 and "no price for generation model gpt-9" in unknown.output
    prices = tmp_path / "prices.yaml"
    prices.write_text("checked: 2026-02-01\ngeneration: {gpt-9: {input: 1, output: 1}}\n")
    priced = runner.invoke(main, [*base, "--model", "gpt-9", "--prices", str(prices), "--output", "json"])
    assert priced.exit_code == 0 and json.loads(priced.output)["costPerQueryUsd"] == pytest.approx(3300 / 1e6)
    assert json.loads(priced.output)["pricesChecked"] == "2026-02-01"
    both = runner.invoke(main, [*base, "--prometheus-url", "http://127.0.0.1:1"])
    assert both.exit_code == 2 and "exactly one source" in both.output
    assert "3 cost per query over the budget" in " ".join(
        runner.invoke(main, ["cost", "estimate", "--help"]).output.split()
    )


def test_an_unknown_model_is_never_free_and_fails_the_estimate(tmp_path: Path) -> None:
    """Issue 16, item 13: an unknown price is said, never summed as $0 or judged within budget."""
    ragops = [str(Path(sys.executable).parent / "ragops"), "cost", "estimate", "--queries-per-month", "1000"]
    for budget in ([], ["--max-cost-per-query", "0.01"]):
        table = subprocess.run([*ragops, "--model", "gpt-9", *budget], capture_output=True, text=True)
        assert table.returncode == 4, table.stdout + table.stderr
        text = " ".join(table.stdout.split())
        assert "no price for generation model gpt-9" in text and "cost per query: unknown" in text
        assert "within budget" not in text and re.search(r"total \(incomplete\)\W+unknown", text), text
    report = subprocess.run([*ragops, "--model", "gpt-9", "--output", "json"], capture_output=True, text=True)
    assert report.returncode == 4
    body = json.loads(report.stdout)
    assert (body["totalUsd"], body["costPerQueryUsd"], body["complete"]) == (None, None, False)
    assert body["unknownPrices"] == ["generation model gpt-9"] and body["knownUsd"] == 0.0
    prices = tmp_path / "prices.yaml"
    prices.write_text("checked: 2026-02-01\ngeneration: {gpt-9: {input: 1, output: 1}}\n")
    priced = subprocess.run([*ragops, "--model", "gpt-9", "--prices", str(prices)], capture_output=True, text=True)
    assert priced.returncode == 0, priced.stdout
