"""`ragops demo` end to end, as `make demo` runs it: a subprocess on a fresh data directory.

Also the demo's injected fault on its own, against the embedded PostgreSQL: statements on the chosen
table are held, every other statement passes at once.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from ragops_operator.demo.pgfault import SlowTableProxy
from ragops_operator.demo.story import _unix_socket
from ragops_runtime.store.embedded import embedded_dsn
from tests.support.anthropic_messages import DEFAULT_API_KEY, running_anthropic_server

RAGOPS = str(Path(sys.executable).parent / "ragops")
DEMO_BUDGET_SECONDS = 240
"""The demo is meant to take under a minute and a half on a 2-core machine; the bound catches a hang."""


def _run_demo(tmp_path: Path, extra_env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAGOPS_", "ANTHROPIC_"))}
    # The demo must not touch the user's data directory: point it somewhere that must stay empty.
    env["RAGOPS_DATA_DIR"] = str(tmp_path / "user-data")
    env.update(extra_env)
    started = time.monotonic()
    result = subprocess.run([RAGOPS, "demo"], env=env, capture_output=True, text=True, timeout=DEMO_BUDGET_SECONDS)
    return result, time.monotonic() - started


def _assert_story(output: str, tmp_path: Path) -> None:
    data_dir = re.search(r"ragops demo data in (\S+) ", output)
    assert data_dir, output
    # KB v1 built and gated from the bundled sample, with the metric values.
    assert re.search(r"gate v1: passed", output)
    # v2 refused by its gate, naming metric values against thresholds, and by the store on activation.
    refused = re.search(r"gate v2: FAILED \((?P<failed>[^)]*)\)", output)
    assert refused, output
    assert re.search(r"recallAtK=0\.\d+<0\.900", refused["failed"])
    assert re.search(r"activate v2: refused by the store: version 'v2' failed its gate", output)
    # v3 gated and activated, then breached and rolled back to v1 by the SLO decision.
    assert "gate v3: passed" in output
    assert "activated v3 (previous v1)" in output
    assert "INJECTED FAULT" in output
    breaches = re.findall(r"v3 check \d \(baking\): Breached requests=12 p95=(\d+) ms", output)
    assert len(breaches) == 2, output
    assert re.search(
        r"decision: 2 consecutive breached checks >= threshold 2 during bake \(last: p95LatencyMs=", output
    )
    assert re.search(r"rolled back v3 -> v1: 2 consecutive breached checks", output)
    # The store's activation history records the rollback with the SLO decision as its reason.
    assert re.search(r"rollback\s+v3 -> v1: demo SLO watch: 2 consecutive breached checks", output)
    recovered = re.search(r"v1 after rollback: Met requests=12 p95=(\d+) ms", output)
    assert recovered and int(recovered[1]) < min(map(int, breaches))
    # The summary table and a clean exit.
    assert "ragops demo: summary" in output
    for step in ("build v1", "gate v2", "activate v2", "SLO watch v3", "rollback", "recovery v1"):
        assert re.search(rf"│ {re.escape(step)}\s+│", output), step
    # The canaries: the slower v4 aborted by the relative analysis, having answered about 10 % of the
    # users (its blast radius), and the healthy v5 promoted through every step.
    assert "gate v4: passed" in output and "gate v5: passed" in output
    assert re.search(r"RolloutAborted: AnalysisFailed: rollout of v4 aborted at step [35]/5", output), output
    blast = re.search(r"blast radius: v4 answered (\d+) of the (\d+) user queries", output)
    assert blast and 0 < int(blast[1]) < 0.35 * int(blast[2]), output
    assert re.search(r"│ canary v4\s+│ Aborted \(AnalysisFailed\)", output)
    assert re.search(r"│ canary v5\s+│ Promoted", output)
    assert "RolloutPromoting: all 5 steps done: promoting v5" in output
    assert re.search(r"abort\s+v4 -> +v1", output) and re.search(r"activate\s+v1 -> +v5", output)
    assert "demo complete" in output
    # Nothing left behind: the temporary data directory is removed, the user's was never created.
    assert not Path(data_dir[1]).exists()
    assert not (tmp_path / "user-data").exists()


@pytest.mark.postgres
def test_demo_without_an_api_key_answers_retrieval_only_and_rolls_back(tmp_path: Path) -> None:
    result, seconds = _run_demo(tmp_path, {})
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert result.stdout.rstrip().endswith("demo complete")
    _assert_story(output, tmp_path)
    assert "generation: disabled: no Anthropic API key" in output
    assert output.count("retrieval-only, no ANTHROPIC_API_KEY") == 3
    assert len(re.findall(r"timings: embed [\d.]+ ms, retrieve [\d.]+ ms, total [\d.]+ ms", output)) == 3
    assert "[1] warranty/frame-warranty.md" in output
    assert seconds < DEMO_BUDGET_SECONDS


@pytest.mark.postgres
def test_demo_with_an_api_key_prints_generated_answers(tmp_path: Path) -> None:
    with running_anthropic_server() as anthropic:
        result, _ = _run_demo(
            tmp_path, {"ANTHROPIC_API_KEY": DEFAULT_API_KEY, "RAGOPS_ANTHROPIC_BASE_URL": anthropic.url}
        )
        prompts = [request.user_text for request in anthropic.requests]
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    _assert_story(output, tmp_path)
    assert "generation: enabled" in output
    assert output.count("(generated by Anthropic, v1)") == 3
    assert len(re.findall(r"timings: embed [\d.]+ ms, retrieve [\d.]+ ms, generate [\d.]+ ms, total", output)) == 3
    # The three questions, every query of the baseline, the two v3 checks and the recovery, then the
    # canaries' user queries.
    assert len(prompts) > 3 + 4 * 12
    assert "How long is the frame warranty?" in prompts[0]


@pytest.mark.postgres
async def test_the_fault_holds_only_statements_on_the_chosen_table(tmp_path: Path) -> None:
    dsn = embedded_dsn(tmp_path)
    proxy = SlowTableProxy(_unix_socket(dsn))
    await proxy.start()
    try:
        via_proxy = f"postgresql://postgres@127.0.0.1:{proxy.port}/postgres?sslmode=disable&gssencmode=disable"
        async with await psycopg.AsyncConnection.connect(via_proxy, autocommit=True) as connection:
            await connection.execute("CREATE TABLE slow_one (x int)")
            await connection.execute("CREATE TABLE fast_one (x int)")
            proxy.inject("slow_one", 0.3)

            async def timed(sql: str, *, prepare: bool | None = None) -> float:
                started = time.monotonic()
                await connection.execute(sql, prepare=prepare)
                return time.monotonic() - started

            assert await timed("SELECT count(*) FROM fast_one") < 0.2
            assert await timed("SELECT count(*) FROM slow_one") >= 0.3
            # A prepared statement is sent once by name; later executions are still recognised.
            for _ in range(3):
                assert await timed("SELECT count(*) FROM slow_one WHERE x > 0", prepare=True) >= 0.3
            assert await timed("SELECT count(*) FROM fast_one WHERE x > 0", prepare=True) < 0.2
            assert proxy.stats.delayed_statements == 4
            proxy.clear()
            assert await timed("SELECT count(*) FROM slow_one") < 0.2
    finally:
        await proxy.stop()
    await asyncio.sleep(0)
