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
from ragops_runtime.observability.metrics import QUERY_OUTCOMES, RatersReading

PROMTOOL = Path("/usr/bin/promtool")
IDENTITY = DeploymentIdentity(namespace="shop", deployment="support-bot", pod="support-bot-7d9f-x2k4q")
IDENTITY_LABELS = {"namespace": "shop", "deployment": "support-bot", "pod": "support-bot-7d9f-x2k4q"}


STABLE = {"kb_version": "v1", "role": "stable"}
CANARY = {"kb_version": "v2", "role": "canary"}


def exercised() -> RuntimeMetrics:
    """Metrics after every method has been called at least once."""
    metrics = RuntimeMetrics(IDENTITY)
    metrics.observe_query(
        mode="hybrid",
        status="ok",
        seconds=0.42,
        stages={"embed": 0.012, "retrieve": 0.03, "rerank": 0.08, "generate": 0.29},
        **STABLE,
    )
    metrics.observe_query(mode="hybrid", status="ok", seconds=0.004, stages={}, **STABLE)
    metrics.observe_query(
        mode="vector", status="error", seconds=31.0, stages={"embed": 0.01, "retrieve": 0.02}, **STABLE
    )
    metrics.cache_hit()
    metrics.cache_miss()
    metrics.cache_miss()
    metrics.tokens(input_tokens=1200, output_tokens=250, **STABLE)
    metrics.tokens(input_tokens=800, output_tokens=50, **STABLE)
    metrics.cost(service="generation", usd=0.0125, **STABLE)
    metrics.cost(service="embedding", usd=0.0001, **STABLE)
    metrics.cost(service="rerank", usd=0.002, **STABLE)
    metrics.feedback(1.0, **STABLE)
    metrics.feedback(0.35, **STABLE)
    metrics.retrieval_empty(**STABLE)
    metrics.rate_limited()
    metrics.rate_limited()
    metrics.rate_limited()
    metrics.saturated()
    metrics.degraded("rerank_timeout", **STABLE)
    metrics.degraded("rerank_timeout", **STABLE)
    metrics.degraded("cache_unavailable", **STABLE)
    metrics.set_active_version("faq", "v1")
    metrics.set_active_version("faq", "v2")
    metrics.set_active_version("manuals", "2024-06")
    # A rollout: the candidate answers, is shadowed and probed.
    metrics.prepare_split("v1", "v2", probes=True)
    metrics.observe_query(mode="retrieval_only", status="ok", seconds=0.02, stages={"retrieve": 0.01}, **CANARY)
    metrics.feedback(0.5, **CANARY)
    overlap = {
        ("chunk", "jaccard"): 0.6,
        ("chunk", "rbo"): 0.75,
        ("document", "jaccard"): 1.0,
        ("document", "rbo"): 1.0,
    }
    metrics.overlap(overlap, kb_version="v2", role="shadow")
    metrics.overlap(overlap, kb_version="v2", role="probe")
    metrics.shadow_query("ok", kb_version="v2")
    metrics.shadow_query("dropped", kb_version="v2")
    metrics.probe_hit(True, kb_version="v2")
    metrics.probe_hit(False, kb_version="v1")
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
    assert value(found, "ragops_queries_total", mode="hybrid", status="ok", **STABLE) == 2
    assert value(found, "ragops_queries_total", mode="vector", status="error", **STABLE) == 1
    assert value(found, "ragops_cache_hits_total") == 1
    assert value(found, "ragops_cache_misses_total") == 2
    assert value(found, "ragops_llm_tokens_total", direction="input", **STABLE) == 2000
    assert value(found, "ragops_llm_tokens_total", direction="output", **STABLE) == 300
    assert value(found, "ragops_cost_usd_total", service="generation", **STABLE) == pytest.approx(0.0125)
    assert value(found, "ragops_cost_usd_total", service="embedding", **STABLE) == pytest.approx(0.0001)
    assert value(found, "ragops_cost_usd_total", service="rerank", **STABLE) == pytest.approx(0.002)
    assert value(found, "ragops_retrieval_empty_total", **STABLE) == 1
    assert value(found, "ragops_rate_limited_total") == 3
    assert value(found, "ragops_saturated_total") == 1
    assert value(found, "ragops_degraded_total", reason="rerank_timeout", **STABLE) == 2
    assert value(found, "ragops_degraded_total", reason="cache_unavailable", **STABLE) == 1


