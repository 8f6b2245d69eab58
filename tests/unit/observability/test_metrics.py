"""The runtime's metrics: exposition checked by promtool, samples read back with the Prometheus parser."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from ragops_runtime.observability import DeploymentIdentity, RuntimeMetrics

PROMTOOL = Path("/usr/bin/promtool")
IDENTITY = DeploymentIdentity(namespace="shop", deployment="support-bot", pod="support-bot-7d9f-x2k4q")
IDENTITY_LABELS = {"namespace": "shop", "deployment": "support-bot", "pod": "support-bot-7d9f-x2k4q"}


def exercised() -> RuntimeMetrics:
    """Metrics after every method has been called at least once."""
    metrics = RuntimeMetrics(IDENTITY)
    metrics.observe_query(
        mode="hybrid",
        status="ok",
        seconds=0.42,
        stages={"embed": 0.012, "retrieve": 0.03, "rerank": 0.08, "generate": 0.29},
    )
    metrics.observe_query(mode="hybrid", status="ok", seconds=0.004, stages={})
    metrics.observe_query(mode="vector", status="error", seconds=31.0, stages={"embed": 0.01, "retrieve": 0.02})
    metrics.cache_hit()
    metrics.cache_miss()
    metrics.cache_miss()
    metrics.tokens(input_tokens=1200, output_tokens=250)
    metrics.tokens(input_tokens=800, output_tokens=50)
    metrics.cost(service="generation", usd=0.0125)
    metrics.cost(service="embedding", usd=0.0001)
    metrics.cost(service="rerank", usd=0.002)
    metrics.feedback(1.0)
    metrics.feedback(0.35)
    metrics.retrieval_empty()
    metrics.rate_limited()
    metrics.rate_limited()
    metrics.rate_limited()
    metrics.saturated()
    metrics.degraded("rerank_timeout")
    metrics.degraded("rerank_timeout")
    metrics.degraded("cache_unavailable")
    metrics.set_active_version("faq", "v1")
    metrics.set_active_version("faq", "v2")
    metrics.set_active_version("manuals", "2024-06")
    return metrics


def samples(metrics: RuntimeMetrics) -> list[Sample]:
    body, _ = metrics.render()
    return [sample for family in text_string_to_metric_families(body.decode()) for sample in family.samples]


def value(found: list[Sample], name: str, **labels: str) -> float:
    """The value of the one sample called `name` whose labels include `labels`."""
    [match] = [sample for sample in found if sample.name == name and labels.items() <= sample.labels.items()]
    return match.value


def test_promtool_finds_no_problems() -> None:
    assert PROMTOOL.is_file(), f"{PROMTOOL} is missing: `make tools` installs Debian's prometheus package"
    body, content_type = exercised().render()
    result = subprocess.run([str(PROMTOOL), "check", "metrics"], input=body, capture_output=True, timeout=60)
    problems = (result.stdout + result.stderr).decode()
    assert result.returncode == 0, problems
    assert problems == ""
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"


def test_every_series_carries_the_deployment_identity() -> None:
    found = samples(exercised())
    assert {sample.name for sample in found if sample.name.startswith("ragops_")} >= {
        "ragops_queries_total",
        "ragops_query_duration_seconds_bucket",
        "ragops_stage_duration_seconds_count",
        "ragops_cache_hits_total",
        "ragops_cache_misses_total",
        "ragops_llm_tokens_total",
        "ragops_cost_usd_total",
        "ragops_feedback_score_sum",
        "ragops_retrieval_empty_total",
        "ragops_rate_limited_total",
        "ragops_saturated_total",
        "ragops_degraded_total",
        "ragops_active_knowledge_base_info",
    }
    for sample in found:
        assert sample.labels.items() >= IDENTITY_LABELS.items(), sample


def test_counters_count_what_happened() -> None:
    found = samples(exercised())
    assert value(found, "ragops_queries_total", mode="hybrid", status="ok") == 2
    assert value(found, "ragops_queries_total", mode="vector", status="error") == 1
    assert value(found, "ragops_cache_hits_total") == 1
    assert value(found, "ragops_cache_misses_total") == 2
    assert value(found, "ragops_llm_tokens_total", direction="input") == 2000
    assert value(found, "ragops_llm_tokens_total", direction="output") == 300
    assert value(found, "ragops_cost_usd_total", service="generation") == pytest.approx(0.0125)
    assert value(found, "ragops_cost_usd_total", service="embedding") == pytest.approx(0.0001)
    assert value(found, "ragops_cost_usd_total", service="rerank") == pytest.approx(0.002)
    assert value(found, "ragops_retrieval_empty_total") == 1
    assert value(found, "ragops_rate_limited_total") == 3
    assert value(found, "ragops_saturated_total") == 1
    assert value(found, "ragops_degraded_total", reason="rerank_timeout") == 2
    assert value(found, "ragops_degraded_total", reason="cache_unavailable") == 1


def test_query_duration_histogram_spans_5ms_to_30s() -> None:
    found = samples(exercised())
    buckets = {
        sample.labels["le"]: sample.value for sample in found if sample.name == "ragops_query_duration_seconds_bucket"
    }
    assert min(float(le) for le in buckets) == 0.005
    assert max(float(le) for le in buckets if le != "+Inf") == 30.0
    # 4 ms, 420 ms and 31 s: one in the first bucket, two by 0.5 s, the last only in +Inf.
    assert (buckets["0.005"], buckets["0.5"], buckets["30.0"], buckets["+Inf"]) == (1, 2, 2, 3)
    assert value(found, "ragops_query_duration_seconds_count") == 3
    assert value(found, "ragops_query_duration_seconds_sum") == pytest.approx(31.424)


def test_stage_histograms_have_a_series_per_stage() -> None:
    found = samples(exercised())
    counts = {
        sample.labels["stage"]: sample.value for sample in found if sample.name == "ragops_stage_duration_seconds_count"
    }
    assert counts == {"embed": 2, "retrieve": 2, "rerank": 1, "generate": 1}
    assert value(found, "ragops_stage_duration_seconds_sum", stage="generate") == pytest.approx(0.29)
    assert value(found, "ragops_stage_duration_seconds_bucket", stage="embed", le="0.01") == 1


def test_feedback_histogram_buckets_are_tenths() -> None:
    found = samples(exercised())
    buckets = {sample.labels["le"]: sample.value for sample in found if sample.name == "ragops_feedback_score_bucket"}
    assert list(buckets) == ["0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9", "1.0", "+Inf"]
    assert (buckets["0.3"], buckets["0.4"], buckets["0.9"], buckets["1.0"]) == (0, 1, 1, 2)


def test_exactly_one_active_version_per_knowledge_base() -> None:
    metrics = exercised()
    active = [sample for sample in samples(metrics) if sample.name == "ragops_active_knowledge_base_info"]
    assert sorted((sample.labels["knowledge_base"], sample.labels["version"], sample.value) for sample in active) == [
        ("faq", "v2", 1.0),
        ("manuals", "2024-06", 1.0),
    ]
    # Rolling back is just another switch.
    metrics.set_active_version("faq", "v1")
    active = [sample for sample in samples(metrics) if sample.name == "ragops_active_knowledge_base_info"]
    assert sorted((sample.labels["knowledge_base"], sample.labels["version"]) for sample in active) == [
        ("faq", "v1"),
        ("manuals", "2024-06"),
    ]


def test_series_with_fixed_label_sets_exist_before_anything_happens() -> None:
    # rate() over a counter that appears only at its first increment misses that increment.
    found = samples(RuntimeMetrics(IDENTITY))
    assert value(found, "ragops_cache_hits_total") == 0
    assert value(found, "ragops_saturated_total") == 0
    assert {s.labels["direction"] for s in found if s.name == "ragops_llm_tokens_total"} == {"input", "output"}
    assert {s.labels["service"] for s in found if s.name == "ragops_cost_usd_total"} == {
        "generation",
        "embedding",
        "rerank",
    }
    assert {s.labels["stage"] for s in found if s.name == "ragops_stage_duration_seconds_count"} == {
        "embed",
        "retrieve",
        "rerank",
        "generate",
    }


def test_each_instance_has_its_own_registry() -> None:
    first, second = RuntimeMetrics(IDENTITY), RuntimeMetrics(IDENTITY)
    assert first.registry is not second.registry
    first.cache_hit()
    assert value(samples(first), "ragops_cache_hits_total") == 1
    assert value(samples(second), "ragops_cache_hits_total") == 0


def test_a_given_registry_is_used() -> None:
    registry = CollectorRegistry()
    metrics = RuntimeMetrics(IDENTITY, registry)
    metrics.saturated()
    assert metrics.registry is registry
    assert registry.get_sample_value("ragops_saturated_total", IDENTITY_LABELS) == 1


def test_unknown_stage_is_refused_before_anything_is_recorded() -> None:
    metrics = RuntimeMetrics(IDENTITY)
    with pytest.raises(ValueError, match="unknown stages \\['prompt'\\]"):
        metrics.observe_query(mode="hybrid", status="ok", seconds=0.1, stages={"embed": 0.01, "prompt": 0.02})
    found = samples(metrics)
    queries = [sample for sample in found if sample.name == "ragops_queries_total"]
    assert queries and all(sample.value == 0 for sample in queries)
    assert not [sample for sample in queries if sample.labels["mode"] == "hybrid"]
    assert value(found, "ragops_query_duration_seconds_count") == 0
    assert value(found, "ragops_stage_duration_seconds_count", stage="embed") == 0


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m: m.cost(service="vector_db", usd=0.1), "unknown cost service"),
        (lambda m: m.cost(service="generation", usd=-0.1), "finite amount"),
        (lambda m: m.cost(service="generation", usd=float("nan")), "finite amount"),
        (lambda m: m.tokens(input_tokens=-1, output_tokens=5), "must not be negative"),
        (lambda m: m.feedback(1.5), "between 0 and 1"),
        (lambda m: m.feedback(-0.1), "between 0 and 1"),
        (lambda m: m.feedback(float("nan")), "between 0 and 1"),
    ],
)
def test_bad_values_are_refused(call: Callable[[RuntimeMetrics], None], message: str) -> None:
    metrics = RuntimeMetrics(IDENTITY)
    before = metrics.render()[0]
    with pytest.raises(ValueError, match=message):
        call(metrics)
    assert metrics.render()[0] == before


def test_query_outcome_series_exist_before_the_first_query() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from ragops_runtime.observability.metrics import QUERY_OUTCOMES, DeploymentIdentity, RuntimeMetrics

    metrics = RuntimeMetrics(DeploymentIdentity(namespace="n", deployment="d", pod="p"))
    body, _ = metrics.render()
    seen = {
        (sample.labels["mode"], sample.labels["status"])
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
        if sample.name == "ragops_queries_total"
    }
    assert seen == set(QUERY_OUTCOMES)
