"""Probe pacing: a fixed grid at the plan's rate, and no burst after a stall."""

from __future__ import annotations

from itertools import pairwise

from ragops_runtime.rollout.probes import next_probe_at


def schedule(per_minute: float, durations: list[float], start: float = 100.0) -> list[float]:
    """Send times of a runner whose probes take `durations` seconds, one after the other."""
    now, due, sent = start, None, []
    for duration in durations:
        due = next_probe_at(due, now, per_minute)
        now = max(now, due)
        sent.append(now)
        now += duration
    return sent


def test_fast_probes_follow_the_rate_exactly() -> None:
    sent = schedule(60, [0.05] * 120)
    assert sent[0] == 100.0
    assert sum(1 for at in sent if at < 160.0) == 60  # 60 a minute, not one more
    gaps = [b - a for a, b in pairwise(sent)]
    assert all(abs(gap - 1.0) < 1e-9 for gap in gaps)


def test_high_rates_keep_their_grid_without_drift() -> None:
    sent = schedule(6000, [0.001] * 1000)
    assert abs(sent[-1] - sent[0] - 999 * 0.01) < 1e-6


def test_a_stall_is_not_caught_up_with_a_burst() -> None:
    durations = [0.01] * 5 + [3.5] + [0.01] * 5
    sent = schedule(60, durations)
    # The slow probe started at 105 and ended at 108.5: the next one goes at once, then a second apart.
    assert sent[6] == 108.5
    gaps = [b - a for a, b in pairwise(sent[6:])]
    assert all(abs(gap - 1.0) < 1e-9 for gap in gaps)


def test_probes_slower_than_the_rate_run_back_to_back_never_in_parallel() -> None:
    sent = schedule(120, [0.8] * 10)  # due every 0.5 s, each takes 0.8 s
    gaps = [b - a for a, b in pairwise(sent)]
    assert all(abs(gap - 0.8) < 1e-9 for gap in gaps)