def test_query_duration_histogram_spans_5ms_to_30s() -> None:
    found = samples(exercised())
    buckets = {
        sample.labels["le"]: sample.value
        for sample in found
        if sample.name == "ragops_query_duration_seconds_bucket" and sample.labels["role"] == "stable"
    }
    assert min(float(le) for le in buckets) == 0.005
    assert max(float(le) for le in buckets if le != "+Inf") == 30.0
    # 4 ms, 420 ms and 31 s: one in the first bucket, two by 0.5 s, the last only in +Inf.
    assert (buckets["0.005"], buckets["0.5"], buckets["30.0"], buckets["+Inf"]) == (1, 2, 2, 3)
    assert value(found, "ragops_query_duration_seconds_count", **STABLE) == 3
    assert value(found, "ragops_query_duration_seconds_sum", **STABLE) == pytest.approx(31.424)


def test_stage_histograms_have_a_series_per_stage() -> None:
    found = samples(exercised())
    counts = {
        sample.labels["stage"]: sample.value
        for sample in found
        if sample.name == "ragops_stage_duration_seconds_count" and sample.labels["role"] == "stable"
    }
    assert counts == {"embed": 2, "retrieve": 2, "rerank": 1, "generate": 1}
    assert value(found, "ragops_stage_duration_seconds_sum", stage="generate", **STABLE) == pytest.approx(0.29)
    assert value(found, "ragops_stage_duration_seconds_bucket", stage="embed", le="0.01", **STABLE) == 1


def test_feedback_histogram_buckets_are_tenths() -> None:
    found = samples(exercised())
    buckets = {
        sample.labels["le"]: sample.value
        for sample in found
        if sample.name == "ragops_feedback_score_bucket" and sample.labels["role"] == "stable"
    }
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


def test_the_series_of_a_split_exist_at_zero_once_prepared() -> None:
    metrics = RuntimeMetrics(IDENTITY)
    metrics.prepare_split("v1", "v2", probes=True)
    found = samples(metrics)
    queries = {
        (s.labels["kb_version"], s.labels["role"], s.labels["mode"], s.labels["status"])
        for s in found
        if s.name == "ragops_queries_total"
    }
    assert queries == {
        (version, role, mode, status)
        for version, roles in (("v1", ("stable", "probe")), ("v2", ("canary", "shadow", "probe")))
        for role in roles
        for mode, status in QUERY_OUTCOMES
    }
    assert all(s.value == 0 for s in found if s.name.startswith("ragops_") and not s.name.endswith("_created"))
    assert value(found, "ragops_feedback_score_count", kb_version="v2", role="canary") == 0
    assert {s.labels["service"] for s in found if s.name == "ragops_cost_usd_total"} == {
        "generation",
        "embedding",
        "rerank",
    }
    assert {s.labels["direction"] for s in found if s.name == "ragops_llm_tokens_total"} == {"input", "output"}
    assert {s.labels["outcome"] for s in found if s.name == "ragops_shadow_queries_total"} == {
        "ok",
        "empty",
        "error",
        "dropped",
    }
    assert {(s.labels["kb_version"], s.labels["hit"]) for s in found if s.name == "ragops_probe_hits_total"} == {
        ("v1", "true"),
        ("v1", "false"),
        ("v2", "true"),
        ("v2", "false"),
    }
    overlaps = {
        (s.labels["role"], s.labels["level"], s.labels["measure"])
        for s in found
        if s.name == "ragops_shadow_overlap_count"
    }
    assert overlaps == {
        (r, lv, m) for r in ("shadow", "probe") for lv in ("chunk", "document") for m in ("jaccard", "rbo")
    }
    assert {s.labels["kb_version"] for s in found if s.name == "ragops_shadow_overlap_count"} == {"v2"}


def test_a_version_that_left_the_split_is_forgotten_whole() -> None:
    metrics = exercised()
    assert metrics.versions == {"v1", "v2"}
    metrics.forget_version("v2")
    found = samples(metrics)
    assert not [s for s in found if s.labels.get("kb_version") == "v2"]
    assert value(found, "ragops_queries_total", mode="hybrid", status="ok", **STABLE) == 2
    metrics.forget_version("v2")  # twice is fine
    metrics.observe_query(mode="cached", status="ok", seconds=0.001, stages={}, **CANARY)
    assert value(samples(metrics), "ragops_queries_total", mode="cached", status="ok", **CANARY) == 1


