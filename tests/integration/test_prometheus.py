"""The operator's Prometheus client against a real Prometheus scraping real runtime metrics.

Four runtime pods (two of test/docs, one of test/docs-canary, one of other/docs) serve their
`RuntimeMetrics` over HTTP; Debian's prometheus scrapes them every second; the client's sample of
test/docs must match the traffic recorded on its two pods and nothing of the others. Failure modes
Prometheus cannot be made to produce on demand (timeouts, error bodies, odd result shapes) are
played by an httpx MockTransport, and the PromQL and the scrape config are checked by promtool.
"""

from __future__ import annotations

import logging
import math
import socket
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import fields
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import yaml

from ragops_operator.api.ragdeployment import SloSpec
from ragops_operator.api.rollout import AnalysisSpec, AnalysisVerdict
from ragops_operator.prometheus import (
    PrometheusClient,
    analysis_queries,
    analysis_reading,
    promql_duration,
    promql_string,
    slo_queries,
)
from ragops_operator.reconcile.analysis import (
    Applicable,
    Proportion,
    ShadowReading,
    TrafficReading,
    judge_analysis,
)
from ragops_operator.reconcile.slo import SloSample, Verdict, judge
from ragops_runtime.observability import DeploymentIdentity, RuntimeMetrics
from tests.support.prometheus import PROMTOOL, RunningPrometheus, running_prometheus, scrape_config, serving_metrics

WINDOW = "30s"
SERVED = {"kb_version": "v1", "role": "stable"}
DOCS_PODS = (
    DeploymentIdentity(namespace="test", deployment="docs", pod="docs-7d9f-a"),
    DeploymentIdentity(namespace="test", deployment="docs", pod="docs-7d9f-b"),
)
# Same namespace with a name that starts like "docs", and same name in another namespace: a selector
# that matched by prefix or ignored the namespace would mix these in.
CANARY = DeploymentIdentity(namespace="test", deployment="docs-canary", pod="docs-canary-1")
ELSEWHERE = DeploymentIdentity(namespace="other", deployment="docs", pod="docs-1")

# test/docs: 30 queries over two pods. 20 ok in 50-100 ms, 4 ok and 3 degraded in 250-500 ms, 3 errors
# in 1-2.5 s: the true p95 (rank 28.5 of 30) is an error, in the (1.0, 2.5] bucket.
DOCS_TRAFFIC = [("ok", 0.08)] * 20 + [("ok", 0.3)] * 4 + [("degraded", 0.3)] * 3 + [("error", 1.5)] * 3
DOCS_SCORES = (1.0, 0.8, 0.6, 0.4, 0.9)
DOCS_GENERATION_USD = 0.002  # per answered (non-error) query
DOCS_EMBEDDING_USD = 0.0001  # per query
DOCS_COST = 27 * DOCS_GENERATION_USD + 30 * DOCS_EMBEDDING_USD
DOCS_RATERS = {("v1", "stable"): 4, ("v2", "canary"): 2, ("v2", "probe"): 40}
# The others fail everything slowly, rate it 0 and cost a dollar a query: mixed in, they would show.
OTHER_QUERIES = 50
OTHER_USD = 1.0
OTHER_RATERS = 90
# A rollout's shadow retrievals and golden probes on test/docs fail slowly too: they are not user traffic.
ROLLOUT_QUERIES = 40


def _record(pod: RuntimeMetrics, status: str, seconds: float) -> None:
    pod.observe_query(mode="hybrid", status=status, seconds=seconds, stages={}, **SERVED)


BASELINE_PER_STATUS = 20


