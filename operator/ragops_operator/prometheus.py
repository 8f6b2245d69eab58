"""Reads one RagDeployment's SLO sample, and a rollout's analysis, from the Prometheus HTTP API.

`slo_queries` and `analysis_queries` build the PromQL (pure, so they are tested without a server);
`PrometheusClient.sample` and `.analysis` run it against `GET /api/v1/query` and map the answers onto
a `SloSample` or an `AnalysisReading` (`analysis_reading`, pure too). This is the only module of the
operator that talks to Prometheus.

It must not judge the sample (that is `reconcile.slo.judge`), retry (the next check interval is the
retry), or raise on Prometheus's own failures: an unreachable, slow or erroring Prometheus yields
None, which the watch reports as MetricsUnavailable and never as a breach.

The queries read the runtime's series (`ragops_runtime.observability.metrics`), whose `namespace`,
`deployment` and `pod` labels are on every series; `pod` is summed away, so a rollout's old and new
pods and restarted pods all count. What counts as failed: `status="error"` only. A degraded answer
(reranker or generator skipped) still answered the user, so it is not an error here; the runtime
counts it in `ragops_degraded_total` by reason. Requests refused before any work (429 rate-limited,
503 saturated) are not in `ragops_queries_total` at all and so are outside these objectives too.

One blind spot: increase() cannot see the increment that creates a series, and the runtime creates a
(mode, status) series of `ragops_queries_total` at its first such query, so each pod's first error is
missed unless the runtime pre-creates those series at start (its histograms and costs already exist).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import timedelta
from types import TracebackType
from typing import Literal, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ragops_operator.api import parse_duration
from ragops_operator.reconcile.analysis import AnalysisReading, Proportion, ShadowReading, TrafficReading
from ragops_operator.reconcile.slo import SloSample

log = logging.getLogger("ragops.operator.prometheus")
_T = TypeVar("_T")


def promql_string(value: str) -> str:
    """A PromQL double-quoted string literal holding `value` exactly.

    PromQL unquotes strings with Go's escape rules, of which JSON's (\\", \\\\, \\n, \\uXXXX ...) are a
    subset; non-ASCII stays as is, which Go strings accept.
    """
    return json.dumps(value, ensure_ascii=False)


def promql_duration(window: str | timedelta) -> str:
    """A `Duration` ("5m", "1h30m", "1.5m", "500ms") as a PromQL range ("300s", "5400s", "90s", "500ms").

    PromQL rejects fractions ("1.5m"), which the CRD's Duration accepts, so the window is rendered in
    whole seconds, or milliseconds when it has a fraction of a second. Raises ValueError for a window
    shorter than a millisecond: an empty range is a spec error, not a Prometheus failure.
    """
    span = window if isinstance(window, timedelta) else parse_duration(window)
    milliseconds = round(span.total_seconds() * 1000)
    if milliseconds <= 0:
        raise ValueError(f"the SLO window must be at least 1ms, got {window!r}")
    return f"{milliseconds // 1000}s" if milliseconds % 1000 == 0 else f"{milliseconds}ms"


USER_TRAFFIC = 'role!~"shadow|probe"'
"""User queries only: shadow retrievals and golden probes of a progressive rollout are labelled by
role and judged by the rollout's analysis, not by the user-facing objectives. A series without a
role label (a runtime older than the label) matches too."""


def slo_queries(namespace: str, deployment: str, window: str, *, kb_version: str | None = None) -> dict[str, str]:
    """The PromQL of each `SloSample` field, keyed by field name, over the last `window`.

    Each query returns at most one series: label-free sums, so `pod` (and scrape labels such as
    `instance`) are aggregated away. `kb_version` narrows them to the queries one version answered:
    during a canary the stable revision's watch reads the stable version only, and the candidate is
    judged by the rollout on its own series.
    """
    selector = f"namespace={promql_string(namespace)},deployment={promql_string(deployment)},{USER_TRAFFIC}"
    if kb_version is not None:
        selector += f",kb_version={promql_string(kb_version)}"
    span = promql_duration(window)
    queries = f"sum(increase(ragops_queries_total{{{selector}}}[{span}]))"
    return {
        "requests": queries,
        "p95_latency_seconds": (
            f"histogram_quantile(0.95, sum by (le) (rate(ragops_query_duration_seconds_bucket{{{selector}}}[{span}])))"
        ),
        # The status="error" series exists only once a pod has failed a query, so a deployment that has
        # never failed has none: `or vector(0)` reads that as 0 errors instead of "no data".
        "error_ratio": (
            f'(sum(increase(ragops_queries_total{{{selector},status="error"}}[{span}])) or vector(0)) / {queries}'
        ),
        # 0/0 (no feedback in the window) is NaN, which `sample` maps to None: not judged.
        "satisfaction": (
            f"sum(rate(ragops_feedback_score_sum{{{selector}}}[{span}]))"
            f" / sum(rate(ragops_feedback_score_count{{{selector}}}[{span}]))"
        ),
        # No `or vector(0)` here: the runtime creates its cost series at start, so their absence means
        # the metric is not exported, and reporting a cost of 0 would pass the objective on no evidence.
        "cost_per_query_usd": f"sum(increase(ragops_cost_usd_total{{{selector}}}[{span}])) / {queries}",
        # A gauge the runtime computes over this same window (the operator renders slo.window as
        # RAGOPS_FEEDBACK_WINDOW_SECONDS) per version and role. Every replica reports the whole
        # deployment, so replicas are not summed; nor are versions, since one rater of two versions
        # would count twice: the largest per-version count is a lower bound of the distinct raters.
        "raters": f"max(ragops_feedback_raters{{{selector}}})",
    }


def analysis_queries(
    namespace: str, deployment: str, window: timedelta, *, overlap_level: str, overlap_measure: str
) -> dict[str, str]:
    """The PromQL of a rollout's relative analysis over the last `window`, keyed by what each reads.

    Each query is grouped by `kb_version` (and `role`, `status`, `hit` or `outcome`), so one query
    reads both versions in the same range: stable and candidate are compared on the same window by
    construction. `analysis_reading` picks the two versions out of the groups.
    """
    selector = f"namespace={promql_string(namespace)},deployment={promql_string(deployment)}"
    span = promql_duration(window)

    def grouped(by: str, metric: str, extra: str = "") -> str:
        return f"sum by ({by}) (increase({metric}{{{selector}{extra}}}[{span}]))"

    overlap = f',role="shadow",level={promql_string(overlap_level)},measure={promql_string(overlap_measure)}'
    return {
        "requests": grouped("kb_version, role, status", "ragops_queries_total"),
        "p95_seconds": (
            "histogram_quantile(0.95, sum by (le, kb_version, role) "
            f"(rate(ragops_query_duration_seconds_bucket{{{selector}}}[{span}])))"
        ),
        "cost_usd": grouped("kb_version, role", "ragops_cost_usd_total"),
        "rating_sum": grouped("kb_version, role", "ragops_feedback_score_sum"),
        "ratings": grouped("kb_version, role", "ragops_feedback_score_count"),
        "overlap_sum": grouped("kb_version", "ragops_shadow_overlap_sum", overlap),
        "overlap_count": grouped("kb_version", "ragops_shadow_overlap_count", overlap),
        "shadow_outcomes": grouped("kb_version, outcome", "ragops_shadow_queries_total"),
        "probe_hits": grouped("kb_version, hit", "ragops_probe_hits_total"),
        # A gauge over the runtime's own feedback window (spec.slo.window), not this range: the
        # analysis window is dynamic, and distinct counts do not add up over time. Every replica
        # reports the whole deployment: max, never sum (docs/design/feedback-and-client-identity.md).
        "raters": f"max by (kb_version, role) (ragops_feedback_raters{{{selector}}})",
    }


def chart_queries(namespace: str, deployment: str, rate_window: timedelta) -> dict[str, str]:
    """The PromQL of the dashboard's charts over time, each grouped by `kb_version`, keyed by chart.

    User traffic only, like the SLOs they are drawn against: p95 latency in milliseconds, error rate,
    mean user rating, cost per query in US dollars and queries per second, each over `rate_window`
    at every point. A version without errors reads 0 rather than no data, as the SLO check reads it.
    """
    selector = f"namespace={promql_string(namespace)},deployment={promql_string(deployment)},{USER_TRAFFIC}"
    span = promql_duration(rate_window)

    def rate(metric: str, extra: str = "") -> str:
        return f"sum by (kb_version) (rate({metric}{{{selector}{extra}}}[{span}]))"

    queries = rate("ragops_queries_total")
    errors = rate("ragops_queries_total", ',status="error"')
    return {
        "p95LatencyMs": (
            "1000 * histogram_quantile(0.95, sum by (le, kb_version) "
            f"(rate(ragops_query_duration_seconds_bucket{{{selector}}}[{span}])))"
        ),
        "errorRate": f"({errors} or 0 * {queries}) / {queries}",
        "satisfaction": f"{rate('ragops_feedback_score_sum')} / {rate('ragops_feedback_score_count')}",
        "costPerQueryUsd": f"{rate('ragops_cost_usd_total')} / {queries}",
        "queriesPerSecond": queries,
    }


Series = tuple[Mapping[str, str], float]
"""One series of an instant vector: its labels and its value."""
RangeSeries = tuple[Mapping[str, str], list[tuple[float, float]]]
"""One series of a range query: its labels and its (unix time, value) points, NaN and Inf left out."""


def analysis_reading(
    results: Mapping[str, Sequence[Series]], *, stable: str, canary: str, window: timedelta
) -> AnalysisReading:
    """The `AnalysisReading` of two versions out of the grouped results of `analysis_queries`.

    An absent group is None ("no data"), except errors, which are 0 once a version has requests:
    the runtime creates a status="error" series only at its first error.
    """

    def pick(name: str, **labels: str) -> list[float]:
        return [
            value
            for series, value in results.get(name, ())
            if all(series.get(key, "") == wanted for key, wanted in labels.items()) and not math.isnan(value)
        ]

    def total(name: str, **labels: str) -> float | None:
        values = pick(name, **labels)
        return sum(values) if values else None

    def traffic(version: str, role: str) -> TrafficReading:
        requests = total("requests", kb_version=version, role=role)
        p95 = pick("p95_seconds", kb_version=version, role=role)
        return TrafficReading(
            requests=requests,
            errors=None
            if requests is None
            else total("requests", kb_version=version, role=role, status="error") or 0.0,
            p95_seconds=p95[0] if p95 and not math.isinf(p95[0]) else None,
            cost_usd=total("cost_usd", kb_version=version, role=role),
            rating_sum=total("rating_sum", kb_version=version, role=role),
            ratings=total("ratings", kb_version=version, role=role),
            raters=max(raters) if (raters := pick("raters", kb_version=version, role=role)) else None,
        )

    def recall(version: str) -> Proportion | None:
        trials = total("probe_hits", kb_version=version)
        if trials is None:
            return None
        return Proportion(total("probe_hits", kb_version=version, hit="true") or 0.0, trials)

    return AnalysisReading(
        window_seconds=window.total_seconds(),
        stable=traffic(stable, "stable"),
        canary=traffic(canary, "canary"),
        stable_probes=traffic(stable, "probe"),
        canary_probes=traffic(canary, "probe"),
        stable_recall=recall(stable),
        canary_recall=recall(canary),
        shadow=ShadowReading(
            overlap_sum=total("overlap_sum", kb_version=canary),
            comparisons=total("overlap_count", kb_version=canary),
            errors=total("shadow_outcomes", kb_version=canary, outcome="error") or 0.0,
            dropped=total("shadow_outcomes", kb_version=canary, outcome="dropped") or 0.0,
        ),
    )


class _QueryFailed(Exception):
    """Prometheus answered, but not with a usable result."""


class PrometheusUnavailable(Exception):
    """A range query failed: Prometheus unreachable, slow, or answering an error; the message says which."""


class _ApiModel(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _Series(_ApiModel):
    metric: dict[str, str] = {}
    value: tuple[float, str]
    """[evaluation time, value as a string]; the value may be "NaN" or "+Inf"."""


class _Data(_ApiModel):
    result_type: str = Field(alias="resultType")
    result: list[_Series]


class _RangeSeries(_ApiModel):
    metric: dict[str, str] = {}
    values: list[tuple[float, str]] = []


class _RangeData(_ApiModel):
    result_type: str = Field(alias="resultType")
    result: list[_RangeSeries]


class _Envelope(_ApiModel):
    status: Literal["success", "error"]
    error_type: str | None = Field(default=None, alias="errorType")
    error: str | None = None


class _Response(_Envelope):
    data: _Data | None = None


class _RangeResponse(_Envelope):
    data: _RangeData | None = None


_Body = TypeVar("_Body", _Response, _RangeResponse)


def _answer(response: httpx.Response, model: type[_Body], result_type: str) -> _Body:
    """The body of a Prometheus API answer holding a `result_type` result; _QueryFailed naming why not."""
    try:
        body: _Body | None = model.model_validate_json(response.content)
    except ValidationError:
        body = None
    # Prometheus answers bad queries, timeouts and overload with a JSON error body and a 4xx/5xx.
    if body is not None and body.status == "error":
        raise _QueryFailed(f"HTTP {response.status_code}, {body.error_type}: {body.error}")
    if response.is_error:
        raise _QueryFailed(f"HTTP {response.status_code}: {response.text[:200]!r}")
    if body is None or body.data is None:
        raise _QueryFailed(f"not a Prometheus API response: {response.text[:200]!r}")
    if body.data.result_type != result_type:
        raise _QueryFailed(f"expected a {result_type} result, got {body.data.result_type!r}")
    return body


class PrometheusClient:
    """Instant queries against one Prometheus; `sample` never raises for Prometheus's own failures.

    Pass `client` to share a connection pool (or a test transport); it is then the caller's to close.
    `timeout_seconds` bounds each request, whichever client is used.
    """

    def __init__(self, base_url: str, *, timeout_seconds: float = 5.0, client: httpx.AsyncClient | None = None) -> None:
        self._url = base_url.rstrip("/") + "/api/v1/query"
        self._range_url = self._url + "_range"
        self._timeout = httpx.Timeout(timeout_seconds)
        self._owns_client = client is None
        self._client = client if client is not None else httpx.AsyncClient()

    async def __aenter__(self) -> PrometheusClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def sample(
        self, namespace: str, deployment: str, window: str, *, kb_version: str | None = None
    ) -> SloSample | None:
        """The deployment's reading over the last `window`; None when any query fails.

        One failed query voids the whole sample: objectives read at different moments, or some not
        at all because Prometheus is struggling, are not a reading to judge a rollout on.
        """
        queries = slo_queries(namespace, deployment, window, kb_version=kb_version)
        try:
            values = await self._all(queries, self._query, f"SLO sample for {namespace}/{deployment}")
        except PrometheusUnavailable:
            return None
        return SloSample(**values)

    async def analysis(
        self,
        namespace: str,
        deployment: str,
        *,
        stable: str,
        canary: str,
        window: timedelta,
        overlap_level: str,
        overlap_measure: str,
    ) -> AnalysisReading:
        """Both versions' reading for a rollout's analysis over the last `window`.

        Raises PrometheusUnavailable, naming the query and the failure, when any query fails: the
        rollout's status says why its check could not be made.
        """
        queries = analysis_queries(
            namespace, deployment, window, overlap_level=overlap_level, overlap_measure=overlap_measure
        )
        results = await self._all(queries, self._vector, f"analysis of {namespace}/{deployment}")
        return analysis_reading(results, stable=stable, canary=canary, window=window)

    async def _all(self, queries: Mapping[str, str], run: Callable[[str], Awaitable[_T]], what: str) -> dict[str, _T]:
        # The queries are independent, so they run concurrently: one slow Prometheus costs one timeout.
        results = await asyncio.gather(*(run(promql) for promql in queries.values()), return_exceptions=True)
        values: dict[str, _T] = {}
        for name, result in zip(queries, results, strict=True):
            if isinstance(result, httpx.HTTPError | _QueryFailed):
                why = f"Prometheus at {self._url} failed the {name} query: {type(result).__name__}: {result}"
                log.warning("no %s: %s", what, why)
                raise PrometheusUnavailable(why)
            if isinstance(result, BaseException):
                raise result
            values[name] = result
        return values

    async def _query(self, promql: str) -> float | None:
        """The single value of an instant query; None when the result is empty or NaN."""
        series = await self._vector(promql)
        if not series:
            return None
        if len(series) > 1:
            raise _QueryFailed(f"expected at most one series, got {len(series)}")
        value = series[0][1]
        return None if math.isnan(value) else value

    async def _vector(self, promql: str) -> list[Series]:
        """Every series of an instant query, with its labels and value (NaN and Inf kept as such)."""
        response = await self._client.get(self._url, params={"query": promql}, timeout=self._timeout)
        body = _answer(response, _Response, "vector")
        assert body.data is not None  # checked by _answer
        series: list[Series] = []
        for item in body.data.result:
            try:
                series.append((item.metric, float(item.value[1])))
            except ValueError as error:
                raise _QueryFailed(f"not a sample value: {item.value[1]!r}") from error
        return series

    async def range(self, promql: str, *, start: float, end: float, step: float) -> list[RangeSeries]:
        """Every series of a range query between unix times `start` and `end`, a point every `step` seconds.

        Raises PrometheusUnavailable, naming the failure, instead of the HTTP library's errors: the
        dashboard shows it in place of the chart.
        """
        params = {"query": promql, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"}
        try:
            response = await self._client.get(self._range_url, params=params, timeout=self._timeout)
        except httpx.HTTPError as error:
            raise PrometheusUnavailable(f"Prometheus at {self._range_url}: {type(error).__name__}: {error}") from None
        try:
            body = _answer(response, _RangeResponse, "matrix")
        except _QueryFailed as error:
            raise PrometheusUnavailable(f"Prometheus at {self._range_url}: {error}") from None
        assert body.data is not None  # checked by _answer
        series: list[RangeSeries] = []
        for item in body.data.result:
            points = []
            for at, text in item.values:
                try:
                    value = float(text)
                except ValueError:
                    raise PrometheusUnavailable(f"not a sample value: {text!r}") from None
                if math.isfinite(value):
                    points.append((at, value))
            series.append((item.metric, points))
        return series
