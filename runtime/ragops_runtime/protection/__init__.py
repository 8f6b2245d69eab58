"""Protection of the query path: rate and concurrency limits, and the answer cache.

Pure bookkeeping with the clock passed in; the API layer turns verdicts into HTTP answers.
"""

from __future__ import annotations

from ragops_runtime.protection.cache import (
    AnswerCache,
    AnswerCacheBackend,
    CacheKey,
    MemoryAnswerCache,
    make_key,
    normalize_query,
)
from ragops_runtime.protection.limits import ConcurrencyLimiter, RateDecision, Saturated, TokenBucketLimiter

__all__ = [
    "AnswerCache",
    "AnswerCacheBackend",
    "CacheKey",
    "ConcurrencyLimiter",
    "MemoryAnswerCache",
    "RateDecision",
    "Saturated",
    "TokenBucketLimiter",
    "make_key",
    "normalize_query",
]