def _baseline(pods: list[RuntimeMetrics], *, generation_usd: float) -> None:
    """Traffic recorded before the first scrape, which increase() and rate() leave out.

    The runtime creates a (mode, status) series at its first query, and increase() cannot see the
    increment that creates a series: without a baseline the first error of the window would be lost.
    The baseline is also well above the traffic to be measured, so that increase() extrapolates every
    series by the same half interval towards the window's start; near zero it instead extrapolates
    each series only down to zero, by a different span per series, which skews their ratios.
    """
    for pod in pods:
        pod.prepare_split("v1", "v2", probes=True)  # as the runtime does when it loads its split
        for _ in range(BASELINE_PER_STATUS):
            for status, seconds in (("ok", 0.08), ("degraded", 0.3), ("error", 1.5)):
                _record(pod, status, seconds)
            pod.cost(service="embedding", usd=DOCS_EMBEDDING_USD, **SERVED)
            pod.cost(service="generation", usd=generation_usd, **SERVED)


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPrometheus]:
    docs = [RuntimeMetrics(identity) for identity in DOCS_PODS]
    others = [RuntimeMetrics(CANARY), RuntimeMetrics(ELSEWHERE)]
    _baseline(docs, generation_usd=DOCS_GENERATION_USD)
    _baseline(others, generation_usd=OTHER_USD)
    with (
        serving_metrics(docs[0]) as docs_a,
        serving_metrics(docs[1]) as docs_b,
        serving_metrics(others[0]) as canary,
        serving_metrics(others[1]) as elsewhere,
        running_prometheus([docs_a, docs_b, canary, elsewhere], tmp_path_factory.mktemp("prometheus")) as prometheus,
    ):
        baseline_total = 4 * 3 * BASELINE_PER_STATUS
        prometheus.wait_for("sum(ragops_queries_total)", baseline_total)
        for index, (status, seconds) in enumerate(DOCS_TRAFFIC):
            pod = docs[index % 2]
            _record(pod, status, seconds)
            pod.cost(service="embedding", usd=DOCS_EMBEDDING_USD, **SERVED)
            if status != "error":
                pod.cost(service="generation", usd=DOCS_GENERATION_USD, **SERVED)
        for score in DOCS_SCORES:
            docs[0].feedback(score, **SERVED)
        # Every replica reports the whole deployment's raters, per version and role: not summed over
        # pods nor versions, and a rollout's probes (which nobody rates) left out.
        for pod in docs:
            pod.set_raters(DOCS_RATERS)
        for other in others:
            for _ in range(OTHER_QUERIES):
                _record(other, "error", 8.0)
                other.cost(service="generation", usd=OTHER_USD, **SERVED)
                other.feedback(0.0, **SERVED)
            other.set_raters({("v1", "stable"): OTHER_RATERS})
        for index in range(ROLLOUT_QUERIES):
            role = ("shadow", "probe")[index % 2]
            docs[index % 2].observe_query(
                mode="none", status="error", seconds=8.0, stages={}, kb_version="v2", role=role
            )
        expected = baseline_total + len(DOCS_TRAFFIC) + 2 * OTHER_QUERIES + ROLLOUT_QUERIES
        prometheus.wait_for("sum(ragops_queries_total)", expected)
        # increase() extrapolates each series by up to ~1.6 scrape intervals past its first and last
        # samples; eight samples (seven intervals) in the window keep that under 25% of the truth.
        prometheus.wait_for(f"min(count_over_time(ragops_queries_total[{WINDOW}]))", 8, at_least=True)
        yield prometheus


async def test_sample_matches_the_recorded_traffic(prometheus: RunningPrometheus) -> None:
    async with PrometheusClient(prometheus.url) as client:
        sample = await client.sample("test", "docs", WINDOW)
    assert sample is not None
    # increase() extrapolates each series' samples towards the window's edges (by at most ~1.1 scrape
    # intervals at the end and half a one at the start), so counts come out slightly above the truth
    # and never below it; ratios of series scraped together are nearly free of it.
    assert sample.requests is not None and 30 <= sample.requests <= 30 * 1.25
    assert sample.error_ratio == pytest.approx(3 / 30, abs=0.01)  # degraded answers are not errors
    assert sample.satisfaction == pytest.approx(sum(DOCS_SCORES) / len(DOCS_SCORES), rel=0.01)
    assert sample.p95_latency_seconds is not None and 1.0 < sample.p95_latency_seconds <= 2.5
    assert sample.cost_per_query_usd == pytest.approx(DOCS_COST / 30, rel=0.05)
    assert sample.raters == 4

    check = judge(sample, SloSpec(p95_latency_ms=1000, max_error_rate=0.01, min_requests=20))
    assert check.verdict is Verdict.BREACHED
    assert [breach.split("=")[0] for breach in check.breaches] == ["p95LatencyMs", "errorRate"]


