"""`ragops cost estimate`: monthly spend and cost per query, from measured usage or what-if inputs.

Three sources of usage, one projection:
- the answer log in PostgreSQL (`usage_from_answer_log`): answered queries, tokens in and out;
- Prometheus (`usage_from_prometheus`): the runtime's query, token and stage counters over a window;
- what-if inputs (`usage_what_if`): queries per month, context and output tokens, as in the estimator
  of the articles this project started from, without their two mistakes: chunks are embedded once
  at build time, not per query (only the query is embedded when answering), and prices are per
  million tokens throughout (the article mixed per-1K and per-1M prices).

`estimate` prices a usage with a `PriceTable` and scales it to a 30-day month. It never guesses: a
model without a price is reported as unknown (and the total as incomplete), never as free. The
projection functions are pure; the two readers do the I/O (SQL through the store, PromQL over HTTP).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
import yaml

from .generation.pricing import (
    DEFAULT_EMBEDDING_PRICES,
    DEFAULT_PRICES,
    DEFAULT_RERANK_PRICES,
    PRICES_CHECKED,
    Price,
    cost_usd,
)

MONTH = timedelta(days=30)
DEFAULT_QUERY_TOKENS = 20
"""Tokens of an embedded query when the source cannot say (the answer log keeps no query text)."""


class CostInputError(ValueError):
    """A price file, RagDeployment file or measured source that cannot be used; the message says why."""


# ---- prices ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PriceTable:
    """Generation (USD/Mtok in and out), embedding (USD/Mtok) and rerank (USD per 1000 calls) prices."""

    checked: str
    generation: Mapping[str, Price]
    embedding: Mapping[str, float]
    rerank: Mapping[str, float]


def default_prices() -> PriceTable:
    return PriceTable(PRICES_CHECKED, dict(DEFAULT_PRICES), dict(DEFAULT_EMBEDDING_PRICES), dict(DEFAULT_RERANK_PRICES))


def parse_prices(text: str) -> PriceTable:
    """A price file (YAML). Each section given replaces that default table; `checked` is required.

    ```yaml
    checked: 2026-01-15          # when you compared these with the providers' price pages
    generation: {claude-sonnet-4-6: {input: 3.0, output: 15.0}}   # USD per million tokens
    embedding: {text-embedding-3-small: 0.02}                     # USD per million tokens
    rerank: {rerank-v3.5: 2.0}                                    # USD per 1000 calls
    ```
    """
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise CostInputError(f"price file is not valid YAML: {error}") from None
    if not isinstance(document, dict):
        raise CostInputError("price file must be a mapping with checked, generation, embedding and rerank")
    unknown = sorted(set(document) - {"checked", "generation", "embedding", "rerank"})
    if unknown:
        raise CostInputError(f"price file has unknown section(s) {', '.join(map(str, unknown))}")
    if not document.get("checked"):
        raise CostInputError(
            "price file needs `checked: <date>`: prices change, and an estimate must say how old its are"
        )
    defaults = default_prices()
    generation: Mapping[str, Price] = defaults.generation
    if "generation" in document:
        generation = {
            str(model): _generation_price(str(model), entry)
            for model, entry in _section(document, "generation").items()
        }
    embedding = _flat_prices(document, "embedding", defaults.embedding)
    rerank = _flat_prices(document, "rerank", defaults.rerank)
    return PriceTable(str(document["checked"]), generation, embedding, rerank)


def _section(document: dict[str, Any], name: str) -> dict[Any, Any]:
    section = document[name]
    if not isinstance(section, dict):
        raise CostInputError(f"price file section {name!r} must be a mapping of model name to price")
    return section


def _number(where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise CostInputError(f"{where} must be a finite number not below 0, got {value!r}")
    return float(value)


def _generation_price(model: str, entry: Any) -> Price:
    if not isinstance(entry, dict) or set(entry) != {"input", "output"}:
        raise CostInputError(f"generation price {model!r} must be {{input: usd_per_mtok, output: usd_per_mtok}}")
    return Price(
        _number(f"generation.{model}.input", entry["input"]), _number(f"generation.{model}.output", entry["output"])
    )


def _flat_prices(document: dict[str, Any], name: str, default: Mapping[str, float]) -> Mapping[str, float]:
    if name not in document:
        return default
    return {str(model): _number(f"{name}.{model}", value) for model, value in _section(document, name).items()}


def _longest_prefix(model: str, prices: Mapping[str, float]) -> float | None:
    matches = [prefix for prefix in prices if model.startswith(prefix)]
    return prices[max(matches, key=len)] if matches else None


# ---- usage -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Usage:
    """What was used (or is assumed) over `window`; the estimator scales it to a month.

    `queries` counts every answered query, cached ones included (they cost nothing but count in the
    cost per query); `notes` says what was measured and what assumed.
    """

    source: str
    window: timedelta
    queries: float
    input_tokens: float
    output_tokens: float
    embedding_calls: float
    embedding_tokens: float
    rerank_calls: float
    notes: tuple[str, ...] = ()
    recorded_generation_usd: float | None = None


def usage_what_if(
    *,
    queries_per_month: int,
    context_tokens: int,
    output_tokens: int,
    query_tokens: int = DEFAULT_QUERY_TOKENS,
    cache_hit_rate: float = 0.0,
    rerank: bool = False,
) -> Usage:
    """A month of `queries_per_month`, each sending `context_tokens` (system, passages and question) and
    receiving `output_tokens`; a share `cache_hit_rate` is answered from the cache at no cost."""
    if queries_per_month < 0 or context_tokens < 0 or output_tokens < 0 or query_tokens < 0:
        raise CostInputError("what-if inputs must not be negative")
    if not 0.0 <= cache_hit_rate < 1.0:
        raise CostInputError(f"cache hit rate must be in [0, 1), got {cache_hit_rate}")
    answered = queries_per_month * (1 - cache_hit_rate)
    return Usage(
        source="what-if",
        window=MONTH,
        queries=queries_per_month,
        input_tokens=answered * context_tokens,
        output_tokens=answered * output_tokens,
        embedding_calls=answered,
        embedding_tokens=answered * query_tokens,
        rerank_calls=answered if rerank else 0,
        notes=(
            f"{queries_per_month} queries/month, {context_tokens} context tokens, {output_tokens} output tokens, "
            f"{query_tokens} tokens per embedded query, cache hit rate {cache_hit_rate:g}",
        ),
    )


async def usage_from_answer_log(
    dsn: str,
    knowledge_base: str,
    *,
    since: timedelta,
    now: datetime,
    deployment: str | None = None,
    query_tokens: int = DEFAULT_QUERY_TOKENS,
    rerank: bool = False,
) -> Usage:
    """The answer log of `knowledge_base` over the last `since` (or since its first row, if younger)."""
    import psycopg

    from .store.answers import usage_since

    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as connection:
        logged = await usage_since(connection, knowledge_base, now - since, deployment)
    if logged.answers == 0 or logged.first_at is None:
        raise CostInputError(f"the answer log has no answer of {knowledge_base!r} in the last {since}")
    # A deployment younger than the window has not been serving all of it: scaling its few days
    # as if they were the whole window would understate the month.
    window = min(since, max(now - logged.first_at, timedelta(seconds=1)))
    # Every logged answer but a cached one embedded its query (the runtime's query-vector LRU may
    # have saved some: an upper bound) and, with a reranker, reranked the passages it found.
    embedded = logged.answers - logged.cached
    return Usage(
        source="answer log",
        window=window,
        queries=logged.answers,
        input_tokens=logged.input_tokens,
        output_tokens=logged.output_tokens,
        embedding_calls=embedded,
        embedding_tokens=embedded * query_tokens,
        rerank_calls=logged.with_passages if rerank else 0,
        notes=(
            f"{logged.answers} logged answers ({logged.generated} generated, {logged.cached} from the cache) "
            f"since {logged.first_at:%Y-%m-%d %H:%M %Z}",
            "answers served from the cache are logged at no cost: cost per query includes what the cache saved",
            f"embedding tokens assumed {query_tokens} per query (the log keeps no query text)",
        ),
        recorded_generation_usd=logged.recorded_cost_usd,
    )


PROMETHEUS_SERIES = {
    # Users' answers; a rollout's shadows and probes are not queries anyone pays per, but their
    # embedding calls are real spend and stay in embedding_calls.
    "queries": 'ragops_queries_total{{{selector}status!="error",role!~"shadow|probe"}}',
    "input_tokens": 'ragops_llm_tokens_total{{{selector}direction="input"}}',
    "output_tokens": 'ragops_llm_tokens_total{{{selector}direction="output"}}',
    "embedding_calls": 'ragops_stage_duration_seconds_count{{{selector}stage="embed"}}',
    "rerank_calls": 'ragops_stage_duration_seconds_count{{{selector}stage="rerank"}}',
    "generation_usd": 'ragops_cost_usd_total{{{selector}service="generation"}}',
}


def _selector(namespace: str | None, deployment: str | None) -> str:
    """Label matchers, each followed by a comma, to open a series selector."""
    parts = []
    for label, value in (("namespace", namespace), ("deployment", deployment)):
        if value is not None:
            escaped = value.replace("\\", "\\\\").replace('"', '\\"')
            parts.append(f'{label}="{escaped}",')
    return "".join(parts)


def _range(window: timedelta) -> str:
    return f"{max(1, int(window.total_seconds()))}s"


def usage_from_prometheus(
    url: str,
    *,
    window: timedelta,
    namespace: str | None = None,
    deployment: str | None = None,
    query_tokens: int = DEFAULT_QUERY_TOKENS,
    timeout_seconds: float = 10,
) -> Usage:
    """The runtime's counters over `window`, summed over every pod of the deployment (PromQL increase())."""
    selector = _selector(namespace, deployment)
    values: dict[str, float] = {}
    with httpx.Client(base_url=url.rstrip("/"), timeout=timeout_seconds) as client:
        for name, series in PROMETHEUS_SERIES.items():
            promql = f"sum(increase({series.format(selector=selector)}[{_range(window)}]))"
            try:
                response = client.get("/api/v1/query", params={"query": promql})
                response.raise_for_status()
                body = response.json()
            except (httpx.HTTPError, ValueError) as error:
                raise CostInputError(f"Prometheus at {url} did not answer {promql}: {error}") from None
            if body.get("status") != "success":
                raise CostInputError(f"Prometheus refused {promql}: {body.get('error')}")
            result = body["data"]["result"]
            values[name] = float(result[0]["value"][1]) if result else 0.0
    if values["queries"] <= 0:
        raise CostInputError(f"Prometheus at {url} saw no answered query in the last {_range(window)}")
    return Usage(
        source="prometheus",
        window=window,
        queries=values["queries"],
        input_tokens=values["input_tokens"],
        output_tokens=values["output_tokens"],
        embedding_calls=values["embedding_calls"],
        embedding_tokens=values["embedding_calls"] * query_tokens,
        rerank_calls=values["rerank_calls"],
        notes=(
            f"increase() over {_range(window)}, summed over pods; Prometheus extrapolates to the window's edges",
            f"embedding tokens assumed {query_tokens} per embedded query",
        ),
        recorded_generation_usd=values["generation_usd"],
    )


