"""The HTTP reranker: reorders retrieved chunks with a cross-encoder behind a Cohere-style /rerank endpoint.

Owns the wire protocol and the response's validation, and nothing else. Requests are Cohere v1
shaped (`{"query", "documents", "top_n", "model"?}`), which Cohere, vLLM and Infinity accept;
answers are read in Cohere's shape (`{"results": [{"index", "relevance_score"}]}`) or TEI's
(`[{"index", "score"}]`). Any failure raises `RerankUnavailable` and is never retried: reranking
sits on the query's critical path, and the caller's fallback (the retrieval order, answer marked
degraded) beats a second wait. This module must not fall back itself, retry, log, or put the API
key in an exception.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Literal

import httpx

from ragops_runtime.store import RetrievedChunk

UnavailableReason = Literal["timeout", "unreachable", "http_status", "malformed"]


class RerankUnavailable(Exception):
    """The reranker gave no usable answer; the caller keeps the retrieval order.

    `reason` is one of a closed set ("timeout", "unreachable", "http_status", "malformed"), fit for
    a metric label; the message says what happened, for logs.
    """

    def __init__(self, reason: UnavailableReason, message: str) -> None:
        super().__init__(message)
        self.reason: UnavailableReason = reason


class _Malformed(Exception):
    pass


class HttpReranker:
    """Reranking by POST to `endpoint`, the full URL of the rerank route (https://api.cohere.com/v1/rerank).

    `timeout_ms` bounds the whole call (connecting, sending, waiting, reading), not each phase. A
    `client` passed in is used as is and not closed by `aclose()`. `api_key`, when set, is sent as a
    bearer token (Cohere needs one; a TEI or vLLM in the cluster usually doesn't).
    """

    def __init__(
        self,
        *,
        endpoint: str,
        model: str | None,
        timeout_ms: int,
        client: httpx.AsyncClient | None = None,
        api_key: str | None = None,
    ) -> None:
        url = httpx.URL(endpoint)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(
                f"rerank endpoint must be an http(s) URL such as https://api.cohere.com/v1/rerank, got {endpoint!r}"
            )
        if timeout_ms < 1:
            raise ValueError(f"rerank timeout_ms must be at least 1, got {timeout_ms}")
        self.model = model
        self.timeout_ms = timeout_ms
        self._url = url
        # Credentials in the URL's userinfo are secret: messages show the URL without them.
        self._display_url = str(url.copy_with(userinfo=b""))
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._owns_client = client is None
        self._client = client if client is not None else httpx.AsyncClient()

    async def rerank(self, query: str, chunks: Sequence[RetrievedChunk], top_n: int) -> list[RetrievedChunk]:
        """The best `top_n` of `chunks` for `query`, best first, each `score` replaced by its relevance score.

        Ties keep the retrieval order. Raises `RerankUnavailable` on a timeout, a connection error,
        a non-200 status or a response that does not score exactly some of the documents sent.
        """
        if top_n < 1:
            raise ValueError(f"top_n must be at least 1, got {top_n}")
        if not chunks:
            return []
        payload: dict[str, Any] = {
            "query": query,
            "documents": [chunk.text for chunk in chunks],
            # Cohere rejects a top_n above the number of documents on some models; asking for more is pointless.
            "top_n": min(top_n, len(chunks)),
        }
        if self.model is not None:
            payload["model"] = self.model

        seconds = self.timeout_ms / 1000
        try:
            # httpx's timeout applies per phase; asyncio.timeout holds the whole call to the budget.
            async with asyncio.timeout(seconds):
                response = await self._client.post(self._url, json=payload, headers=self._headers, timeout=seconds)
        except (TimeoutError, httpx.TimeoutException):
            raise RerankUnavailable("timeout", f"{self._where()} gave no answer within {self.timeout_ms} ms") from None
        except httpx.TransportError as exc:
            raise RerankUnavailable("unreachable", f"cannot reach {self._where()}: {type(exc).__name__}") from None

        if response.status_code != 200:
            # The body is left out: servers echo rejected credentials, and the status says enough to act on.
            raise RerankUnavailable("http_status", f"{self._where()} answered HTTP {response.status_code}")
        try:
            scores = _scores(response.content, len(chunks))
        except _Malformed as exc:
            raise RerankUnavailable("malformed", f"{self._where()} sent a malformed response: {exc}") from None

        order = sorted(scores, key=lambda index: (-scores[index], index))
        return [replace(chunks[index], score=scores[index]) for index in order[:top_n]]

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    def _where(self) -> str:
        model = f" (model {self.model})" if self.model is not None else ""
        return f"rerank endpoint {self._display_url}{model}"


def _scores(content: bytes, count: int) -> dict[int, float]:
    """Document index -> relevance score, from a Cohere or a TEI response about `count` documents."""
    try:
        document = json.loads(content)
    except ValueError:
        raise _Malformed("the body is not JSON") from None
    if isinstance(document, dict) and isinstance(document.get("results"), list):
        items, score_field = document["results"], "relevance_score"
    elif isinstance(document, list):
        items, score_field = document, "score"
    else:
        raise _Malformed('expected {"results": [...]} (Cohere) or a list of {"index", "score"} (TEI)')
    if not items:
        # An empty ranking would drop every chunk from the answer; the retrieval order is better.
        raise _Malformed("no results")

    scores: dict[int, float] = {}
    for position, item in enumerate(items):
        if not isinstance(item, dict):
            raise _Malformed(f"result {position} is not an object")
        index, score = item.get("index"), item.get(score_field)
        # bool is an int subclass, and JSON true is no index.
        if not isinstance(index, int) or isinstance(index, bool):
            raise _Malformed(f"result {position}: index is not an integer")
        if not 0 <= index < count:
            raise _Malformed(f"result {position}: index {index} is outside 0..{count - 1}")
        if index in scores:
            raise _Malformed(f"result {position}: index {index} appears twice")
        if not isinstance(score, int | float) or isinstance(score, bool) or not math.isfinite(score):
            raise _Malformed(f"result {position}: {score_field} is not a finite number")
        scores[index] = float(score)
    return scores