@pytest.mark.parametrize(("namespace", "deployment"), [("test", "docs-canary"), ("other", "docs")])
async def test_other_deployments_are_sampled_apart(
    prometheus: RunningPrometheus, namespace: str, deployment: str
) -> None:
    async with PrometheusClient(prometheus.url) as client:
        sample = await client.sample(namespace, deployment, WINDOW)
    assert sample is not None
    assert sample.requests is not None and OTHER_QUERIES <= sample.requests <= OTHER_QUERIES * 1.25
    assert sample.error_ratio == pytest.approx(1.0)
    assert sample.satisfaction == 0.0
    assert sample.p95_latency_seconds is not None and 5.0 < sample.p95_latency_seconds <= 10.0
    assert sample.cost_per_query_usd == pytest.approx(OTHER_USD, rel=0.05)
    assert sample.raters == OTHER_RATERS


async def test_a_deployment_without_series_samples_as_all_absent(prometheus: RunningPrometheus) -> None:
    async with PrometheusClient(prometheus.url) as client:
        ghost = await client.sample("test", "ghost", WINDOW)
        # Quotes, backslashes and newlines reach Prometheus as a valid string literal, not a syntax error.
        odd = await client.sample("test", 'do"cs\\\n', WINDOW)
    absent = SloSample(
        requests=None, p95_latency_seconds=None, error_ratio=None, satisfaction=None, cost_per_query_usd=None
    )
    assert ghost == absent
    assert odd == absent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_an_unreachable_prometheus_yields_none_and_says_why(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="ragops.operator.prometheus")
    async with PrometheusClient(f"http://127.0.0.1:{_free_port()}", timeout_seconds=2) as client:
        assert await client.sample("test", "docs", WINDOW) is None
    assert "no SLO sample for test/docs" in caplog.text
    assert "ConnectError" in caplog.text


# ---- failure modes and result shapes, played by a MockTransport -------------------------------------


def _vector(*values: str) -> httpx.Response:
    result = [{"metric": {}, "value": [1_700_000_000.0, value]} for value in values]
    return httpx.Response(200, json={"status": "success", "data": {"resultType": "vector", "result": result}})


Handler = Callable[[httpx.Request], httpx.Response]


async def _sample_with(handler: Handler) -> SloSample | None:
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        return await PrometheusClient("http://prometheus.test", client=http).sample("test", "docs", WINDOW)


def _by_objective(answers: dict[str, httpx.Response]) -> Handler:
    """Answers each of the six queries by the objective it reads."""
    queries = slo_queries("test", "docs", WINDOW)

    def handler(request: httpx.Request) -> httpx.Response:
        [name] = [name for name, promql in queries.items() if promql == request.url.params["query"]]
        return answers[name]

    return handler


async def test_values_empty_results_and_nan_map_onto_the_sample() -> None:
    sample = await _sample_with(
        _by_objective(
            {
                "requests": _vector("120"),
                "p95_latency_seconds": _vector("+Inf"),
                "error_ratio": _vector("0"),
                "satisfaction": _vector("NaN"),
                "cost_per_query_usd": _vector(),
                "raters": _vector("3"),
            }
        )
    )
    assert sample is not None
    assert (sample.requests, sample.error_ratio) == (120.0, 0.0)
    assert sample.p95_latency_seconds == math.inf
    assert (sample.satisfaction, sample.cost_per_query_usd) == (None, None)
    assert sample.raters == 3.0


def _timeout(request: httpx.Request) -> httpx.Response:
    raise httpx.ReadTimeout("timed out", request=request)


FAILURES: list[tuple[str, Handler, str]] = [
    ("http-500", lambda request: httpx.Response(500, text="internal error"), "HTTP 500"),
    (
        "status-error",
        lambda request: httpx.Response(
            422, json={"status": "error", "errorType": "execution", "error": "query processing would load too many"}
        ),
        "execution: query processing would load too many",
    ),
    (
        "status-error-with-200",
        lambda request: httpx.Response(200, json={"status": "error", "errorType": "internal", "error": "boom"}),
        "internal: boom",
    ),
    ("timeout", _timeout, "ReadTimeout"),
    ("not-json", lambda request: httpx.Response(200, text="<html>proxy login</html>"), "not a Prometheus API"),
    (
        "matrix",
        lambda request: httpx.Response(200, json={"status": "success", "data": {"resultType": "matrix", "result": []}}),
        "expected a vector",
    ),
    ("two-series", lambda request: _vector("1", "2"), "at most one series"),
    ("bad-value", lambda request: _vector("many"), "not a sample value"),
]


