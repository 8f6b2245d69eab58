"""The served OpenAPI document is accurate: schemathesis fuzzes every operation of a live runtime.

Responses must match the documented schemas (status codes, content types, bodies), and no input
may produce a server error; a 503 is allowed only as a documented answer (saturation, outage).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from psycopg import sql
from psycopg.conninfo import make_conninfo
from schemathesis.checks import not_a_server_error

from ragops_runtime.app import create_app
from tests.integration.test_runtime import publish, settings_for
from tests.support.runtime_server import serving


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
    assert {f"{op.method.upper()} {op.path}" for op in operations} >= {
        "POST /v1/query",
        "POST /v1/feedback",
        "GET /v1/info",
        "GET /healthz",
        "GET /readyz",
        "GET /metrics",
    }
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def conforms(case: Any) -> None:
            response = case.call()
            assert response.status_code < 500 or response.status_code == 503, (case.path, response.text)
            case.validate_response(response, excluded_checks=[not_a_server_error])

        conforms()
