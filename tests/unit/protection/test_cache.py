"""The answer cache: query normalization, canonical keys, TTL, LRU bound and version isolation."""

from __future__ import annotations

import math

import pytest

from ragops_runtime.protection import AnswerCache, CacheKey, make_key, normalize_query


def fullwidth(text: str) -> str:
    """`text` as East Asian keyboards type it: full-width letters, digits, punctuation and spaces."""
    return "".join("\u3000" if char == " " else chr(ord(char) + 0xFEE0) for char in text)


NORMALIZE_CASES = {
    "already normal": ("how long does charging take", "how long does charging take"),
    "case is folded": ("How Long Does CHARGING Take", "how long does charging take"),
    "casefold, not lower": ("STRASSE oder Straße", "strasse oder strasse"),
    "whitespace runs collapse and ends are trimmed": ("  how\tlong \n\n does  it\u00a0take ", "how long does it take"),
    "a trailing question mark goes": ("battery range?", "battery range"),
    "a trailing run of ?!. goes, spaces included": ("battery range ?!? . ..", "battery range"),
    "full-width forms fold before stripping": (fullwidth("BATTERY range?"), "battery range"),
    "an ellipsis character folds to dots and goes": ("battery range…", "battery range"),
    "ligatures fold": ("ﬁnancing options", "financing options"),
    "inner punctuation is kept": ("e-bike 2.5 km/h? really!", "e-bike 2.5 km/h? really"),
    "leading punctuation is kept": ("¿qué batería?", "¿qué batería"),
    "other trailing punctuation is kept": ("sizes (s, m, l)", "sizes (s, m, l)"),
    "only punctuation": (" ?!. ", ""),
    "empty": ("", ""),
}


@pytest.mark.parametrize(("query", "expected"), NORMALIZE_CASES.values(), ids=NORMALIZE_CASES.keys())
def test_normalize_query(query: str, expected: str) -> None:
    assert normalize_query(query) == expected
    # Normal form is a fixed point: normalizing a key's query again changes nothing.
    assert normalize_query(expected) == expected


def test_make_key_normalizes_the_query_and_canonicalizes_params() -> None:
    key = make_key("faq@v3", "  Battery Range? ", {"top_k": 5, "mode": "hybrid", "filters": {"b": 1, "a": [1, 2]}})
    assert key == CacheKey(
        kb_version="faq@v3",
        query="battery range",
        params='{"filters":{"a":[1,2],"b":1},"mode":"hybrid","top_k":5}',
    )
    reordered = make_key("faq@v3", "battery range", {"filters": {"a": [1, 2], "b": 1}, "top_k": 5, "mode": "hybrid"})
    assert reordered == key
    assert hash(reordered) == hash(key)


PARAMS_THAT_DIFFER = {
    "a different value": ({"top_k": 5}, {"top_k": 6}),
    "an extra parameter": ({"top_k": 5}, {"top_k": 5, "rerank": True}),
    "int and float": ({"temperature": 1}, {"temperature": 1.0}),
    "true and 1": ({"rerank": True}, {"rerank": 1}),
    "list order": ({"sources": ["a", "b"]}, {"sources": ["b", "a"]}),
}


@pytest.mark.parametrize(("first", "second"), PARAMS_THAT_DIFFER.values(), ids=PARAMS_THAT_DIFFER.keys())
def test_params_that_differ_give_different_keys(first: dict[str, object], second: dict[str, object]) -> None:
    assert make_key("faq@v1", "q", first) != make_key("faq@v1", "q", second)


def test_non_ascii_params_are_kept_readable() -> None:
    assert make_key("faq@v1", "q", {"language": "français"}).params == '{"language":"français"}'


@pytest.mark.parametrize("params", [{"threshold": math.nan}, {"threshold": math.inf}, {"sources": {"a", "b"}}])
def test_params_json_cannot_express_are_refused(params: dict[str, object]) -> None:
    with pytest.raises((ValueError, TypeError)):
        make_key("faq@v1", "q", params)


def key(query: str, version: str = "faq@v1") -> CacheKey:
    return make_key(version, query, {"top_k": 5})


TTL_CASES = {
    "fresh just after put": (0.0, "answer"),
    "fresh a moment before expiry": (59.999, "answer"),
    "expired exactly at the ttl": (60.0, None),
    "expired long after": (3600.0, None),
}


@pytest.mark.parametrize(("age", "expected"), TTL_CASES.values(), ids=TTL_CASES.keys())
def test_ttl(age: float, expected: str | None) -> None:
    cache: AnswerCache[str] = AnswerCache(ttl_seconds=60, max_entries=10)
    cache.put(key("q"), "answer", now=1000.0)
    assert cache.get(key("q"), now=1000.0 + age) == expected


