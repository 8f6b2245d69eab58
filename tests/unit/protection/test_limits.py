"""The token bucket and the concurrency limiter: table tests with the clock passed in."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from ragops_runtime.protection import ConcurrencyLimiter, RateDecision, Saturated, TokenBucketLimiter


@dataclass(frozen=True)
class Step:
    now: float
    allowed: bool
    retry_after: float = 0.0
    client: str = "alice"


BUCKET_CASES = {
    "burst defaults to requests_per_minute, refill is rpm/60 per second": (
        3,
        None,
        [Step(0, True), Step(0, True), Step(0, True), Step(0, False, 20.0), Step(20, True), Step(20, False, 20.0)],
    ),
    "an explicit burst caps the bucket": (
        60,
        2,
        [Step(0, True), Step(0, True), Step(0, False, 1.0), Step(0.5, False, 0.5), Step(1, True), Step(1, False, 1.0)],
    ),
    "a long idle refills to the burst, not beyond": (
        60,
        2,
        [Step(0, True), Step(0, True), Step(100, True), Step(100, True), Step(100, False, 1.0)],
    ),
    "a refused request takes no token": (
        60,
        1,
        [Step(0, True), Step(0.25, False, 0.75), Step(0.5, False, 0.5), Step(0.75, False, 0.25), Step(1, True)],
    ),
    "retry_after is rounded up to milliseconds": (
        7,
        1,
        # One token takes 60/7 = 8.5714... s; 0.0004 s short at 8.571.
        [Step(0, True), Step(0, False, 8.572), Step(8.571, False, 0.001), Step(8.572, True)],
    ),
    "a fractional bucket waits only for the missing part": (
        30,
        2,
        [Step(0, True), Step(0, True), Step(0.5, False, 1.5), Step(2, True)],
    ),
    "a clock stepping back neither refills nor drains": (
        60,
        1,
        [Step(10, True), Step(5, False, 1.0), Step(10.5, False, 0.5), Step(11, True)],
    ),
    "clients have independent buckets": (
        60,
        1,
        [Step(0, True), Step(0, False, 1.0), Step(0, True, client="bob"), Step(0, False, 1.0, client="bob")],
    ),
}


@pytest.mark.parametrize(("rpm", "burst", "steps"), BUCKET_CASES.values(), ids=BUCKET_CASES.keys())
def test_token_bucket(rpm: int, burst: int | None, steps: list[Step]) -> None:
    limiter = TokenBucketLimiter(requests_per_minute=rpm, burst=burst)
    decisions = [limiter.check(step.client, step.now) for step in steps]
    assert decisions == [RateDecision(step.allowed, step.retry_after) for step in steps]


@pytest.mark.parametrize("rpm", [1, 7, 13, 60, 97, 600, 6000])
def test_retrying_after_retry_after_is_allowed(rpm: int) -> None:
    limiter = TokenBucketLimiter(requests_per_minute=rpm, burst=1)
    assert limiter.check("c", 3.3).allowed
    now = 3.3
    for _ in range(5):
        # Probe at an odd moment inside the wait, then exactly when told.
        refused = limiter.check("c", now + 0.0007)
        assert not refused.allowed and refused.retry_after_seconds > 0
        now = now + 0.0007 + refused.retry_after_seconds
        assert limiter.check("c", now).allowed


EVICTION_CASES = {
    # c pushes out a (seen least recently), so a comes back full; c is still remembered, and empty.
    "the least recently seen client is forgotten first": (["a", "b", "c", "a", "c"], [True, True, True, True, False]),
    # a's refused check is a use: c pushes out b instead, so a stays empty and b comes back full.
    "a check counts as use": (["a", "b", "a", "c", "a", "b"], [True, True, False, True, False, True]),
}


@pytest.mark.parametrize(("order", "allowed"), EVICTION_CASES.values(), ids=EVICTION_CASES.keys())
def test_memory_is_bounded_by_max_clients(order: list[str], allowed: list[bool]) -> None:
    # One token per minute, all at one moment: a client is allowed again only if its bucket was forgotten.
    limiter = TokenBucketLimiter(requests_per_minute=1, burst=1, max_clients=2)
    assert [limiter.check(client, 0.0).allowed for client in order] == allowed
    assert len(limiter) == 2


def test_many_clients_stay_within_the_bound() -> None:
    limiter = TokenBucketLimiter(requests_per_minute=60, max_clients=100)
    for number in range(1000):
        assert limiter.check(f"client-{number}", float(number)).allowed
    assert len(limiter) == 100


@pytest.mark.parametrize(
    "arguments",
    [
        {"requests_per_minute": 0},
        {"requests_per_minute": 10, "burst": 0},
        {"requests_per_minute": 10, "max_clients": 0},
    ],
)
def test_token_bucket_refuses_nonsense(arguments: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        TokenBucketLimiter(**arguments)


def test_concurrency_limiter_counts_and_never_exceeds_the_limit() -> None:
    limiter = ConcurrencyLimiter(2)
    assert [limiter.try_acquire() for _ in range(3)] == [True, True, False]
    assert limiter.in_flight == 2
    limiter.release()
    assert limiter.in_flight == 1
    assert limiter.try_acquire()
    assert not limiter.try_acquire()
    limiter.release()
    limiter.release()
    assert limiter.in_flight == 0
    with pytest.raises(RuntimeError, match="no slot in use"):
        limiter.release()
    assert limiter.in_flight == 0


def test_concurrency_limit_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ConcurrencyLimiter(0)


async def test_slot_refuses_at_once_when_saturated_and_frees_on_exit() -> None:
    limiter = ConcurrencyLimiter(2)
    holding = asyncio.Event()
    finish = asyncio.Event()
    entered = 0

    async def hold() -> None:
        nonlocal entered
        async with limiter.slot():
            entered += 1
            if entered == 2:
                holding.set()
            await finish.wait()

    holders = [asyncio.create_task(hold()) for _ in range(2)]
    await holding.wait()
    assert limiter.in_flight == 2

    # No waiting for a slot: the third request fails immediately.
    with pytest.raises(Saturated) as refused:
        async with asyncio.timeout(0.5):
            async with limiter.slot():
                pytest.fail("a third slot was granted")
    assert refused.value.limit == 2
    assert limiter.in_flight == 2

    finish.set()
    await asyncio.gather(*holders)
    assert limiter.in_flight == 0


async def test_slot_is_released_when_the_body_raises() -> None:
    limiter = ConcurrencyLimiter(1)
    with pytest.raises(KeyError):
        async with limiter.slot():
            assert limiter.in_flight == 1
            raise KeyError("boom")
    assert limiter.in_flight == 0
    async with limiter.slot():
        assert limiter.in_flight == 1
