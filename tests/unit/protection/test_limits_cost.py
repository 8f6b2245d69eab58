"""A request that costs several tokens (a batch job, one per query) is admitted whole or refused whole."""

from __future__ import annotations

import pytest

from ragops_runtime.protection.limits import TokenBucketLimiter


def test_a_batch_takes_one_token_per_query() -> None:
    limiter = TokenBucketLimiter(requests_per_minute=60)  # one token a second, 60 at most
    assert limiter.check("c", 0.0, cost=50).allowed
    assert limiter.check("c", 0.0, cost=10).allowed
    assert not limiter.check("c", 0.0).allowed


def test_a_refused_batch_takes_nothing_and_waits_for_all_its_tokens() -> None:
    limiter = TokenBucketLimiter(requests_per_minute=60)
    assert limiter.check("c", 0.0, cost=58).allowed
    refused = limiter.check("c", 0.0, cost=5)
    assert not refused.allowed and refused.retry_after_seconds == pytest.approx(3.0)
    assert limiter.check("c", 0.0, cost=2).allowed  # the refusal took none of the 2 left
    assert limiter.check("c", 5.0, cost=5).allowed  # and 5 s later 5 are back


@pytest.mark.parametrize("cost", [0, -1, 61])
def test_a_cost_the_bucket_can_never_hold_is_a_caller_bug(cost: int) -> None:
    with pytest.raises(ValueError, match="capacity 60"):
        TokenBucketLimiter(requests_per_minute=60).check("c", 0.0, cost=cost)