@pytest.mark.parametrize(("handler", "logged"), [case[1:] for case in FAILURES], ids=[case[0] for case in FAILURES])
async def test_any_failure_voids_the_whole_sample(
    handler: Handler, logged: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="ragops.operator.prometheus")
    assert await _sample_with(handler) is None
    assert logged in caplog.text


async def test_one_failed_objective_voids_the_sample() -> None:
    answers = {name: _vector("1") for name in slo_queries("test", "docs", WINDOW)}
    assert await _sample_with(_by_objective(answers)) is not None
    answers["error_ratio"] = httpx.Response(503, json={"status": "error", "errorType": "unavailable", "error": "x"})
    assert await _sample_with(_by_objective(answers)) is None


async def test_requests_go_to_the_query_endpoint_under_the_base_path() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return _vector("1")

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        client = PrometheusClient("http://monitoring.test/prometheus/", client=http)
        await client.sample("test", "docs", WINDOW)
        await client.aclose()
        assert not http.is_closed, "a client passed in is the caller's to close"
    assert len(seen) == len(fields(SloSample))
    assert {(request.method, request.url.host, request.url.path) for request in seen} == {
        ("GET", "monitoring.test", "/prometheus/api/v1/query")
    }
    assert {request.url.params["query"] for request in seen} == set(slo_queries("test", "docs", WINDOW).values())


# ---- the PromQL and the scrape config, checked offline ---------------------------------------------------


def test_there_is_one_query_per_sample_field() -> None:
    assert list(slo_queries("test", "docs", WINDOW)) == [field.name for field in fields(SloSample)]


@pytest.mark.parametrize(
    ("window", "rendered"),
    [("30s", "30s"), ("5m", "300s"), ("1h30m", "5400s"), ("1.5m", "90s"), ("500ms", "500ms"), ("1s250ms", "1250ms")],
)
def test_windows_render_as_promql_ranges(window: str, rendered: str) -> None:
    assert promql_duration(window) == rendered
    ranged = {name: promql for name, promql in slo_queries("test", "docs", window).items() if name != "raters"}
    assert all(f"[{rendered}]" in promql for promql in ranged.values())  # raters: a gauge over the runtime's window


def test_an_empty_window_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1ms"):
        promql_duration("0s")


def test_label_values_are_quoted_for_promql() -> None:
    assert promql_string('a"b\\c\nd') == '"a\\"b\\\\c\\nd"'
    queries = slo_queries('te"st', "docs", WINDOW)
    assert all('namespace="te\\"st",deployment="docs"' in promql for promql in queries.values())


def test_every_query_parses(tmp_path: Path) -> None:
    # promtool parses PromQL offline when the queries are written as recording rules.
    queries = slo_queries("test", 'do"cs', WINDOW)
    rules = {
        "groups": [
            {"name": "slo", "rules": [{"record": f"ragops:slo_{name}", "expr": expr} for name, expr in queries.items()]}
        ]
    }
    rules_file = tmp_path / "rules.yml"
    rules_file.write_text(yaml.safe_dump(rules))
    result = subprocess.run([str(PROMTOOL), "check", "rules", str(rules_file)], capture_output=True, timeout=60)
    assert result.returncode == 0, (result.stdout + result.stderr).decode()
    assert f"SUCCESS: {len(queries)} rules found".encode() in result.stdout


def test_the_generated_scrape_config_passes_promtool(tmp_path: Path) -> None:
    config_file = tmp_path / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(scrape_config(["127.0.0.1:9100", "127.0.0.1:9101"])))
    result = subprocess.run([str(PROMTOOL), "check", "config", str(config_file)], capture_output=True, timeout=60)
    assert result.returncode == 0, (result.stdout + result.stderr).decode()
    assert b"SUCCESS" in result.stdout


# ---- the rollout's analysis queries ---------------------------------------------------------------------

ANALYSIS_WINDOW = timedelta(seconds=90)


def _analysis_queries() -> dict[str, str]:
    return analysis_queries('te"st', "docs", ANALYSIS_WINDOW, overlap_level="document", overlap_measure="rbo")


