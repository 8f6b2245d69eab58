"""`ragops cost estimate` from measured usage: a real runtime's answer log, and a real Prometheus scraping it.

Queries go through a real runtime (real PostgreSQL + pgvector, the Anthropic double reporting token
usage); the expected numbers are computed here from what the double saw and sent, times the list
price, independently of the runtime's and the estimator's arithmetic.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from ragops_operator.cli import main
from ragops_runtime.app import create_app
from tests.integration.test_runtime import ask, publish, settings_for
from tests.support.anthropic_messages import DEFAULT_API_KEY, FakeAnthropic, running_anthropic_server
from tests.support.prometheus import running_prometheus
from tests.support.runtime_server import serving

QUESTIONS = (
    "What does error code E07 on the display mean?",
    "How long is the frame warranty?",
    "How do I charge the battery?",
)
SONNET_INPUT, SONNET_OUTPUT = 3.0, 15.0  # USD per million tokens, Anthropic's list price


@pytest.fixture
def published(pg_dsn: str) -> str:
    asyncio.run(publish(pg_dsn, "v1"))
    return pg_dsn


def spent_by_the_double(fake: FakeAnthropic, answers: list[str]) -> tuple[int, int]:
    """Tokens the double reported: ~4 characters a token of what it received and of what it answered."""
    received = sum(max(1, len(request.system + request.user_text) // 4) for request in fake.requests)
    sent = sum(max(1, len(answer) // 4) for answer in answers)
    return received, sent


def test_cost_from_a_real_answer_log(published: str) -> None:
    with running_anthropic_server() as fake:
        settings = settings_for(published, anthropic_api_key=DEFAULT_API_KEY, anthropic_base_url=fake.url)
        with serving(create_app(settings, dsn=published)) as url, httpx.Client(base_url=url, timeout=30) as client:
            bodies = [ask(client, question).json() for question in QUESTIONS]
            assert ask(client, QUESTIONS[0]).json()["mode"] == "cached"  # logged at no cost
    assert [body["mode"] for body in bodies] == ["generated"] * 3
    input_tokens, output_tokens = spent_by_the_double(fake, [body["answer"] for body in bodies])
    spent = (input_tokens * SONNET_INPUT + output_tokens * SONNET_OUTPUT) / 1e6

    result = CliRunner().invoke(
        main,
        [
            *("cost", "estimate", "--dsn", published, "--kb", "sample", "--since", "1h", "--deployment", "docs"),
            *("--max-cost-per-query", "0.0001", "--output", "json"),
        ],
    )
    assert result.exit_code == 3, result.output  # the double's answers cost more than $0.0001 each
    report = json.loads(result.output)
    assert report["source"] == "answer log" and report["overBudget"] is True
    assert report["costPerQueryUsd"] == pytest.approx(spent / 4)  # a cached answer costs nothing
    scale = report["scaleToMonth"]
    assert scale == pytest.approx(30 * 86400 / report["windowSeconds"])
    services = report["services"]
    assert services["generation input"]["quantity"] == pytest.approx(input_tokens * scale)
    assert services["generation output"]["quantity"] == pytest.approx(output_tokens * scale)
    assert services["generation input"]["usd"] + services["generation output"]["usd"] == pytest.approx(spent * scale)
    assert (services["embedding"]["usd"], services["rerank"]["usd"]) == (0.0, 0.0)  # hashing, no reranker
    assert report["monthlyQueries"] == pytest.approx(4 * scale)
    assert services["embedding"]["quantity"] == pytest.approx(3 * 20 * scale)  # the cached query embedded nothing
    # What the runtime itself recorded per answer (a real column) agrees.
    assert report["recordedGenerationUsdInWindow"] == pytest.approx(spent, rel=1e-5)

    other = CliRunner().invoke(main, ["cost", "estimate", "--dsn", published, "--kb", "elsewhere", "--output", "json"])
    assert other.exit_code == 1 and "no answer of 'elsewhere'" in other.output


def test_cost_from_a_real_prometheus_scraping_the_runtime(published: str, tmp_path: Path) -> None:
    with running_anthropic_server() as fake:
        settings = settings_for(published, anthropic_api_key=DEFAULT_API_KEY, anthropic_base_url=fake.url)
        with serving(create_app(settings, dsn=published)) as url, httpx.Client(base_url=url, timeout=30) as client:
            target = url.removeprefix("http://")
            with running_prometheus([target], tmp_path) as prometheus:
                prometheus.wait_for('ragops_queries_total{mode="generated",status="ok"}', 0)
                bodies = [ask(client, question).json() for question in QUESTIONS]
                assert ask(client, QUESTIONS[1]).json()["mode"] == "cached"
                prometheus.wait_for('sum(ragops_queries_total{status="ok"})', 4)
                prometheus.wait_for('ragops_llm_tokens_total{direction="output"}', 1, at_least=True)
                result = CliRunner().invoke(
                    main,
                    [
                        *("cost", "estimate", "--prometheus-url", prometheus.url, "--since", "10m"),
                        *("--namespace", "test", "--deployment", "docs", "--output", "json"),
                    ],
                )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    input_tokens, output_tokens = spent_by_the_double(fake, [body["answer"] for body in bodies])
    spent = (input_tokens * SONNET_INPUT + output_tokens * SONNET_OUTPUT) / 1e6
    assert report["source"] == "prometheus" and report["scaleToMonth"] == pytest.approx(30 * 24 * 6)
    # increase() extrapolates each series to the window's edges; series born at different scrapes (the
    # cost series at start, a query label at its first query) get slightly different factors: measured up
    # to 1.1 % apart. Three percent still tells a free cached answer from a billed one (that would be +33 %).
    assert report["costPerQueryUsd"] == pytest.approx(spent / 4, rel=0.03)  # a cached answer costs nothing
    services = report["services"]
    assert services["generation output"]["quantity"] / services["generation input"]["quantity"] == pytest.approx(
        output_tokens / input_tokens,
        rel=0.03,  # the same extrapolation as above: read 1.1 % apart in a full run
    )
    # Totals: increase() extrapolates a series only seconds old to the window's edges, which inflates
    # them (here by up to ~30 %), never below what the counters saw.
    scale = report["scaleToMonth"]
    assert 4 * scale <= report["monthlyQueries"] <= 6 * scale
    assert 3 * 20 * scale <= services["embedding"]["quantity"] <= 4.5 * 20 * scale
    assert spent <= report["recordedGenerationUsdInWindow"] <= 1.5 * spent
