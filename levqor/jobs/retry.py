"""When to try a failed step again: exponential backoff with full jitter, capped.

Full jitter (a uniform draw in [0, base * 2^(n-1)]) spreads the retries of many jobs that
failed together, so a recovering service is not hit by all of them at once. A service's
own Retry-After is a floor.
"""

from __future__ import annotations

import random

from levqor.workflows.definition import Retry


def backoff_s(
    attempt: int,
    policy: Retry,
    *,
    retry_after_s: float | None = None,
    draw: random.Random | None = None,
) -> float:
    """Seconds to wait after the `attempt`-th failed try (1-based)."""
    ceiling = min(policy.max_backoff_s, policy.backoff_s * 2 ** (attempt - 1))
    delay = (draw or random).uniform(0, ceiling)
    if retry_after_s is not None:
        delay = max(delay, retry_after_s)
    return delay