def test_expired_entries_are_purged_lazily() -> None:
    cache: AnswerCache[str] = AnswerCache(ttl_seconds=10, max_entries=10)
    cache.put(key("a"), "A", now=0.0)
    cache.put(key("b"), "B", now=5.0)
    cache.put(key("c"), "C", now=8.0)
    # Nothing has looked yet: expired entries still take room.
    assert len(cache) == 3
    assert cache.get(key("a"), now=12.0) is None
    assert len(cache) == 2
    assert cache.purge_expired(now=16.0) == 1
    assert len(cache) == 1
    assert cache.get(key("c"), now=16.0) == "C"


def test_put_replaces_the_value_and_restarts_its_ttl() -> None:
    cache: AnswerCache[str] = AnswerCache(ttl_seconds=10, max_entries=10)
    cache.put(key("q"), "old", now=0.0)
    cache.put(key("q"), "new", now=8.0)
    assert len(cache) == 1
    assert cache.get(key("q"), now=15.0) == "new"
    assert cache.get(key("q"), now=18.0) is None


def test_the_least_recently_used_entry_is_evicted_at_the_bound() -> None:
    cache: AnswerCache[str] = AnswerCache(ttl_seconds=100, max_entries=2)
    cache.put(key("a"), "A", now=0.0)
    cache.put(key("b"), "B", now=1.0)
    # A hit makes "a" recent, so "b" is the one to go.
    assert cache.get(key("a"), now=2.0) == "A"
    cache.put(key("c"), "C", now=3.0)
    assert len(cache) == 2
    assert [cache.get(key(query), now=4.0) for query in "abc"] == ["A", None, "C"]


def test_many_puts_stay_within_the_bound() -> None:
    cache: AnswerCache[int] = AnswerCache(ttl_seconds=100, max_entries=50)
    for number in range(500):
        cache.put(key(f"q{number}"), number, now=0.0)
    assert len(cache) == 50
    assert cache.get(key("q449"), now=0.0) is None
    assert cache.get(key("q450"), now=0.0) == 450


def test_a_new_version_never_sees_the_previous_versions_answers() -> None:
    cache: AnswerCache[str] = AnswerCache(ttl_seconds=100, max_entries=10)
    cache.put(key("battery range?", "faq@v1"), "v1 answer", now=0.0)
    # After the switch, before drop_version has run: the same question under v2 is a miss.
    assert cache.get(key("battery range?", "faq@v2"), now=1.0) is None
    # And the same version name in another knowledge base is a different key too.
    assert cache.get(key("battery range?", "manuals@v1"), now=1.0) is None
    cache.put(key("battery range?", "faq@v2"), "v2 answer", now=2.0)
    assert cache.get(key("Battery range", "faq@v2"), now=3.0) == "v2 answer"
    assert cache.get(key("Battery range", "faq@v1"), now=3.0) == "v1 answer"


def test_drop_version_removes_exactly_that_versions_entries() -> None:
    cache: AnswerCache[str] = AnswerCache(ttl_seconds=100, max_entries=10)
    for query in ("a", "b", "c"):
        cache.put(key(query, "faq@v1"), f"v1 {query}", now=0.0)
    cache.put(key("a", "faq@v2"), "v2 a", now=0.0)
    assert cache.drop_version("faq@v1") == 3
    assert len(cache) == 1
    assert cache.get(key("a", "faq@v1"), now=1.0) is None
    assert cache.get(key("a", "faq@v2"), now=1.0) == "v2 a"
    assert cache.drop_version("faq@v1") == 0
    assert cache.drop_version("faq@v9") == 0


DISABLED_CASES = {"ttl 0": (0.0, 100), "max_entries 0": (60.0, 0), "both 0": (0.0, 0)}


@pytest.mark.parametrize(("ttl", "max_entries"), DISABLED_CASES.values(), ids=DISABLED_CASES.keys())
def test_disabled_cache_stores_nothing(ttl: float, max_entries: int) -> None:
    cache: AnswerCache[str] = AnswerCache(ttl_seconds=ttl, max_entries=max_entries)
    assert not cache.enabled
    cache.put(key("q"), "answer", now=0.0)
    assert cache.get(key("q"), now=0.0) is None
    assert len(cache) == 0


def test_enabled_cache_says_so() -> None:
    assert AnswerCache[str](ttl_seconds=0.5, max_entries=1).enabled


@pytest.mark.parametrize(("ttl", "max_entries"), [(-1.0, 10), (math.nan, 10), (60.0, -1)])
def test_cache_refuses_nonsense(ttl: float, max_entries: int) -> None:
    with pytest.raises(ValueError):
        AnswerCache[str](ttl_seconds=ttl, max_entries=max_entries)
