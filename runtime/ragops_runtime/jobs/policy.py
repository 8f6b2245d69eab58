"""What a job item's failure means and when to try again: pure functions, no I/O, no clock.

Transient (retried with backoff, up to the attempt limit): the answer could not be produced now
but may be later, with the same input.
- `ServiceUnavailable`, whatever its code: the database or its pool (`database_unavailable`), the
  embedding endpoint (`embedding_unavailable`), retrieval over its budget (`retrieval_timeout`),
  no active version yet (`no_active_version`), a saturated replica (`saturated`).
- A generation failure that the query path turned into a degraded, retrieval-only answer (the
  answer's typed `generation_error`): timeout, 429, 529, 5xx, connection, malformed reply, or the
  generator backing off after a 429. An interactive client gets the fallback at once;
  a job has time, so it asks again, and keeps the fallback answer only on its last attempt.

Permanent (failed at once): the input cannot be answered however often it is retried, such as a
query over the length limit, or an error the code does not know (a bug is not fixed by retrying
the same input). A reranker failure is neither: its fallback keeps the retrieval order and the
answer is generated, so that answer is kept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import get_args

from ..generation.anthropic import DEFAULT_BACKOFF_SECONDS, GenerationUnavailable, UnavailableReason

TRANSIENT_GENERATION_REASONS = frozenset(get_args(UnavailableReason))
"""Every reason `GenerationUnavailable` can carry: each is an upstream condition, none is the input's fault."""
THROTTLE_REASONS = frozenset({"rate_limited", "overloaded", "backing_off"})
"""After these the generator refuses to call the API for a while: a retry must wait at least that long."""


@dataclass(frozen=True)
class GenerationFailure:
    reason: str
    message: str
    """As the degraded reason words it, e.g. "generation timeout: no complete answer ..."."""
    not_before: float
    """Seconds a retry must wait at least: the generator's own backoff after a 429 or 529, else 0."""


def generation_failure(error: GenerationUnavailable | None) -> GenerationFailure | None:
    """What a degraded answer's generation failure means for a retry (every such failure is transient).

    For a throttle the generator says how long it backs off; when it does not, its first backoff
    step is used.
    """
    if error is None:
        return None
    not_before = 0.0
    if error.reason in THROTTLE_REASONS:
        not_before = error.retry_after if error.retry_after is not None else DEFAULT_BACKOFF_SECONDS
    return GenerationFailure(error.reason, f"generation {error.reason}: {error.detail}", not_before)


def retry_delay(attempt: int, *, base: float, cap: float, rand: Callable[[], float], not_before: float = 0.0) -> float:
    """Seconds to wait before attempt `attempt + 1`, after attempt `attempt` (from 1) failed transiently.

    Exponential (`base`, doubling per attempt, at most `cap`) with equal jitter: half the step is
    fixed, half uniformly random. The random half spreads the retries of a batch that failed
    together (one upstream outage fails every in-flight item at once); the fixed half keeps a
    retry from landing immediately, which full jitter allows. `rand` returns a float in [0, 1).
    Never less than `not_before` (an upstream's own backoff), which `cap` does not shorten.
    """
    if attempt < 1:
        raise ValueError(f"attempt counts from 1, got {attempt}")
    step = min(cap, base * 2.0 ** min(attempt - 1, 62))
    return max(not_before, step / 2 + rand() * step / 2)
