"""Which job failures are retried, and when: the pure policy, table-tested."""

from __future__ import annotations

import pytest

from ragops_runtime.generation.anthropic import DEFAULT_BACKOFF_SECONDS
from ragops_runtime.jobs.policy import TRANSIENT_GENERATION_REASONS, generation_failure, retry_delay


@pytest.mark.parametrize(
    ("attempt", "rand", "expected"),
    [
        (1, 0.0, 0.5),  # half the step is fixed...
        (1, 0.999, 0.9995),  # ...half is random
        (2, 0.0, 1.0),
        (3, 0.5, 3.0),  # step 4: 2 + 0.5 * 2
        (7, 0.0, 15.0),  # step 64 capped at 30
        (10_000, 1.0, 30.0),  # no overflow however many attempts
    ],
)
def test_retry_delay_doubles_with_equal_jitter_up_to_the_cap(attempt: int, rand: float, expected: float) -> None:
    assert retry_delay(attempt, base=1.0, cap=30.0, rand=lambda: rand) == pytest.approx(expected)


def test_an_upstream_backoff_is_a_floor_the_cap_does_not_shorten() -> None:
    assert retry_delay(1, base=1.0, cap=30.0, rand=lambda: 0.0, not_before=45.0) == 45.0
    assert retry_delay(6, base=1.0, cap=30.0, rand=lambda: 0.0, not_before=2.0) == 15.0


def test_attempts_count_from_one() -> None:
    with pytest.raises(ValueError, match="from 1"):
        retry_delay(0, base=1.0, cap=30.0, rand=lambda: 0.0)


@pytest.mark.parametrize(
    ("degraded_reason", "reason", "not_before"),
    [
        ("generation timeout: no complete answer from the Anthropic API within 30s", "timeout", 0.0),
        (
            "generation upstream_error: the Anthropic API refused the request: HTTP 500 api_error: boom",
            "upstream_error",
            0.0,
        ),
        ("generation connection_error: cannot reach the Anthropic API at http://x", "connection_error", 0.0),
        ("generation malformed_response: the body is not valid JSON", "malformed_response", 0.0),
        (
            "generation rate_limited: the Anthropic API is rate limiting (HTTP 429 rate_limit_error: slow); "
            "backing off for 12s",
            "rate_limited",
            12.0,
        ),
        (
            "generation overloaded: the Anthropic API is overloaded (HTTP 529 x: y); backing off for 5s",
            "overloaded",
            5.0,
        ),
        (
            "generation backing_off: the Anthropic API asked us to slow down; not calling it for another 3.5s",
            "backing_off",
            3.5,
        ),
        ("generation overloaded: an unexpected wording", "overloaded", DEFAULT_BACKOFF_SECONDS),
        # after a reranker fallback, the generation part comes last
        ("reranker timeout: kept the retrieval order; generation timeout: no answer within 1s", "timeout", 0.0),
    ],
)
def test_generation_failures_are_transient(degraded_reason: str, reason: str, not_before: float) -> None:
    failure = generation_failure(degraded_reason)
    assert failure is not None
    assert (failure.reason, failure.not_before) == (reason, not_before)
    assert failure.message.startswith(f"generation {reason}: ")


@pytest.mark.parametrize(
    "degraded_reason",
    [None, "", "reranker timeout: kept the retrieval order", "generation sideways: a reason nobody raises"],
)
def test_other_degradations_keep_their_answer(degraded_reason: str | None) -> None:
    assert generation_failure(degraded_reason) is None


def test_every_generation_reason_is_known() -> None:
    assert TRANSIENT_GENERATION_REASONS == {
        "timeout",
        "rate_limited",
        "overloaded",
        "upstream_error",
        "connection_error",
        "malformed_response",
        "backing_off",
    }