def test_rollout_metrics_count_what_happened() -> None:
    found = samples(exercised())
    assert value(found, "ragops_queries_total", mode="retrieval_only", status="ok", **CANARY) == 1
    assert value(found, "ragops_feedback_score_sum", **CANARY) == 0.5
    assert (
        value(found, "ragops_shadow_overlap_sum", kb_version="v2", role="shadow", level="chunk", measure="rbo") == 0.75
    )
    assert value(found, "ragops_shadow_overlap_bucket", role="shadow", level="chunk", measure="jaccard", le="0.5") == 0
    assert value(found, "ragops_shadow_overlap_bucket", role="shadow", level="chunk", measure="jaccard", le="0.6") == 1
    assert value(found, "ragops_shadow_queries_total", kb_version="v2", outcome="dropped") == 1
    assert value(found, "ragops_probe_hits_total", kb_version="v2", hit="true") == 1
    assert value(found, "ragops_probe_hits_total", kb_version="v1", hit="false") == 1


def test_labels_outside_their_closed_sets_are_refused() -> None:
    metrics = RuntimeMetrics(IDENTITY)
    with pytest.raises(ValueError, match="unknown role 'user'"):
        metrics.observe_query(mode="cached", status="ok", seconds=0.1, stages={}, kb_version="v1", role="user")
    with pytest.raises(ValueError, match="unknown comparison role 'canary'"):
        metrics.overlap({("chunk", "rbo"): 0.5}, kb_version="v2", role="canary")
    with pytest.raises(ValueError, match="unknown overlap chunk/cosine"):
        metrics.overlap({("chunk", "cosine"): 0.5}, kb_version="v2", role="shadow")
    with pytest.raises(ValueError, match="overlap must be between 0 and 1"):
        metrics.overlap({("chunk", "rbo"): 1.5}, kb_version="v2", role="shadow")
    with pytest.raises(ValueError, match="unknown shadow outcome 'late'"):
        metrics.shadow_query("late", kb_version="v2")


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
        metrics.observe_query(mode="hybrid", status="ok", seconds=0.1, stages={"embed": 0.01, "prompt": 0.02}, **STABLE)
    found = samples(metrics)
    assert not [sample for sample in found if sample.name == "ragops_queries_total"]
    assert not [
        sample for sample in found if sample.name.startswith(("ragops_query_duration", "ragops_stage_duration"))
    ]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m: m.cost(service="vector_db", usd=0.1, **STABLE), "unknown cost service"),
        (lambda m: m.cost(service="generation", usd=-0.1, **STABLE), "finite amount"),
        (lambda m: m.cost(service="generation", usd=float("nan"), **STABLE), "finite amount"),
        (lambda m: m.tokens(input_tokens=-1, output_tokens=5, **STABLE), "must not be negative"),
        (lambda m: m.feedback(1.5, **STABLE), "between 0 and 1"),
        (lambda m: m.feedback(-0.1, **STABLE), "between 0 and 1"),
        (lambda m: m.feedback(float("nan"), **STABLE), "between 0 and 1"),
    ],
)
def test_bad_values_are_refused(call: Callable[[RuntimeMetrics], None], message: str) -> None:
    metrics = RuntimeMetrics(IDENTITY)
    before = metrics.render()[0]
    with pytest.raises(ValueError, match=message):
        call(metrics)
    assert metrics.render()[0] == before


def test_a_raters_reading_serves_scrapes_until_it_is_old_or_dropped() -> None:
    reading = RatersReading(max_age=10)
    assert reading.fresh(0.0) is None  # nothing read yet
    reading.store({("v1", "stable"): 3}, now=100.0)
    assert reading.fresh(100.0) == reading.fresh(109.9) == {("v1", "stable"): 3}
    served = reading.fresh(105.0)
    assert served is not None
    served[("v2", "canary")] = 0  # what the caller adds for the versions served does not stick
    assert reading.fresh(105.0) == {("v1", "stable"): 3}
    assert reading.fresh(110.0) is None  # as old as max_age: read again
    reading.store({("v1", "stable"): 4}, now=110.0)
    reading.drop()  # a rating this replica stored
    assert reading.fresh(110.5) is None
