"""The answer cache: an LRU map with a time-to-live, keyed by knowledge-base version, query and parameters.

Every key carries the version that produced the answer, so once the active version changes no
lookup can reach an answer from the old one, even before `drop_version` frees its entries. This
module must not read the clock (callers pass `now`, a monotonic reading in seconds, or a clock to
`MemoryAnswerCache`), copy or inspect the cached values (store immutable ones), or decide what is
worth caching.

`AnswerCacheBackend` is the one interface the query service uses; `MemoryAnswerCache` (one LRU per
replica, the default) and `RedisAnswerCache` (redis_cache.py, shared by every replica) implement it.

No lock: the runtime calls it from one asyncio event loop and no method of `AnswerCache` awaits.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

V = TypeVar("V")

_TRAILING_PUNCTUATION = re.compile(r"[?!.\s]+\Z")


def normalize_query(query: str) -> str:
    """The form of a query used in cache keys: questions that differ only in presentation share a key.

    - NFKC folds compatibility forms (full-width letters and question marks, ligatures, "…" into
      "..."), and a second NFKC after casefolding restores normal form where casefolding breaks it.
    - casefold, not lower: "Straße" and "STRASSE" mean the same question.
    - runs of whitespace (any Unicode whitespace, newlines included) become one space; ends trimmed.
    - trailing runs of "?", "!" and "." are dropped: "Range?" and "range" are one question.

    Everything else is kept: inner punctuation carries meaning ("e-bike", "2.5", "c++"), and so does
    word order. A query of nothing but punctuation normalizes to "".
    """
    text = unicodedata.normalize("NFKC", query)
    text = unicodedata.normalize("NFKC", text.casefold())
    text = " ".join(text.split())
    return _TRAILING_PUNCTUATION.sub("", text)


@dataclass(frozen=True)
class CacheKey:
    """What an answer depends on.

    `kb_version` must identify the knowledge base and its version together (two knowledge bases
    can both have a "v1"); `params` is the canonical JSON of the request parameters that change
    the answer (top_k, mode, model ...), never of those that don't (request ids, client names).
    """

    kb_version: str
    query: str
    params: str


def make_key(kb_version: str, query: str, params: Mapping[str, object]) -> CacheKey:
    """A key from the normalized query and the canonical JSON of `params`.

    Canonical means sorted keys at every level, no insignificant whitespace and no ASCII escaping,
    so equal mappings give equal strings. JSON keeps types apart: 1 and 1.0 (and True) give different
    keys, so pass values already validated into their types. Values JSON can't express (NaN, sets,
    objects) raise, rather than being stringified into keys that collide or never match.
    """
    canonical = json.dumps(dict(params), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return CacheKey(kb_version=kb_version, query=normalize_query(query), params=canonical)


class AnswerCache(Generic[V]):
    """At most `max_entries` answers, each served for `ttl_seconds` after it was stored.

    When full, the entry used least recently is evicted. An expired entry is never returned; it is
    removed when a lookup finds it or when it is the least recently used, so `len()` may count
    expired entries that nothing has touched yet (`purge_expired` removes them all at once).
    `ttl_seconds == 0` or `max_entries == 0` disables the cache: nothing is stored, every lookup misses.
    """

    def __init__(self, *, ttl_seconds: float, max_entries: int) -> None:
        if math.isnan(ttl_seconds) or ttl_seconds < 0:
            raise ValueError(f"ttl_seconds must be 0 (disabled) or positive, got {ttl_seconds}")
        if max_entries < 0:
            raise ValueError(f"max_entries must be 0 (disabled) or positive, got {max_entries}")
        self.ttl_seconds = ttl_seconds
        self.max_entries = max_entries
        # key -> (expiry time, value); order is recency of use, oldest first.
        self._entries: OrderedDict[CacheKey, tuple[float, V]] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.ttl_seconds > 0 and self.max_entries > 0

    def get(self, key: CacheKey, now: float) -> V | None:
        """The value stored under `key` if it has not expired at `now`; a hit makes it most recently used."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires_at, value = entry
        if now >= expires_at:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    def put(self, key: CacheKey, value: V, now: float) -> None:
        """Stores `value` until `now + ttl_seconds`, replacing any value under `key`."""
        if not self.enabled:
            return
        self._entries[key] = (now + self.ttl_seconds, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def drop_version(self, kb_version: str) -> int:
        """Removes every entry of `kb_version` and returns how many there were.

        A scan over all entries: it runs once per version switch, and the cache is bounded.
        """
        stale = [key for key in self._entries if key.kb_version == kb_version]
        for key in stale:
            del self._entries[key]
        return len(stale)

    def purge_expired(self, now: float) -> int:
        """Removes every entry expired at `now` and returns how many there were."""
        expired = [key for key, (expires_at, _) in self._entries.items() if now >= expires_at]
        for key in expired:
            del self._entries[key]
        return len(expired)

    def __len__(self) -> int:
        return len(self._entries)


class AnswerCacheBackend(Protocol[V]):
    """What the query service needs from an answer cache, whichever backend holds the answers.

    A backend never raises for its own failures: an unreachable store is a miss on `get` and a
    no-op on `put`, and `problem` says what is wrong until it works again.
    """

    @property
    def backend(self) -> str: ...

    @property
    def enabled(self) -> bool: ...

    @property
    def problem(self) -> str | None: ...

    async def get(self, key: CacheKey) -> V | None: ...

    async def put(self, key: CacheKey, value: V) -> None: ...

    async def drop_version(self, kb_version: str) -> int: ...

    async def aclose(self) -> None: ...


class MemoryAnswerCache(Generic[V]):
    """The per-replica backend: an `AnswerCache` read at `clock()` (a monotonic clock in seconds)."""

    backend = "memory"
    problem: str | None = None

    def __init__(self, cache: AnswerCache[V], clock: Callable[[], float]) -> None:
        self.cache = cache
        self._clock = clock

    @property
    def enabled(self) -> bool:
        return self.cache.enabled

    async def get(self, key: CacheKey) -> V | None:
        return self.cache.get(key, self._clock())

    async def put(self, key: CacheKey, value: V) -> None:
        self.cache.put(key, value, self._clock())

    async def drop_version(self, kb_version: str) -> int:
        return self.cache.drop_version(kb_version)

    async def aclose(self) -> None:
        return None
