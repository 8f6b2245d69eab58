"""Cost from token counts: longest-prefix prices, unknown models, and the operator's price table."""

from __future__ import annotations

import pytest

from ragops_runtime.generation.pricing import DEFAULT_PRICES, Price, cost_usd, parse_price_table


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        # 1M in and 1M out: the cost is the sum of the two per-million prices.
        ("claude-sonnet-4-5", 3.0 + 15.0),
        ("claude-sonnet-4-5-20250929", 3.0 + 15.0),
        ("claude-sonnet-4-20250514", 3.0 + 15.0),
        ("claude-haiku-4-5-20251001", 1.0 + 5.0),
        ("claude-opus-4-1-20250805", 15.0 + 75.0),
        ("claude-opus-4-20250514", 15.0 + 75.0),
        ("claude-opus-4-5", 5.0 + 25.0),
    ],
)
def test_default_prices_match_by_prefix(model: str, expected: float) -> None:
    assert cost_usd(model, 1_000_000, 1_000_000, DEFAULT_PRICES) == pytest.approx(expected)


@pytest.mark.parametrize("model", ["claude-opus-4-8", "claude-sonnet-5", "gpt-4o", "", "sonnet-4-5"])
def test_a_model_the_table_does_not_know_costs_none_not_zero(model: str) -> None:
    assert cost_usd(model, 1200, 300, DEFAULT_PRICES) is None


def test_the_longest_prefix_wins_and_tokens_are_priced_per_million() -> None:
    prices = {"acme": Price(10.0, 10.0), "acme-large": Price(2.0, 8.0), "acme-large-v2": Price(1.0, 4.0)}
    assert cost_usd("acme-large-2025", 1500, 250, prices) == pytest.approx((1500 * 2.0 + 250 * 8.0) / 1e6)
    assert cost_usd("acme-large-v2-preview", 1500, 250, prices) == pytest.approx((1500 * 1.0 + 250 * 4.0) / 1e6)
    assert cost_usd("acme-small", 0, 0, prices) == 0.0
    with pytest.raises(ValueError, match="must not be negative"):
        cost_usd("acme", -1, 0, prices)


def test_parse_price_table() -> None:
    table = parse_price_table(
        '{"claude-sonnet-4-6": {"input": 3, "output": 15.0}, "local-llm": {"input": 0, "output": 0}}'
    )
    assert table == {"claude-sonnet-4-6": Price(3.0, 15.0), "local-llm": Price(0.0, 0.0)}
    assert cost_usd("claude-sonnet-4-6-20260101", 2_000, 1_000, table) == pytest.approx(0.021)
    assert parse_price_table("{}") == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"claude": {"input": 3.0, "output": 15.0}', "not valid JSON"),
        ('[{"input": 3.0, "output": 15.0}]', "must be a JSON object"),
        ('{"": {"input": 3.0, "output": 15.0}}', "empty model prefix"),
        ('{"claude": [3.0, 15.0]}', "'claude' must be an object"),
        ('{"claude": {"input": 3.0}}', "'claude' needs 'output'"),
        ('{"claude": {"input": "3", "output": 15.0}}', "'claude' needs 'input'"),
        ('{"claude": {"input": true, "output": 15.0}}', "'claude' needs 'input'"),
        ('{"claude": {"input": -1, "output": 15.0}}', "'input' must be finite and not negative"),
        ('{"claude": {"input": NaN, "output": 15.0}}', "'input' must be finite and not negative"),
        ('{"claude": {"input": 3.0, "outptu": 15.0, "output": 15.0}}', "unknown field"),
        ('{"claude": {"input": 3.0, "output": 15.0}, "claude": {"input": 1, "output": 1}}', "'claude' twice"),
    ],
)
def test_parse_price_table_refuses_bad_input_clearly(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_price_table(text)


def test_a_price_cannot_be_negative() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        Price(-0.5, 1.0)