# ---- the estimate ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    service: str
    quantity: float
    unit: str
    usd: float | None
    """None: no price for the model, so the line is unknown (never counted as 0)."""


@dataclass(frozen=True)
class Estimate:
    usage: Usage
    checked: str
    scale: float
    """Window to month: every monthly number is the window's times this."""
    lines: tuple[Line, ...]
    monthly_queries: float
    max_cost_per_query_usd: float | None
    unknown: tuple[str, ...] = field(default=())

    @property
    def known_usd(self) -> float:
        """The priced part of the month: all of it when `unknown` is empty, a lower bound otherwise."""
        return sum(line.usd for line in self.lines if line.usd is not None)

    @property
    def total_usd(self) -> float | None:
        """The month's cost; None when a model has no price (never the priced part passed off as the whole)."""
        return None if self.unknown else self.known_usd

    @property
    def cost_per_query_usd(self) -> float | None:
        if self.total_usd is None:
            return None
        return self.total_usd / self.monthly_queries if self.monthly_queries else 0.0

    @property
    def over_budget(self) -> bool:
        """Over the budget, known even with a price missing when the priced part alone exceeds it."""
        if self.max_cost_per_query_usd is None or not self.monthly_queries:
            return False
        return self.known_usd / self.monthly_queries > self.max_cost_per_query_usd

    @property
    def judged(self) -> bool:
        """Whether the budget could be judged: no budget, every price known, or over it already."""
        return self.max_cost_per_query_usd is None or not self.unknown or self.over_budget

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.usage.source,
            "windowSeconds": self.usage.window.total_seconds(),
            "scaleToMonth": self.scale,
            "pricesChecked": self.checked,
            "monthlyQueries": self.monthly_queries,
            "services": {
                line.service: {"quantity": line.quantity, "unit": line.unit, "usd": line.usd} for line in self.lines
            },
            "totalUsd": self.total_usd,
            "knownUsd": self.known_usd,
            "complete": not self.unknown,
            "unknownPrices": list(self.unknown),
            "costPerQueryUsd": self.cost_per_query_usd,
            "maxCostPerQueryUsd": self.max_cost_per_query_usd,
            "overBudget": self.over_budget,
            "recordedGenerationUsdInWindow": self.usage.recorded_generation_usd,
            "notes": list(self.usage.notes),
        }


