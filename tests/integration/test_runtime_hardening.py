"""The runtime under abuse, served for real over real PostgreSQL (issue 16, items 7-12).

Strict request types and one error shape for every error; bodies and headers bounded before
anything is parsed and slow clients cut; the rate limit keyed on an identity the operator can
trust; one rating per answer and rater, cached answers rateable and free; no server path in
what clients see.
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ragops_runtime import sample
from tests.integration.test_runtime import QUESTION, ask, generating_runtime, metric, publish, runtime


@pytest.fixture
def published(pg_dsn: str) -> str:
    asyncio.run(publish(pg_dsn, "v1"))
    return pg_dsn


def error_of(response: httpx.Response) -> dict[str, Any]:
    """The project's one error shape, `{"error": {"code", "message"}}`, and nothing else."""
    assert response.headers["content-type"].startswith("application/json"), response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert all(isinstance(value, str) and value for value in body["error"].values()), body
    error: dict[str, Any] = body["error"]
    return error


# ---- item 11: strict types, one error shape ------------------------------------------------------

LOOSE_VALUES = [
    ("/v1/query", {"query": QUESTION, "topK": "5"}, "topK"),
    ("/v1/query", {"query": QUESTION, "stream": 0}, "stream"),
    ("/v1/query", {"query": QUESTION, "stream": "true"}, "stream"),
    ("/v1/query", {"query": QUESTION, "topK": 5.5}, "topK"),
    ("/v1/query", {"query": QUESTION, "filters": {"team": ["a"]}}, "filters.team"),
    ("/v1/query", {"query": 5}, "query"),
    ("/v1/jobs", {"queries": [{"query": QUESTION, "topK": "5"}]}, "queries.0.topK"),
    ("/v1/feedback", {"queryId": "00000000-0000-0000-0000-000000000000", "rating": "1"}, "rating"),
    ("/v1/feedback", {"queryId": "00000000-0000-0000-0000-000000000000", "rating": True}, "rating"),
]


def test_loose_types_are_refused_naming_the_field(published: str) -> None:
    with runtime(published) as client:
        for path, body, field in LOOSE_VALUES:
            response = client.post(path, json=body)
            assert response.status_code == 422, (path, body, response.text)
            error = error_of(response)
            assert error["code"] == "invalid_request" and error["message"].startswith(f"{field}:"), (body, error)


def test_every_error_has_the_one_error_shape(published: str) -> None:
    with runtime(published) as client:
        headers = {"content-type": "application/json"}
        not_utf8 = client.post("/v1/query", content=b'{"query": "caf\xe9"}', headers=headers)
        assert not_utf8.status_code == 400 and error_of(not_utf8)["code"] == "invalid_json"
        not_json = client.post("/v1/query", content=b'{"query": ', headers=headers)
        assert not_json.status_code == 400 and error_of(not_json)["code"] == "invalid_json"
        assert error_of(client.post("/v1/feedback", content=b"\xff\xfe", headers=headers))["code"] == "invalid_json"
        assert error_of(client.post("/v1/jobs", content=b"[", headers=headers))["code"] == "invalid_json"
        # A body sent as a form (curl -d without a Content-Type) says what to send instead.
        for media_type in ("application/x-www-form-urlencoded", "text/plain"):
            form = client.post("/v1/query", content=b'{"query": "warranty"}', headers={"content-type": media_type})
            assert form.status_code == 422 and error_of(form)["message"] == (
                f"body: send JSON with Content-Type: application/json (this request's was {media_type})"
            )
        missing = client.get("/v1/nothing-here")
        assert missing.status_code == 404 and error_of(missing)["code"] == "not_found"
        wrong_method = client.put("/v1/query", json={"query": QUESTION})
        assert wrong_method.status_code == 405 and error_of(wrong_method)["code"] == "method_not_allowed"
        bad_id = client.get("/v1/jobs/not-a-uuid")
        assert bad_id.status_code == 422 and error_of(bad_id)["message"].startswith("job_id:")
        assert ask(client).status_code == 200
        # One JSON number type: 5.0 is the integer 5, as JSON Schema says.
        assert ask(client, topK=5.0).status_code == 200


# ---- item 7: bodies and headers bounded before parsing, slow clients cut ----------------------------


