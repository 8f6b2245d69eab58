"""The `openai` provider: POST {endpoint}/embeddings on OpenAI or any OpenAI-compatible server.

Owns the wire protocol, retries and response validation, and nothing else: no batching across
requests (see `batching`), no caching, no configuration loading. It must never put the API key in
an exception, a log line or a URL, and never return a vector whose length differs from
`dimensions` (truncating would silently mix vector spaces in one index).
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import Sequence
from typing import Any

import httpx
import pydantic

from ragops_runtime.embedding.base import EmbeddingError

_ERROR_TEXT_LIMIT = 500


class _Embedding(pydantic.BaseModel):
    index: int
    embedding: list[pydantic.FiniteFloat]


class _EmbeddingsResponse(pydantic.BaseModel):
    data: list[_Embedding]


class _Retryable(Exception):
    """A failed attempt worth repeating; `cause` says what went wrong, `retry_after` what the server asked for."""

    def __init__(self, cause: str, *, unreachable: bool = False, retry_after: float | None = None) -> None:
        super().__init__(cause)
        self.cause = cause
        self.unreachable = unreachable
        self.retry_after = retry_after


class OpenAIEmbedder:
    """Embeddings from an OpenAI-compatible `/v1/embeddings` endpoint.

    `endpoint` is the /v1 base URL (https://api.openai.com/v1, http://tei:8080/v1, ...). The
    `dimensions` request field is only sent with `send_dimensions=True`: OpenAI's text-embedding-3
    models use it to shorten vectors, but TEI, vLLM and Ollama reject requests that carry it.

    429, 5xx, connection errors and timeouts are retried up to `max_retries` times with exponential
    backoff and full jitter, or after the server's `Retry-After` on 429/503 (capped at `backoff_max`);
    any other failure raises `EmbeddingError` at once. A `client` passed in is used as is and not
    closed by `aclose()`.
    """

    provider: str = "openai"

    def __init__(
        self,
        endpoint: str,
        model: str,
        dimensions: int,
        api_key: str | None,
        *,
        timeout: float = 30.0,
        max_retries: int = 5,
        backoff_base: float = 0.5,
        backoff_max: float = 20.0,
        send_dimensions: bool = False,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        url = httpx.URL(endpoint.rstrip("/") + "/embeddings")
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(
                f"embedding endpoint must be an http(s) URL such as https://api.openai.com/v1, got {endpoint!r}"
            )
        if dimensions < 1:
            raise ValueError(f"embedding dimensions must be at least 1, got {dimensions}")
        if timeout <= 0 or max_retries < 0 or backoff_base < 0 or backoff_max < 0:
            raise ValueError("timeout must be positive; max_retries, backoff_base and backoff_max must not be negative")
        self.model = model
        self.dimensions = dimensions
        self.retries = 0
        self._url = url
        # Credentials in the URL's userinfo are as secret as the key: messages show the URL without them.
        self._display_url = str(url.copy_with(userinfo=b""))
        self._secrets = [secret for secret in (api_key, url.password) if secret]
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout = timeout
        self._max_retries = max_retries
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._send_dimensions = send_dimensions
        self._owns_client = client is None
        self._client = client if client is not None else httpx.AsyncClient()

    async def embed_batch(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            # OpenAI rejects an empty input list; there is nothing to ask for anyway.
            return []
        payload: dict[str, Any] = {"model": self.model, "input": list(texts), "encoding_format": "float"}
        if self._send_dimensions:
            payload["dimensions"] = self.dimensions

        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._attempt(payload, len(texts))
            except _Retryable as failure:
                if attempt > self._max_retries:
                    raise EmbeddingError(self._exhausted(failure, attempt)) from None
                await asyncio.sleep(self._delay(attempt, failure.retry_after))
                self.retries += 1

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def _attempt(self, payload: dict[str, Any], expected: int) -> list[list[float]]:
        try:
            response = await self._client.post(self._url, json=payload, headers=self._headers, timeout=self._timeout)
        except httpx.ConnectTimeout:
            raise _Retryable(f"no connection within {self._timeout:g}s", unreachable=True) from None
        except httpx.TimeoutException:
            raise _Retryable(f"no response within {self._timeout:g}s") from None
        except httpx.TransportError as exc:
            raise _Retryable(self._redact(_describe(exc)), unreachable=True) from None

        status = response.status_code
        if status == 429 or status >= 500:
            retry_after = _retry_after(response) if status in (429, 503) else None
            raise _Retryable(f"HTTP {status}: {self._redact(_server_message(response))}", retry_after=retry_after)
        if status != 200:
            message = self._redact(_server_message(response))
            raise EmbeddingError(f"{self._where()} refused the request: HTTP {status}: {message}")
        return self._vectors(response, expected)

    def _vectors(self, response: httpx.Response, expected: int) -> list[list[float]]:
        try:
            parsed = _EmbeddingsResponse.model_validate_json(response.content)
        except pydantic.ValidationError as exc:
            first = exc.errors()[0]
            location = ".".join(str(part) for part in first["loc"]) or "body"
            raise EmbeddingError(
                f"{self._where()} sent a malformed response: {location}: {self._redact(first['msg'])}"
            ) from None

        if len(parsed.data) != expected:
            raise EmbeddingError(f"{self._where()} returned {len(parsed.data)} embeddings for {expected} inputs")
        # Servers may answer out of order; `index` is the only link between an input and its vector.
        ordered = sorted(parsed.data, key=lambda item: item.index)
        if [item.index for item in ordered] != list(range(expected)):
            raise EmbeddingError(f"{self._where()} sent a malformed response: indices are not 0..{expected - 1}")
        for item in ordered:
            if len(item.embedding) != self.dimensions:
                raise EmbeddingError(
                    f"{self._where()}: dimension mismatch: endpoint returned {len(item.embedding)}, "
                    f"expected {self.dimensions} (set dimensions to the model's output size, or "
                    "send_dimensions=True if the model can shorten its vectors)"
                )
        return [item.embedding for item in ordered]

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            # Capped so one odd header can't stall a build for an hour; the retry budget still bounds the total.
            return min(retry_after, self._backoff_max)
        # Full jitter: concurrent batches that failed together don't come back together.
        return random.uniform(0.0, min(self._backoff_max, self._backoff_base * 2 ** (attempt - 1)))

    def _exhausted(self, failure: _Retryable, attempts: int) -> str:
        tried = f"gave up after {attempts} attempt{'s' if attempts > 1 else ''}"
        if failure.unreachable:
            return f"cannot reach embedding endpoint {self._display_url}: {failure.cause} (model {self.model}; {tried})"
        return f"{self._where()} failed: {failure.cause} ({tried})"

    def _where(self) -> str:
        return f"embedding endpoint {self._display_url} (model {self.model})"

    def _redact(self, text: str) -> str:
        # Servers echo the credentials they reject, and exception texts are not ours to vouch for: whatever
        # they say passes through here before it reaches a message. Our own text (URL shown without its
        # userinfo, model name) is left alone, so a placeholder key such as "ollama" can't mangle a host name.
        for secret in self._secrets:
            text = text.replace(secret, "[redacted]")
        return text


def _describe(exc: httpx.TransportError) -> str:
    detail = str(exc)
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


def _retry_after(response: httpx.Response) -> float | None:
    """Retry-After as seconds (delta-seconds or an HTTP date), or None when absent or unreadable."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _server_message(response: httpx.Response) -> str:
    """The error text a server sent: OpenAI's {"error": {"message"}}, TEI's {"error": "..."}, or the raw body."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return _clip(error["message"])
        if isinstance(error, str):
            return _clip(error)
        if isinstance(body.get("message"), str):
            return _clip(body["message"])
    text = response.text.strip()
    return _clip(text) if text else response.reason_phrase or "empty response"


def _clip(text: str) -> str:
    return text if len(text) <= _ERROR_TEXT_LIMIT else text[:_ERROR_TEXT_LIMIT] + "..."