def estimate(
    usage: Usage,
    prices: PriceTable,
    *,
    model: str,
    embedding_model: str,
    reranker_model: str | None,
    max_cost_per_query_usd: float | None = None,
) -> Estimate:
    """`usage` priced and scaled to a 30-day month."""
    if usage.window <= timedelta(0):
        raise CostInputError("the usage window must be positive")
    scale = MONTH / usage.window
    monthly = {
        "input": usage.input_tokens * scale,
        "output": usage.output_tokens * scale,
        "embedding": usage.embedding_tokens * scale,
        "rerank": usage.rerank_calls * scale,
    }
    unknown: list[str] = []
    gen_in = cost_usd(model, round(monthly["input"]), 0, prices.generation)
    gen_out = cost_usd(model, 0, round(monthly["output"]), prices.generation)
    if gen_in is None:
        unknown.append(f"generation model {model}")
    embed_price = _longest_prefix(embedding_model, prices.embedding)
    if embed_price is None:
        unknown.append(f"embedding model {embedding_model}")
    rerank_usd: float | None = 0.0
    if usage.rerank_calls:
        rerank_price = _longest_prefix(reranker_model or "", prices.rerank) if reranker_model else None
        if rerank_price is None:
            unknown.append(f"reranker model {reranker_model or '(none named)'}")
            rerank_usd = None
        else:
            rerank_usd = monthly["rerank"] * rerank_price / 1000
    lines = (
        Line("generation input", monthly["input"], "tokens", gen_in),
        Line("generation output", monthly["output"], "tokens", gen_out),
        Line(
            "embedding",
            monthly["embedding"],
            "tokens",
            None if embed_price is None else monthly["embedding"] * embed_price / 1e6,
        ),
        Line("rerank", monthly["rerank"], "calls", rerank_usd),
    )
    return Estimate(
        usage=usage,
        checked=prices.checked,
        scale=scale,
        lines=lines,
        monthly_queries=usage.queries * scale,
        max_cost_per_query_usd=max_cost_per_query_usd,
        unknown=tuple(unknown),
    )


def budget_from_ragdeployment(text: str) -> float:
    """`spec.slo.maxCostPerQueryUsd` of a RagDeployment manifest (its CRD default, 0.01, when absent).

    Read from a file, not the cluster: the runtime never calls the Kubernetes API.
    """
    try:
        documents = [d for d in yaml.safe_load_all(text) if d]
    except yaml.YAMLError as error:
        raise CostInputError(f"the RagDeployment file is not valid YAML: {error}") from None
    found = [d for d in documents if isinstance(d, dict) and d.get("kind") == "RagDeployment"]
    if len(found) != 1:
        raise CostInputError(f"the file must hold exactly one RagDeployment, found {len(found)}")
    slo = (found[0].get("spec") or {}).get("slo") or {}
    return _number("spec.slo.maxCostPerQueryUsd", slo.get("maxCostPerQueryUsd", 0.01))


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_window(text: str) -> timedelta:
    """`90s`, `30m`, `24h`, `7d` or `2w`."""
    value, unit = text[:-1], text[-1:]
    if unit not in _DURATION_UNITS or not value.isdigit() or int(value) == 0:
        raise CostInputError(f"{text!r} is not a window such as 30m, 24h or 7d")
    return timedelta(seconds=int(value) * _DURATION_UNITS[unit])
