"""Work the scheduler does on its ticks, at most so often."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

TickTask = Callable[[], Awaitable[object]]


def at_most_every(every_s: float, task: TickTask) -> TickTask:
    """`task`, run on a tick only when `every_s` have passed since its last run in this
    process (the first tick runs it). A failed run waits its interval like a good one."""
    due = 0.0

    async def throttled() -> object:
        nonlocal due
        if time.monotonic() < due:
            return None
        due = time.monotonic() + every_s
        return await task()

    throttled.__qualname__ = getattr(task, "__qualname__", "task")
    return throttled