def test_every_analysis_query_parses(tmp_path: Path) -> None:
    queries = _analysis_queries()
    rules = {
        "groups": [{"name": "analysis", "rules": [{"record": f"ragops:{n}", "expr": e} for n, e in queries.items()]}]
    }
    rules_file = tmp_path / "rules.yml"
    rules_file.write_text(yaml.safe_dump(rules))
    result = subprocess.run([str(PROMTOOL), "check", "rules", str(rules_file)], capture_output=True, timeout=60)
    assert result.returncode == 0, (result.stdout + result.stderr).decode()
    assert f"SUCCESS: {len(queries)} rules found".encode() in result.stdout


def test_analysis_queries_group_by_version_over_one_window() -> None:
    queries = _analysis_queries()
    windowed = {name: q for name, q in queries.items() if name != "raters"}
    assert all('namespace="te\\"st",deployment="docs"' in q and "[90s]" in q for q in windowed.values())
    # The raters gauge counts over the runtime's own feedback window, by version and role, max over replicas.
    assert (
        queries["raters"] == 'max by (kb_version, role) (ragops_feedback_raters{namespace="te\\"st",deployment="docs"})'
    )

    assert all("kb_version" in q for q in queries.values())
    assert 'role="shadow",level="document",measure="rbo"' in queries["overlap_sum"]


def test_user_slos_leave_probes_and_shadow_out_and_can_read_one_version() -> None:
    queries = slo_queries("test", "docs", WINDOW, kb_version="docs-v1")
    assert all('role!~"shadow|probe",kb_version="docs-v1"' in q for q in queries.values())


def test_the_analysis_reading_picks_both_versions_out_of_the_groups() -> None:
    def series(value: float, **labels: str) -> tuple[dict[str, str], float]:
        return labels, value

    results = {
        "requests": [
            series(980, kb_version="v1", role="stable", status="ok"),
            series(20, kb_version="v1", role="stable", status="error"),
            series(110, kb_version="v2", role="canary", status="ok"),
            series(60, kb_version="v1", role="probe", status="ok"),
            series(60, kb_version="v2", role="probe", status="ok"),
            series(7, kb_version="v0", role="stable", status="ok"),  # an older version: ignored
        ],
        "p95_seconds": [
            series(0.3, kb_version="v1", role="stable"),
            series(float("nan"), kb_version="v2", role="canary"),
            series(float("inf"), kb_version="v2", role="probe"),
        ],
        "cost_usd": [series(1.0, kb_version="v1", role="stable"), series(0.2, kb_version="v2", role="canary")],
        "rating_sum": [series(8.0, kb_version="v2", role="canary")],
        "ratings": [series(10.0, kb_version="v2", role="canary")],
        "overlap_sum": [series(30.0, kb_version="v2")],
        "overlap_count": [series(40.0, kb_version="v2")],
        "shadow_outcomes": [
            series(3.0, kb_version="v2", outcome="error"),
            series(1.0, kb_version="v2", outcome="dropped"),
        ],
        "raters": [
            series(4.0, kb_version="v2", role="canary"),
            series(9.0, kb_version="v1", role="stable"),
            series(2.0, kb_version="v2", role="probe"),  # never rated by users: not the canary's raters
        ],
        "probe_hits": [
            series(57.0, kb_version="v1", hit="true"),
            series(3.0, kb_version="v1", hit="false"),
            series(60.0, kb_version="v2", hit="false"),
        ],
    }
    reading = analysis_reading(results, stable="v1", canary="v2", window=ANALYSIS_WINDOW)
    assert reading.window_seconds == 90
    assert reading.stable == TrafficReading(requests=1000, errors=20, p95_seconds=0.3, cost_usd=1.0, raters=9.0)
    assert reading.canary == TrafficReading(
        requests=110, errors=0.0, cost_usd=0.2, rating_sum=8.0, ratings=10.0, raters=4.0
    )
    assert reading.stable_probes.requests == 60 and reading.canary_probes.p95_seconds is None
    assert reading.stable_recall == Proportion(57, 60) and reading.canary_recall == Proportion(0, 60)
    assert reading.shadow == ShadowReading(overlap_sum=30, comparisons=40, errors=3, dropped=1)
    nothing = analysis_reading({}, stable="v1", canary="v2", window=ANALYSIS_WINDOW)
    assert nothing.canary == TrafficReading() and nothing.stable_recall is None


