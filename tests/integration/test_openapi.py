"""The served OpenAPI document is accurate: schemathesis fuzzes every operation of a live runtime.

Positive cases (valid by the schema) must be accepted and answered as documented (status codes,
content types, bodies); negative cases (a wrong type, a missing or extra field, a value out of
range: what strict request types refuse, e.g. `"topK": "5"`, `"stream": 0`) must be refused with
a 4xx in the one error shape. No input may produce a server error; a 503 is allowed only as a
documented answer (saturation, outage).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from psycopg import sql
from psycopg.conninfo import make_conninfo
from schemathesis.checks import not_a_server_error, positive_data_acceptance
from schemathesis.generation import GenerationMode

from ragops_runtime.app import create_app
from tests.integration.test_runtime import publish, settings_for
from tests.support.runtime_server import serving

OPENAI_PATHS = ("/v1/chat/completions", "/v1/models")


@pytest.fixture(scope="module")
def runtime_url(postgres_server: str) -> Iterator[str]:
    name = f"t_openapi_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_server, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = make_conninfo(postgres_server, dbname=name)
    asyncio.run(publish(dsn, "v1"))
    app = create_app(settings_for(dsn, requests_per_minute_per_client=1_000_000), dsn=dsn)
    with serving(app) as url:
        yield url
    with psycopg.connect(postgres_server, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def test_every_operation_matches_its_documentation(runtime_url: str) -> None:
    # Driven through Hypothesis directly: schemathesis' pytest plugin does not run on this pytest.
    api = schemathesis.openapi.from_url(f"{runtime_url}/openapi.json")
    operations = [result.ok() for result in api.get_all_operations()]  # type: ignore[union-attr]
    assert {f"{op.method.upper()} {op.path}" for op in operations} == {
        "POST /v1/query",
        "POST /v1/feedback",
        "POST /v1/jobs",
        "GET /v1/jobs/{job_id}",
        "GET /v1/info",
        "GET /healthz",
        "GET /readyz",
        "GET /metrics",
        "POST /v1/chat/completions",
        "GET /v1/models",
        "GET /v1/models/{model}",
    }
    for operation in operations:
        excluded = [not_a_server_error]
        if operation.path == "/v1/chat/completions":
            # OpenAI's protocol has rules JSON Schema cannot state (the last message is the user's, the
            # earlier ones fit a total length): a schema-valid request may get its documented 400.
            excluded.append(positive_data_acceptance)
        # The OpenAI-compatible routes answer errors in OpenAI's shape, which its SDKs read.
        shape = {"message", "type", "param", "code"} if operation.path.startswith(OPENAI_PATHS) else {"code", "message"}
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            if mode is GenerationMode.NEGATIVE and not _has_inputs(operation):
                continue

            # More negative cases: each mutates one thing, and a loose type must be found reliably.
            examples = 150 if mode is GenerationMode.NEGATIVE else 40

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            def conforms(case: Any) -> None:
                response = case.call()
                assert response.status_code < 500 or response.status_code == 503, (case.path, response.text)
                if response.status_code >= 400:
                    error = response.json()
                    assert set(error) == {"error"} and set(error["error"]) == shape, error  # noqa: B023 (run at once)
                case.validate_response(response, excluded_checks=excluded)  # noqa: B023 (run at once)

            conforms()


def _has_inputs(operation: Any) -> bool:
    """Whether the operation takes anything a client could get wrong (a body, a path or query parameter).

    GET /v1/models/{model} takes any string, as OpenAI's does (an unknown model is its documented
    404): no value is invalid by the schema, so there is no negative case to draw.
    """
    if operation.path == "/v1/models/{model}":
        return False
    return bool(operation.body) or any(True for _ in operation.iter_parameters())


def test_the_coverage_phase_finds_every_loose_type(runtime_url: str, tmp_path: Path) -> None:
    """schemathesis' own runner, coverage phase: for every field of every operation, deterministic cases
    at and past each bound and of every wrong JSON type (a string for an integer, 0 for a boolean ...),
    which fuzzing above may or may not happen to draw. All checks, a server error included; for chat
    completions all but the acceptance of schema-valid data, as above (its documented 400)."""
    (tmp_path / "schemathesis.toml").write_text(
        '[[operations]]\ninclude-path = "/v1/chat/completions"\nchecks.positive_data_acceptance.enabled = false\n'
    )
    run = subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"),
            *("run", f"{runtime_url}/openapi.json", "--phases", "coverage", "--checks", "all"),
            *("--mode", "all", "--no-color"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,  # its run cache (.schemathesis/) stays out of the checkout
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "11 passed" in run.stdout, run.stdout[-3000:]
