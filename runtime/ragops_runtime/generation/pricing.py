"""What a generation cost: token counts and a per-model price table in, US dollars out.

Pure: no I/O, no clock, no configuration loading; the caller parses the operator's table with
`parse_price_table` and passes it in. It must never guess: a model the table does not know costs
`None` (reported as unknown), never 0, because a wrong zero would hide real spend from the people
watching it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

_TOKENS_PER_PRICE_UNIT = 1_000_000


@dataclass(frozen=True)
class Price:
    """US dollars per million tokens."""

    input_per_mtok_usd: float
    output_per_mtok_usd: float

    def __post_init__(self) -> None:
        for name, value in (("input", self.input_per_mtok_usd), ("output", self.output_per_mtok_usd)):
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} price must be a finite, non-negative number of USD per million tokens")


# Anthropic's list prices for standard API requests, as published in late 2025 (the author's knowledge;
# the installed SDK already names newer models: claude-sonnet-4-6, claude-opus-4-6 to 4-8, 5.x). Keys are
# model-id prefixes matched longest first, so an alias (claude-sonnet-4-5) and its dated id
# (claude-sonnet-4-5-20250929) share an entry. Each key names one version, never a family: Opus 4.5 cut
# the price from $15/$75 to $5/$25, so a bare "claude-opus-4" would bill later versions at a price they
# may not have, and an unknown model must read as unknown, not as a wrong number. Not covered: prompt
# caching, batch discounts, Sonnet's long-context rate (over 200k input tokens). Operators replace the
# whole table with their own (parse_price_table) when prices change or models are added.
DEFAULT_PRICES: Mapping[str, Price] = MappingProxyType(
    {
        "claude-haiku-4-5": Price(1.0, 5.0),
        "claude-sonnet-4-0": Price(3.0, 15.0),
        "claude-sonnet-4-2025": Price(3.0, 15.0),  # the dated Sonnet 4 id: claude-sonnet-4-20250514
        "claude-sonnet-4-5": Price(3.0, 15.0),
        # The default model. Not in the table above's source: Anthropic has kept Sonnet at $3/$15 from
        # 3.5 to 4.5, so 4.6 is entered at that price; verify it against the current price list.
        "claude-sonnet-4-6": Price(3.0, 15.0),
        "claude-opus-4-0": Price(15.0, 75.0),
        "claude-opus-4-2025": Price(15.0, 75.0),  # the dated Opus 4 id: claude-opus-4-20250514
        "claude-opus-4-1": Price(15.0, 75.0),
        "claude-opus-4-5": Price(5.0, 25.0),
    }
)


PRICES_CHECKED = "2025-11"
"""When the default tables here were last compared with the providers' price pages (from the author's
knowledge, not re-checked against a live page since): `ragops cost estimate` prints it next to every
estimate, so a stale table is visible. `--prices file.yaml` replaces them."""

# Embedding APIs, USD per million input tokens, by model-name prefix (OpenAI's list prices). The
# built-in static and hashing embedders run in the process and cost nothing.
DEFAULT_EMBEDDING_PRICES: Mapping[str, float] = MappingProxyType(
    {
        "wordllama-l2-supercat": 0.0,
        "hashing-v1": 0.0,
        "text-embedding-3-small": 0.02,
        "text-embedding-3-large": 0.13,
        "text-embedding-ada-002": 0.10,
    }
)

# Rerank APIs, USD per 1000 calls (a "search": one query with its candidates), by model-name prefix
# (Cohere's list price). A self-hosted reranker (TEI) costs compute, not a per-call price: give it 0
# in a price file; an unlisted model is reported as unknown, never as free.
DEFAULT_RERANK_PRICES: Mapping[str, float] = MappingProxyType(
    {
        "rerank-v3.5": 2.0,
        "rerank-english-v3.0": 2.0,
        "rerank-multilingual-v3.0": 2.0,
    }
)


def parse_price_table(text: str) -> dict[str, Price]:
    """A price table from JSON: `{"model-prefix": {"input": 3.0, "output": 15.0}, ...}`, USD per million tokens.

    Raises ValueError naming the offending entry for invalid JSON, a duplicate or empty prefix, a
    missing or unknown field, or a price that is not a finite non-negative number.
    """
    try:
        document = json.loads(text, object_pairs_hook=_refuse_duplicates)
    except json.JSONDecodeError as error:
        raise ValueError(f"price table is not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise ValueError(
            'price table must be a JSON object like {"claude-sonnet-4": {"input": 3.0, "output": 15.0}}, '
            f"got {type(document).__name__}"
        )
    table: dict[str, Price] = {}
    for prefix, entry in document.items():
        if not prefix.strip():
            raise ValueError("price table has an empty model prefix, which would match every model")
        table[prefix] = _price(prefix, entry)
    return table


def cost_usd(model: str, input_tokens: int, output_tokens: int, prices: Mapping[str, Price]) -> float | None:
    """The cost in USD at the price of the longest prefix of `model` in `prices`; None when no prefix matches."""
    if input_tokens < 0 or output_tokens < 0:
        raise ValueError(f"token counts must not be negative, got {input_tokens} in and {output_tokens} out")
    matches = [prefix for prefix in prices if model.startswith(prefix)]
    if not matches:
        return None
    price = prices[max(matches, key=len)]
    spent = input_tokens * price.input_per_mtok_usd + output_tokens * price.output_per_mtok_usd
    return spent / _TOKENS_PER_PRICE_UNIT


def _price(prefix: str, entry: Any) -> Price:
    if not isinstance(entry, dict):
        raise ValueError(f'price table entry {prefix!r} must be an object like {{"input": 3.0, "output": 15.0}}')
    unknown = sorted(set(entry) - {"input", "output"})
    if unknown:
        # A typo such as "outptu" must not silently price output at nothing.
        raise ValueError(f"price table entry {prefix!r} has unknown field(s) {', '.join(unknown)}")
    values: dict[str, float] = {}
    for name in ("input", "output"):
        value = entry.get(name)
        # bool is an int to Python, but `true` is no price.
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"price table entry {prefix!r} needs {name!r} as a number of USD per million tokens")
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"price table entry {prefix!r}: {name!r} must be finite and not negative, got {value}")
        values[name] = float(value)
    return Price(values["input"], values["output"])


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"price table has {key!r} twice")
        result[key] = value
    return result