# ---- a rollout's analysis read from a real Prometheus ----------------------------------------------------

ROLLOUT_PODS = (
    DeploymentIdentity(namespace="test", deployment="rollout", pod="rollout-a"),
    DeploymentIdentity(namespace="test", deployment="rollout", pod="rollout-b"),
)
ROLLOUT_WINDOW = timedelta(seconds=30)
OVERLAP = {(level, measure): 0.5 for level in ("chunk", "document") for measure in ("jaccard", "rbo")}


def _user(pod: RuntimeMetrics, version: str, role: str, status: str, seconds: float, usd: float) -> None:
    # The (mode, status) pairs the query service records, whose series prepare_split creates at zero.
    mode = "none" if status == "error" else "retrieval_only"
    pod.observe_query(mode=mode, status=status, seconds=seconds, stages={}, kb_version=version, role=role)
    pod.cost(service="embedding", usd=usd, kb_version=version, role=role)


def _probe(pod: RuntimeMetrics, version: str, hit: bool, seconds: float) -> None:
    pod.observe_query(mode="retrieval_only", status="ok", seconds=seconds, stages={}, kb_version=version, role="probe")
    pod.probe_hit(hit, kb_version=version)


def _rollout_baseline(pod: RuntimeMetrics) -> None:
    """Healthy traffic of both versions before the first scrape: outside any window read below."""
    pod.prepare_split("v1", "v2", probes=True)
    for _ in range(20):
        for version, role in (("v1", "stable"), ("v2", "canary")):
            _user(pod, version, role, "ok", 0.08, 0.001)
            _user(pod, version, role, "error", 0.08, 0.001)  # the error series too, away from zero
            pod.feedback(0.8, kb_version=version, role=role)
        for version in ("v1", "v2"):
            _probe(pod, version, True, 0.04)
            pod.probe_hit(False, kb_version=version)  # keeps both hit series away from zero (see _baseline)
        for outcome in ("ok", "error", "dropped"):
            pod.shadow_query(outcome, kb_version="v2")
        pod.overlap({key: 0.9 for key in OVERLAP}, kb_version="v2", role="shadow")


@pytest.fixture(scope="module")
def rollout_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPrometheus]:
    """test/rollout mid-canary: the candidate v2 is slower, fails more, is rated lower, recalls less and
    overlaps little with stable v1. Every count is split over two pods, as replicas split a rollout."""
    pods = [RuntimeMetrics(identity) for identity in ROLLOUT_PODS]
    for pod in pods:
        _rollout_baseline(pod)
    with (
        serving_metrics(pods[0]) as pod_a,
        serving_metrics(pods[1]) as pod_b,
        running_prometheus([pod_a, pod_b], tmp_path_factory.mktemp("rollout-prometheus")) as prometheus,
    ):
        baseline = 2 * 20 * 6
        prometheus.wait_for("sum(ragops_queries_total)", baseline)
        for index in range(100):  # stable: 2 % errors, fast, rated 0.8
            _user(pods[index % 2], "v1", "stable", "error" if index < 2 else "ok", 0.08, 0.001)
        for index in range(40):
            pods[index % 2].feedback(0.8, kb_version="v1", role="stable")
        for index in range(60):  # canary: 20 % errors, slow, rated 0.5
            _user(pods[index % 2], "v2", "canary", "error" if index < 12 else "ok", 0.9, 0.001)
        for index in range(30):
            pods[index % 2].feedback(0.5, kb_version="v2", role="canary")
        for pod in pods:  # each replica reads the deployment's raters from the answer log: the same counts
            pod.set_raters({("v1", "stable"): 8, ("v2", "canary"): 5})
        for index in range(40):  # golden probes: stable finds 38 of 40, the candidate 26
            _probe(pods[index % 2], "v1", index >= 2, 0.04)
            _probe(pods[index % 2], "v2", index >= 14, 0.04)
        for index in range(30):  # shadows: overlap 0.5, and 10 errors (no overlap at all), 3 dropped
            pods[index % 2].shadow_query("ok", kb_version="v2")
            pods[index % 2].overlap(OVERLAP, kb_version="v2", role="shadow")
        for index in range(13):
            pods[index % 2].shadow_query("error" if index < 10 else "dropped", kb_version="v2")
        prometheus.wait_for("sum(ragops_queries_total)", baseline + 100 + 60 + 80)
        prometheus.wait_for("min(count_over_time(ragops_queries_total[30s]))", 8, at_least=True)
        yield prometheus


