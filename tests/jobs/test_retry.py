"""Backoff: exponential, full jitter, capped, Retry-After as a floor."""

from __future__ import annotations

import random

from levqor.jobs.retry import backoff_s
from levqor.workflows.definition import Retry

POLICY = Retry(max_attempts=10, backoff_s=2, max_backoff_s=60)


def test_ceiling_doubles_each_attempt() -> None:
    draw = random.Random(7)
    for attempt, ceiling in [(1, 2), (2, 4), (3, 8), (4, 16)]:
        delays = [backoff_s(attempt, POLICY, draw=draw) for _ in range(500)]
        assert min(delays) >= 0
        assert max(delays) <= ceiling
        assert max(delays) > ceiling * 0.9  # the whole range is used: full jitter


def test_ceiling_is_capped() -> None:
    draw = random.Random(7)
    assert max(backoff_s(20, POLICY, draw=draw) for _ in range(500)) <= 60


def test_retry_after_is_a_floor() -> None:
    draw = random.Random(7)
    assert all(backoff_s(1, POLICY, retry_after_s=30, draw=draw) >= 30 for _ in range(100))
    assert backoff_s(1, POLICY, retry_after_s=0, draw=draw) <= 2
