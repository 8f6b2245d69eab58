"""A local stand-in for a rerank service: a real HTTP server, for the HTTP reranker's tests.

It replaces a paid external API (Cohere's /v1/rerank) or an external service (a TEI, vLLM or
Infinity server), which is why the suite allows it as a double. It speaks the wire format over real
sockets on 127.0.0.1, so the production httpx client is exercised exactly as it runs; nothing in
the code under test is patched. It must stay protocol-only: no ragops imports, so a bug in the
reranker can't hide behind the same bug here.

Requests are Cohere v1 shaped: POST .../rerank with {"query", "documents", "top_n"?, "model"?}.
Documents are scored by word overlap with the query (`score_for` gives the expected value), and
the answer is Cohere shaped ({"results": [{"index", "relevance_score"}]}, best first, cut to top_n)
or TEI shaped ([{"index", "score"}] for every document, best first), as chosen at start. Every
request is recorded. `script(...)` queues replies (5xx, delays, malformed or hand-written bodies)
that the next requests receive in arrival order; with the queue empty, requests succeed. The
server, the recording and the queue are `http_double`'s, shared with the other doubles.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from tests.support import http_double

Shape = Literal["cohere", "tei"]

_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class Reply:
    """One scripted reply. The defaults are a normal success; `delay` postpones any reply.

    `body` replaces the whole body (sent with `status`); otherwise a non-200 status gets an error
    JSON, and a 200 gets the scores, worst first when `reverse` (servers need not sort).
    """

    status: int = 200
    body: bytes | None = None
    delay: float = 0.0
    reverse: bool = False

    @classmethod
    def server_error(cls, status: int = 500) -> Reply:
        return cls(status=status)

    @classmethod
    def malformed(cls) -> Reply:
        return cls(body=b'{"results": [{"index": 0, "relevance_score": 0.')

    @classmethod
    def with_json(cls, document: Any) -> Reply:
        """A 200 carrying `document` as is: for wrong types, missing fields, bad indices."""
        return cls(body=json.dumps(document).encode())

    @classmethod
    def slow(cls, seconds: float) -> Reply:
        return cls(delay=seconds)


RecordedRequest = http_double.RecordedRequest


class FakeRerankServer(http_double.HttpDouble[Reply, RecordedRequest]):
    """The server's state and controls; build it with `running_rerank_server`."""

    def __init__(self, shape: Shape) -> None:
        super().__init__("fake-rerank", _Handler, Reply, RecordedRequest)
        self.shape = shape

    @property
    def url(self) -> str:
        """The full rerank URL, as a user would configure it."""
        return f"{self._origin}/v1/rerank"

    @staticmethod
    def score_for(query: str, document: str) -> float:
        """The share of the query's distinct words (case-insensitive) that occur in the document."""
        query_words = set(_WORD.findall(query.lower()))
        if not query_words:
            return 0.0
        return len(query_words & set(_WORD.findall(document.lower()))) / len(query_words)

    def _answer(self, out: http_double.DoubleHandler, request: RecordedRequest, reply: Reply) -> None:
        out.send_body(*self._respond(reply, request))

    def _respond(self, reply: Reply, request: RecordedRequest) -> tuple[int, bytes]:
        if reply.body is not None:
            return reply.status, reply.body
        if reply.status != 200:
            return reply.status, _error_body("scripted failure")
        if not request.path.rstrip("/").endswith("/rerank"):
            return 404, _error_body(f"unknown path {request.path}")
        body = request.body
        if not isinstance(body, dict):
            return 400, _error_body("the body must be a JSON object")
        query, documents, top_n = body.get("query"), body.get("documents"), body.get("top_n")
        if not isinstance(query, str) or not isinstance(documents, list) or not documents:
            return 400, _error_body("query must be a string and documents a non-empty list")
        if not all(isinstance(document, str) for document in documents):
            return 400, _error_body("documents must be strings")
        if top_n is not None and (not isinstance(top_n, int) or top_n < 1):
            return 400, _error_body("top_n must be a positive integer")

        scored = [(index, self.score_for(query, document)) for index, document in enumerate(documents)]
        # Best first, ties in document order: what Cohere and TEI both return.
        scored.sort(key=lambda pair: (-pair[1], pair[0]))
        if self.shape == "tei":
            # TEI has no top_n: it scores every text.
            ranks: list[dict[str, Any]] = [{"index": index, "score": score} for index, score in scored]
            if reply.reverse:
                ranks.reverse()
            return 200, json.dumps(ranks).encode()
        results = [{"index": index, "relevance_score": score} for index, score in scored[: top_n or len(scored)]]
        if reply.reverse:
            results.reverse()
        document = {"id": f"rerank-{request.number}", "results": results, "meta": {"billed_units": {"search_units": 1}}}
        return 200, json.dumps(document).encode()


class _Handler(http_double.DoubleHandler):
    server_version = "fake-rerank/1"


def _error_body(message: str) -> bytes:
    return json.dumps({"message": message}).encode()


@contextmanager
def running_rerank_server(shape: Shape = "cohere") -> Iterator[FakeRerankServer]:
    """A started server answering in `shape`; stopped (handlers joined) on exit."""
    with http_double.running(FakeRerankServer(shape)) as fake:
        yield fake


def closed_port_url() -> str:
    """A rerank URL on 127.0.0.1 where nothing listens: the port was just bound and released."""
    return f"http://127.0.0.1:{http_double.free_port()}/v1/rerank"
