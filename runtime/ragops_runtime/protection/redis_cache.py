"""The shared answer cache: answers in Redis, so every replica of a deployment reuses every other's.

Same keys as the memory backend (knowledge-base version, normalized query, canonical parameters),
hashed under a prefix naming the deployment, so a version switch can never reach an old answer and
two deployments sharing one Redis never see each other's. Values are JSON (the caller's `encode`
and `decode`), stored with `SET ... EX ttl`: Redis expires them itself. There is no entry bound
here: size the Redis with `maxmemory` and an evicting policy (`allkeys-lru` or `volatile-ttl`);
`cache.maxEntries` applies to the memory backend only.

The cache is an optimisation, never a dependency: every Redis error or timeout (a short socket
timeout, 100 ms by default) is a miss on `get` and a skipped `put`, reported through `on_error`
and `problem`, never raised. After a failure Redis is left alone for `retry_seconds`, so an
outage costs each query nothing rather than a timeout; then the next call tries again, and hits
resume by themselves once Redis is back. This module must not decide what is cacheable or log.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from .cache import CacheKey

V = TypeVar("V")

KEY_SCHEMA = "ragops:answer:v1"
"""Bumped whenever the stored JSON changes shape, so replicas of two releases never read each other's."""


class RedisAnswerCache(Generic[V]):
    """Answers in the Redis at `url` for `ttl_seconds`, under keys prefixed by `scope`.

    `scope` names who shares the answers (namespace, deployment and knowledge base); `encode` and
    `decode` turn a value into JSON-able data and back. `on_error(operation)` is called once per
    failed Redis call ("get", "put" or "decode"); `clock` is a monotonic clock in seconds.
    """

    backend = "redis"

    def __init__(
        self,
        *,
        url: str,
        scope: str,
        ttl_seconds: int,
        encode: Callable[[V], Any],
        decode: Callable[[Any], V],
        timeout_seconds: float = 0.1,
        retry_seconds: float = 1.0,
        on_error: Callable[[str], None] = lambda operation: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl_seconds < 0:
            raise ValueError(f"ttl_seconds must be 0 (disabled) or positive, got {ttl_seconds}")
        if not math.isfinite(timeout_seconds) or timeout_seconds <= 0:
            raise ValueError(f"timeout_seconds must be positive, got {timeout_seconds}")
        self.ttl_seconds = ttl_seconds
        self.scope = scope
        self._encode = encode
        self._decode = decode
        self._retry_seconds = retry_seconds
        self._on_error = on_error
        self._clock = clock
        self._down_until = -math.inf
        self._problem: str | None = None
        # No retries inside the client: a retry would multiply the timeout a query waits for.
        self._client: redis.Redis = redis.Redis.from_url(
            url,
            socket_timeout=timeout_seconds,
            socket_connect_timeout=timeout_seconds,
            retry=Retry(NoBackoff(), 0),
            retry_on_timeout=False,
        )

    @property
    def enabled(self) -> bool:
        return self.ttl_seconds > 0

    @property
    def problem(self) -> str | None:
        """Why the last Redis call failed, until one succeeds (None while Redis answers)."""
        return self._problem

    def key(self, key: CacheKey) -> str:
        """The Redis key of `key`: readable scope and version, then a digest of query and parameters."""
        digest = hashlib.sha256(json.dumps([key.query, key.params], ensure_ascii=False).encode()).hexdigest()
        return f"{KEY_SCHEMA}:{self.scope}:{key.kb_version}:{digest}"

    async def get(self, key: CacheKey) -> V | None:
        if not self.enabled or self._resting():
            return None
        try:
            raw = await self._client.get(self.key(key))
        except (RedisError, OSError) as error:
            self._failed("get", error)
            return None
        self._problem = None
        if raw is None:
            return None
        try:
            return self._decode(json.loads(raw))
        except (ValueError, TypeError, KeyError) as error:
            # An entry this release cannot read is a miss; the next put replaces it.
            self._on_error("decode")
            self._problem = f"unreadable cache entry: {type(error).__name__}"
            return None

    async def put(self, key: CacheKey, value: V) -> None:
        if not self.enabled or self._resting():
            return
        payload = json.dumps(self._encode(value), ensure_ascii=False, allow_nan=False)
        try:
            await self._client.set(self.key(key), payload, ex=self.ttl_seconds)
        except (RedisError, OSError) as error:
            self._failed("put", error)
            return
        self._problem = None

    async def drop_version(self, kb_version: str) -> int:
        """Nothing to do: keys carry the version, so old answers are unreachable and expire by TTL.

        Deleting them would take a SCAN over the shared keyspace from every replica at once.
        """
        return 0

    async def aclose(self) -> None:
        await self._client.aclose()

    def _resting(self) -> bool:
        return self._clock() < self._down_until

    def _failed(self, operation: str, error: BaseException) -> None:
        self._on_error(operation)
        detail = str(error).strip().splitlines()
        self._problem = f"redis {operation} failed: {type(error).__name__}" + (f": {detail[0]}" if detail else "")
        self._down_until = self._clock() + self._retry_seconds
