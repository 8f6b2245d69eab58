"""Generation: a grounded, cited answer from retrieved passages, and what it cost.

The public surface of the package: the prompt (`build_prompt`, `cited_passages`), the Anthropic
generator and its failure type, and pricing. It reads no settings and builds nothing at import:
the application constructs one `AnthropicGenerator` from its settings and passes it down.
"""

from __future__ import annotations

from ragops_runtime.generation.anthropic import (
    AnthropicGenerator,
    Generation,
    GenerationUnavailable,
    UnavailableReason,
    Usage,
)
from ragops_runtime.generation.pricing import DEFAULT_PRICES, Price, cost_usd, parse_price_table
from ragops_runtime.generation.prompt import SYSTEM_PROMPT, Turn, build_prompt, cited_passages

__all__ = [
    "DEFAULT_PRICES",
    "SYSTEM_PROMPT",
    "AnthropicGenerator",
    "Generation",
    "GenerationUnavailable",
    "Price",
    "Turn",
    "UnavailableReason",
    "Usage",
    "build_prompt",
    "cited_passages",
    "cost_usd",
    "parse_price_table",
]