def open_socket(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    connection = socket.create_connection((host, int(port)), timeout=10)
    return connection


def read_response(connection: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of one HTTP/1.1 response (Content-Length bodies), read to the end of the body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    while len(body) < int(headers.get("content-length", "0")):
        chunk = connection.recv(65536)
        assert chunk, "connection closed inside the body"
        body += chunk
    return int(status_line.split()[1]), headers, body


def closed_by_server(connection: socket.socket, within: float) -> bool:
    """True when the server closes the connection (EOF or reset) within `within` seconds."""
    connection.settimeout(within)
    try:
        while connection.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


def shaped(body: bytes) -> dict[str, Any]:
    return error_of(httpx.Response(200, content=body, headers={"content-type": "application/json"}))


@pytest.mark.parametrize("path", ["/v1/query", "/v1/feedback", "/v1/jobs"])
def test_a_50_mb_body_is_refused_413_before_it_is_read(published: str, path: str) -> None:
    with runtime(published) as client:
        url = str(client.base_url)
        with open_socket(url) as connection:
            connection.sendall(
                f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                f"Content-Length: {50 * 2**20}\r\n\r\n".encode()
            )
            connection.sendall(b'{"query": "' + b"x" * 65536)  # a start, never the rest
            status, headers, body = read_response(connection)
            assert status == 413 and shaped(body)["code"] == "body_too_large", body
            assert headers.get("connection") == "close"
            assert closed_by_server(connection, within=5)

        # Without a Content-Length (chunked), the body is cut as soon as it passes the limit.
        def chunks() -> Any:
            for _ in range(50 * 16):
                yield b" " * 65536

        chunked = client.post(path, content=chunks(), headers={"content-type": "application/json"})
        assert chunked.status_code == 413 and error_of(chunked)["code"] == "body_too_large"
        assert ask(client).status_code == 200


def test_oversized_headers_get_431_in_the_error_shape(published: str) -> None:
    with runtime(published) as client, open_socket(str(client.base_url)) as connection:
        connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 65536 + b"\r\n\r\n")
        status, _, body = read_response(connection)
        assert status == 431 and shaped(body)["code"] == "headers_too_large", body
        assert closed_by_server(connection, within=5)
        assert client.get("/healthz").status_code == 200


def test_slow_clients_are_cut_and_cannot_hold_the_runtime(published: str) -> None:
    with runtime(published, read_timeout_seconds=1) as client:
        url = str(client.base_url)
        idle = open_socket(url)  # connects, sends nothing
        slow_head = open_socket(url)
        slow_head.sendall(b"POST /v1/query HTTP/1.1\r\nHost: t\r\n")  # and never ends its headers
        slow_body = open_socket(url)
        slow_body.sendall(
            b"POST /v1/query HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        )
        crowd = [open_socket(url) for _ in range(50)]
        for number, connection in enumerate(crowd):
            connection.sendall(f"GET /v1/info HTTP/1.1\r\nHost: t\r\nX-Slow: {number}".encode())
        # Meanwhile everyone else is served.
        assert ask(client).status_code == 200
        started = time.monotonic()
        status, _, body = read_response(slow_body)
        assert status == 408 and shaped(body)["code"] == "request_timeout", body
        for connection in (idle, slow_head, slow_body, *crowd):
            assert closed_by_server(connection, within=5)
            connection.close()
        assert time.monotonic() - started < 5
        # A client that trickles but finishes within the timeout is served.
        with open_socket(url) as patient:
            for piece in (b"GET /healthz HTTP/1.1\r\n", b"Host: t\r\n", b"\r\n"):
                patient.sendall(piece)
                time.sleep(0.2)
            assert read_response(patient)[0] == 200


# ---- item 8: the rate limit keyed on an identity the operator can trust -----------------------------


def test_changing_x_client_id_does_not_escape_the_rate_limit(published: str) -> None:
    with runtime(published, requests_per_minute_per_client=2) as client:
        assert ask(client, client_id="a").status_code == 200
        assert ask(client, client_id="b").status_code == 200
        limited = ask(client, client_id="c")  # the same peer under a third name
        assert limited.status_code == 429 and error_of(limited)["code"] == "rate_limited"
        job = client.post("/v1/jobs", json={"queries": [{"query": QUESTION}]}, headers={"X-Client-Id": "d"})
        assert job.status_code == 429, job.text


def test_the_trusted_header_set_by_the_gateway_is_the_limiter_key(published: str) -> None:
    with runtime(published, requests_per_minute_per_client=2, trusted_client_header="X-Forwarded-For") as client:

        def from_(forwarded: str, client_id: str) -> int:
            headers = {"X-Forwarded-For": forwarded, "X-Client-Id": client_id}
            return client.post("/v1/query", json={"query": QUESTION}, headers=headers).status_code

        # The gateway appends the address it saw: only the last entry is trusted, the rest is the client's.
        assert [from_("6.6.6.6, 10.0.0.1", f"x{n}") for n in range(3)] == [200, 200, 429]
        assert [from_(f"{n}.{n}.{n}.{n}, 10.0.0.2", f"y{n}") for n in range(2)] == [200, 200]
        assert from_("10.0.0.2", "z") == 429
        # Sticky assignment still follows X-Client-Id (a label, not a key): see the canary tests.


# ---- item 9: one rating per answer and rater; cached answers rateable and free ------------------


def rate(client: httpx.Client, query_id: str, rating: float, **headers: str) -> httpx.Response:
    return client.post("/v1/feedback", json={"queryId": query_id, "rating": rating}, headers=headers)


def raters(client: httpx.Client, **labels: str) -> float | None:
    found = [
        sample.value
        for family in text_string_to_metric_families(client.get("/metrics").text)
        for sample in family.samples
        if sample.name == "ragops_feedback_raters" and labels.items() <= sample.labels.items()
    ]
    return found[0] if found else None


def test_one_rating_per_answer_and_rater(published: str) -> None:
    with runtime(published, trusted_client_header="X-Real-IP") as client:
        answer = ask(client).json()
        assert rate(client, answer["queryId"], 0.0, **{"X-Real-IP": "10.1.1.1"}).status_code == 204
        # The same rater again, under any X-Client-Id: refused, and the first rating stands.
        for client_id in ("again", "and-again"):
            repeated = rate(client, answer["queryId"], 1.0, **{"X-Real-IP": "10.1.1.1", "X-Client-Id": client_id})
            assert repeated.status_code == 409 and error_of(repeated)["code"] == "already_rated"
        assert rate(client, answer["queryId"], 1.0, **{"X-Real-IP": "10.1.1.2"}).status_code == 204
        assert metric(client, "ragops_feedback_score_count", kb_version="v1", role="stable") == 2
        assert metric(client, "ragops_feedback_score_sum", kb_version="v1", role="stable") == 1.0
        assert raters(client, kb_version="v1", role="stable") == 2
        info = client.get("/v1/info").json()
        assert (info["satisfaction24h"], info["ratedAnswers24h"], info["raters24h"]) == (0.5, 1, 2)
        with psycopg.connect(published) as connection:
            stored = connection.execute(
                "SELECT rater, rating FROM ragops.answer_feedback WHERE query_id = %s ORDER BY rating",
                (answer["queryId"],),
            ).fetchall()
        # Raters are kept as digests: the log holds no client address.
        assert [rating for _, rating in stored] == [0.0, 1.0] and all("10.1.1" not in rater for rater, _ in stored)


def test_a_cached_answer_is_rateable_and_costs_nothing(published: str) -> None:
    with generating_runtime(published) as (client, fake):
        first = ask(client).json()
        assert first["mode"] == "generated" and first["costUsd"] > 0
        cached = ask(client).json()
        assert cached["mode"] == "cached" and cached["queryId"] != first["queryId"]
        assert (cached["costUsd"], cached["usage"]) == (0.0, {"inputTokens": 0, "outputTokens": 0})
        assert cached["answer"] == first["answer"] and len(fake.requests) == 1
        assert rate(client, cached["queryId"], 1.0).status_code == 204
        with psycopg.connect(published) as connection:
            logged = connection.execute(
                "SELECT mode, cost_usd, input_tokens, output_tokens FROM ragops.answer_log WHERE query_id = %s",
                (cached["queryId"],),
            ).fetchone()
        assert logged == ("cached", 0.0, 0, 0)


# ---- item 12: no server path in what clients (or the LLM) see ----------------------------------------


def test_info_citations_and_prompts_show_source_relative_ids(published: str) -> None:
    corpus = str(sample.CORPUS_DIR)
    with generating_runtime(published) as (client, fake):
        info = client.get("/v1/info")
        assert corpus not in info.text and info.json()["manifest"]["sources"] == ["corpus"]
        for stream in (False, True):
            with client.stream("POST", "/v1/query", json={"query": QUESTION, "stream": stream}) as response:
                text = response.read().decode()
            assert corpus not in text, text[:500]
        body = ask(client, "How long is the frame warranty?").json()
        assert [c["source"] for c in body["citations"]] == [c["documentId"] for c in body["citations"]]
        assert body["citations"][0]["source"] == "warranty/frame-warranty.md"
        assert fake.requests and all(corpus not in request.user_text for request in fake.requests)
        assert "source: warranty/frame-warranty.md" in fake.requests[-1].user_text
