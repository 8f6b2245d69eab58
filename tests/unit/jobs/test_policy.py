"""Which job failures are retried, and when: the pure policy, table-tested."""

from __future__ import annotations

import pytest

from ragops_runtime.generation.anthropic import DEFAULT_BACKOFF_SECONDS, GenerationUnavailable
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
    ("error", "reason", "not_before"),
    [
        (GenerationUnavailable("timeout", "no complete answer from the Anthropic API within 30s"), "timeout", 0.0),
        (
            GenerationUnavailable("upstream_error", "the Anthropic API refused the request: HTTP 500 api_error: boom"),
            "upstream_error",
            0.0,
        ),
        (
            GenerationUnavailable("connection_error", "cannot reach the Anthropic API at http://x"),
            "connection_error",
            0.0,
        ),
        (GenerationUnavailable("malformed_response", "the body is not valid JSON"), "malformed_response", 0.0),
        (
            GenerationUnavailable("rate_limited", "rate limiting (HTTP 429); backing off for 12s", retry_after=12.0),
            "rate_limited",
            12.0,
        ),
        (GenerationUnavailable("overloaded", "overloaded (HTTP 529 x: y)", retry_after=5.0), "overloaded", 5.0),
        (
            GenerationUnavailable("backing_off", "not calling it for another 3.5s", retry_after=3.5),
            "backing_off",
            3.5,
        ),
        # a throttle that does not say how long: the generator's first backoff step
        (GenerationUnavailable("overloaded", "an unexpected wording"), "overloaded", DEFAULT_BACKOFF_SECONDS),
    ],
)
def test_generation_failures_are_transient(error: GenerationUnavailable, reason: str, not_before: float) -> None:
    failure = generation_failure(error)
    assert failure is not None
    assert (failure.reason, failure.not_before) == (reason, not_before)
    assert failure.message.startswith(f"generation {reason}: ")


def test_an_answer_without_a_generation_failure_keeps_its_answer() -> None:
    # A reranker fallback degrades the answer too, but it has no generation error: the answer is kept.
    assert generation_failure(None) is None


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
