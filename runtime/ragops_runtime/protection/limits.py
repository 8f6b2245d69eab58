"""Admission control for the query path: a per-client token bucket and a bound on requests in flight.

Both limiters are pure bookkeeping: the caller passes `now` (a monotonic clock reading, in seconds)
and maps a refusal to its HTTP answer (429 with Retry-After, 503). This module must not read the
clock, sleep, wait for capacity or know about HTTP.

Neither limiter takes a lock. The runtime serves every request on one asyncio event loop, and no
method here awaits, so each call runs to completion before another starts. Calling them from
several threads would need a lock around every method.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

_RETRY_AFTER_RESOLUTION = 1000
"""retry_after is rounded up to milliseconds: finer is noise, and rounding up keeps it a promise."""

_TOKEN_EPSILON = 1e-9
"""Refill arithmetic in floats can land a hair below a whole token at the promised retry time."""


@dataclass(frozen=True)
class RateDecision:
    """The verdict on one request: allowed, or refused with the wait until a retry would be allowed."""

    allowed: bool
    retry_after_seconds: float
    """0 when allowed; otherwise the time until one token is available, rounded up to milliseconds."""


class TokenBucketLimiter:
    """A token bucket per client: `burst` tokens at most, refilled at `requests_per_minute / 60` per second.

    A new client starts with a full bucket. Each allowed request takes one token; a refused one takes
    nothing, so a client that keeps retrying early is not punished beyond the wait it was told.

    Memory is bounded: at most `max_clients` buckets are kept, and the client seen least recently is
    forgotten first. A forgotten client comes back with a full bucket, which is the state its bucket
    reaches anyway after `burst / rate` seconds idle (a minute with the default burst). Eviction only
    hands out extra tokens when more than `max_clients` distinct clients arrive within that window;
    that is a flood of identities no per-client limit can hold, and the concurrency limit is what
    protects the runtime then.
    """

    def __init__(self, *, requests_per_minute: int, burst: int | None = None, max_clients: int = 100_000) -> None:
        if requests_per_minute < 1:
            raise ValueError(f"requests_per_minute must be at least 1, got {requests_per_minute}")
        if burst is not None and burst < 1:
            raise ValueError(f"burst must be at least 1, got {burst}")
        if max_clients < 1:
            raise ValueError(f"max_clients must be at least 1, got {max_clients}")
        self.requests_per_minute = requests_per_minute
        self.capacity = burst if burst is not None else requests_per_minute
        self.max_clients = max_clients
        self._rate = requests_per_minute / 60.0
        # client -> (tokens, time of the last update); order is recency of use, oldest first.
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def check(self, client_id: str, now: float, cost: int = 1) -> RateDecision:
        """Decides on one request from `client_id` at `now`, taking `cost` tokens when it is allowed.

        All or nothing: a request costing more tokens than the bucket holds takes none, and
        retry_after is the wait until the bucket holds `cost` tokens (a batch of queries is admitted
        whole or refused whole). A cost above `capacity` could never be admitted and raises.
        """
        if not 1 <= cost <= self.capacity:
            raise ValueError(f"cost must be between 1 and the bucket capacity {self.capacity}, got {cost}")
        bucket = self._buckets.pop(client_id, None)
        if bucket is None:
            tokens, updated = float(self.capacity), now
        else:
            tokens, updated = bucket
            # A clock that steps back must not drain the bucket: no refill, and keep the later time.
            elapsed = max(0.0, now - updated)
            tokens = min(float(self.capacity), tokens + elapsed * self._rate)
            updated = max(updated, now)

        if tokens >= cost - _TOKEN_EPSILON:
            decision = RateDecision(allowed=True, retry_after_seconds=0.0)
            tokens -= cost
        else:
            wait = (cost - tokens) / self._rate
            decision = RateDecision(
                allowed=False,
                retry_after_seconds=math.ceil(wait * _RETRY_AFTER_RESOLUTION) / _RETRY_AFTER_RESOLUTION,
            )

        self._buckets[client_id] = (tokens, updated)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return decision

    def __len__(self) -> int:
        """The number of clients whose bucket is remembered."""
        return len(self._buckets)


class Saturated(Exception):
    """Every slot is taken; the request should be answered 503 at once rather than queued."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"all {limit} request slots are in use")
        self.limit = limit


class ConcurrencyLimiter:
    """At most `limit` requests in flight; a request over the limit is refused, never queued.

    A saturated runtime that queues only turns overload into timeouts for everyone: answering 503
    immediately lets the client retry elsewhere and keeps latency honest for the admitted requests.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"concurrency limit must be at least 1, got {limit}")
        self.limit = limit
        self._in_flight = 0

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def try_acquire(self) -> bool:
        """Takes a slot if one is free; never waits."""
        if self._in_flight >= self.limit:
            return False
        self._in_flight += 1
        return True

    def release(self) -> None:
        """Returns a slot taken by `try_acquire`."""
        if self._in_flight == 0:
            # A release without an acquire would let the limit drift upwards unnoticed.
            raise RuntimeError("release() called with no slot in use")
        self._in_flight -= 1

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Holds a slot for the body of `async with`; raises `Saturated` on entry when none is free.

        For a streamed response the slot must be held until the stream ends, not until the handler returns.
        """
        if not self.try_acquire():
            raise Saturated(self.limit)
        try:
            yield
        finally:
            self.release()
