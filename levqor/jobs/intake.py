"""Back-pressure on intake: new runs are refused, with a Retry-After, once the queue
holds more than the workers drain in a few seconds, instead of accepted into a backlog
that only grows.

The workers' drain rate comes from their beats (`workers.finished_per_s`, summed over
the live ones). One user may have `intake_backlog_s` seconds of that drain waiting
(never fewer than `intake_min_backlog` runs): past it, that user's new runs get a 429.
Everyone together may have four times as much: past that, every new run gets a 503.
So a flooding user is pushed back first, and the others keep getting in.

Each process keeps the drain rate for a second and each count for a tenth of one,
adding the runs it admits meanwhile, so a burst costs a query per tenth of a second,
not one per run; counts are bounded (`queue.waiting`), so a long queue costs no more.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from levqor import errors, metrics
from levqor.config import Settings
from levqor.db.base import utcnow
from levqor.jobs import queue
from levqor.jobs.queue.backends import Connection

RATE_TTL_S = 1.0
COUNT_TTL_S = 0.1
EVERYONE_FACTOR = 4  # the whole queue's budget, in users' budgets
RETRY_AFTER_MAX_S = 60
RETRY_AFTER_NO_WORKERS_S = 5


@dataclass
class _Count:
    value: int
    until: float


@dataclass
class IntakeGuard:
    settings: Settings
    _rate: tuple[float, float] = (0.0, 0.0)  # runs/s, valid until (monotonic)
    _counts: dict[str | None, _Count] = field(default_factory=dict)  # user id, None: all

    async def admit(self, session: Connection, *, user_id: str) -> None:
        """Raise 429 (this user) or 503 (everyone) when the backlog is full; else count
        the run about to be queued."""
        backlog_s = self.settings.intake_backlog_s
        if backlog_s <= 0:
            return
        rate = await self._drain_rate(session)
        per_user = max(self.settings.intake_min_backlog, math.ceil(rate * backlog_s))
        everyone = per_user * EVERYONE_FACTOR
        user_waiting = await self._waiting(session, user_id, up_to=per_user + 1)
        if user_waiting >= per_user:
            metrics.labelled(metrics.RATELIMITED, "backlog_user").inc()
            raise errors.RateLimited(
                f"You have {per_user} or more runs waiting, more than the workers finish in "
                f"{backlog_s:g} s: try again shortly.",
                headers={"Retry-After": _retry_after(user_waiting - per_user + 1, rate)},
            )
        all_waiting = await self._waiting(session, None, up_to=everyone + 1)
        if all_waiting >= everyone:
            metrics.labelled(metrics.RATELIMITED, "backlog_all").inc()
            raise errors.ServiceUnavailable(
                "The queue is full: the workers are behind. Try again shortly.",
                headers={"Retry-After": _retry_after(all_waiting - everyone + 1, rate)},
            )
        self._counts[user_id].value += 1
        self._counts[None].value += 1

    async def _drain_rate(self, session: Connection) -> float:
        rate, until = self._rate
        now = time.monotonic()
        if now < until:
            return rate
        alive = queue.alive_since(utcnow(), heartbeat_s=self.settings.worker_heartbeat_s)
        rate = await queue.drain_rate(session, alive_since=alive)
        self._rate = (rate, now + RATE_TTL_S)
        return rate

    async def _waiting(self, session: Connection, user_id: str | None, *, up_to: int) -> int:
        now = time.monotonic()
        cached = self._counts.get(user_id)
        if cached is None or now >= cached.until:
            if len(self._counts) > 10_000:  # many users: forget the stale ones
                self._counts = {key: c for key, c in self._counts.items() if now < c.until}
            value = await queue.waiting(session, user_id=user_id, up_to=up_to)
            cached = self._counts[user_id] = _Count(value, now + COUNT_TTL_S)
        return cached.value


def _retry_after(excess: int, rate: float) -> str:
    """Seconds until the workers have drained the excess, at their current pace."""
    if rate <= 0:
        return str(RETRY_AFTER_NO_WORKERS_S)
    return str(min(RETRY_AFTER_MAX_S, max(1, math.ceil(excess / rate))))