async def test_the_analysis_reading_matches_the_recorded_rollout(rollout_prometheus: RunningPrometheus) -> None:
    async with PrometheusClient(rollout_prometheus.url) as client:
        reading = await client.analysis(
            "test",
            "rollout",
            stable="v1",
            canary="v2",
            window=ROLLOUT_WINDOW,
            overlap_level="document",
            overlap_measure="rbo",
        )
    assert reading is not None and reading.window_seconds == 30
    # Counts come out slightly above the truth (increase() extrapolates to the window's edges);
    # ratios of series scraped together are nearly exact.
    stable, canary = reading.stable, reading.canary
    assert stable.requests is not None and 100 <= stable.requests <= 125
    assert canary.requests is not None and 60 <= canary.requests <= 75
    assert stable.errors is not None and stable.errors / stable.requests == pytest.approx(0.02, abs=0.005)
    assert canary.errors is not None and canary.errors / canary.requests == pytest.approx(0.20, abs=0.01)
    assert stable.p95_seconds is not None and 0.05 < stable.p95_seconds <= 0.1
    assert canary.p95_seconds is not None and 0.5 < canary.p95_seconds <= 1.0
    assert stable.rating_sum is not None and stable.ratings is not None
    assert stable.rating_sum / stable.ratings == pytest.approx(0.8, abs=0.01)
    assert canary.rating_sum is not None and canary.ratings is not None
    assert canary.rating_sum / canary.ratings == pytest.approx(0.5, abs=0.01)
    assert (stable.raters, canary.raters) == (8, 5)  # max over the replicas, never their sum
    assert stable.cost_usd is not None and stable.cost_usd / stable.requests == pytest.approx(0.001, rel=0.02)
    assert reading.stable_probes.requests is not None and 40 <= reading.stable_probes.requests <= 50
    assert reading.stable_recall is not None and reading.stable_recall.rate == pytest.approx(0.95, abs=0.02)
    assert reading.canary_recall is not None and reading.canary_recall.rate == pytest.approx(0.65, abs=0.02)
    shadow = reading.shadow
    assert shadow.overlap_sum is not None and shadow.comparisons is not None
    assert shadow.overlap_sum / shadow.comparisons == pytest.approx(0.5, abs=0.01)
    assert shadow.errors / shadow.comparisons == pytest.approx(10 / 30, abs=0.02)
    assert shadow.dropped / shadow.comparisons == pytest.approx(3 / 30, abs=0.02)

    check = judge_analysis(
        reading, AnalysisSpec(), Applicable(user_traffic=True, shadow=True, probes=True, golden_probes=True)
    )
    assert check.verdict is AnalysisVerdict.FAIL
    verdicts = {o.name.split(" ")[0]: o.verdict for o in check.objectives}
    assert verdicts == {
        "p95LatencyMs": AnalysisVerdict.FAIL,
        "errorRate": AnalysisVerdict.FAIL,  # 20 % vs 2 %, significant on 60 queries
        "satisfaction": AnalysisVerdict.FAIL,
        "costPerQueryUsd": AnalysisVerdict.PASS,
        "shadowOverlap": AnalysisVerdict.FAIL,  # 15 / 40 = 0.375 < 0.5
        "goldenRecall": AnalysisVerdict.FAIL,
    }


async def test_user_slos_of_a_rollout_read_one_version_and_never_probes(rollout_prometheus: RunningPrometheus) -> None:
    async with PrometheusClient(rollout_prometheus.url) as client:
        stable = await client.sample("test", "rollout", WINDOW, kb_version="v1")
        both = await client.sample("test", "rollout", WINDOW)
    assert stable is not None and both is not None
    assert stable.requests is not None and 100 <= stable.requests <= 125
    assert stable.error_ratio == pytest.approx(0.02, abs=0.005)
    # Both versions' users (160 queries, 14 errors), and none of the 80 probes.
    assert both.requests is not None and 160 <= both.requests <= 200
    assert both.error_ratio == pytest.approx(14 / 160, abs=0.005)
