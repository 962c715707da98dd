"""Token-bucket rate limiting, in memory or in Redis.

A bucket holds up to `limit` tokens and refills at `limit / window_s` tokens a second; a
request takes one. In Redis the whole read-refill-take-write step is one Lua script, so
concurrent API processes share a bucket without races, timed by Redis's own clock; one
call takes the hits of all the requests that waited for it (`RedisLimiter`).

`ResilientLimiter` uses Redis while it answers and an in-memory bucket while it does not:
Redis being down never causes a 5xx, only limits kept per process for a while.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from levqor import metrics
from levqor.db.group_commit import GroupCommit
from levqor.logging import get_logger

if TYPE_CHECKING:  # imported only when Redis is configured
    from redis.asyncio import Redis

log = get_logger("levqor.ratelimit")


@dataclass(frozen=True)
class Policy:
    name: str
    limit: int
    window_s: int = 60

    @property
    def rate_per_s(self) -> float:
        return self.limit / self.window_s


@dataclass(frozen=True)
class Decision:
    policy: Policy
    allowed: bool
    tokens: float
    now: float

    @property
    def remaining(self) -> int:
        return max(0, math.floor(self.tokens))

    @property
    def seconds_until_full(self) -> int:
        return math.ceil((self.policy.limit - self.tokens) / self.policy.rate_per_s)

    @property
    def retry_after_s(self) -> int:
        return max(1, math.ceil((1 - self.tokens) / self.policy.rate_per_s))

    def headers(self) -> list[tuple[bytes, bytes]]:
        name = self.policy.name
        pairs = [
            ("x-ratelimit-limit", str(self.policy.limit)),
            ("x-ratelimit-remaining", str(self.remaining)),
            ("x-ratelimit-reset", str(math.ceil(self.now + self.seconds_until_full))),
            ("ratelimit-policy", f'"{name}";q={self.policy.limit};w={self.policy.window_s}'),
            ("ratelimit", f'"{name}";r={self.remaining};t={self.seconds_until_full}'),
        ]
        if not self.allowed:
            pairs.append(("retry-after", str(self.retry_after_s)))
        return [(key.encode(), value.encode()) for key, value in pairs]


class Limiter(Protocol):
    async def hit(self, key: str, policy: Policy) -> Decision: ...

    async def close(self) -> None: ...


class MemoryLimiter:
    """Buckets in this process; the oldest are dropped past `max_keys`."""

    def __init__(self, max_keys: int = 100_000) -> None:
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._max_keys = max_keys

    async def hit(self, key: str, policy: Policy) -> Decision:
        now = time.time()
        tokens, updated = self._buckets.pop(key, (float(policy.limit), now))
        tokens = min(float(policy.limit), tokens + (now - updated) * policy.rate_per_s)
        allowed = tokens >= 1
        if allowed:
            tokens -= 1
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
        return Decision(policy, allowed, tokens, now)

    async def close(self) -> None:
        self._buckets.clear()


BUCKETS_SCRIPT_LUA = """
local clock = redis.call('TIME')
local now_ms = clock[1] * 1000 + math.floor(clock[2] / 1000)
local answers = {}
for i, key in ipairs(KEYS) do
  local capacity = tonumber(ARGV[2 * i - 1])
  local rate_per_ms = tonumber(ARGV[2 * i])
  local bucket = redis.call('HMGET', key, 'tokens', 'ts')
  local tokens = tonumber(bucket[1]) or capacity
  local updated = tonumber(bucket[2]) or now_ms
  tokens = math.min(capacity, tokens + math.max(0, now_ms - updated) * rate_per_ms)
  local allowed = 0
  if tokens >= 1 then
    tokens = tokens - 1
    allowed = 1
  end
  redis.call('HSET', key, 'tokens', tostring(tokens), 'ts', now_ms)
  redis.call('PEXPIRE', key, math.ceil(capacity / rate_per_ms) + 1000)
  answers[2 * i - 1] = allowed
  answers[2 * i] = tostring(tokens)
end
answers[#answers + 1] = tostring(now_ms)
return answers
"""


class RedisLimiter(GroupCommit[tuple[str, Policy], Decision]):
    """Buckets in Redis, shared by every API process.

    The hits of requests that arrive while a call to Redis is in flight go together in
    the next call (`GroupCommit`), one script over all their buckets, in the order they
    came: the client's cost per call (about a tenth of an authenticated GET's CPU) is
    paid once per batch instead of once per request. Each hit is still taken in Redis,
    atomically, before its request goes on.
    """

    def __init__(self, redis: Redis, *, key_prefix: str) -> None:
        super().__init__()
        self._redis = redis
        self._script = redis.register_script(BUCKETS_SCRIPT_LUA)
        self._prefix = f"{key_prefix}rl:"

    async def hit(self, key: str, policy: Policy) -> Decision:
        return await self.submit((self._prefix + key, policy))

    async def commit(self, items: list[tuple[str, Policy]]) -> list[Decision]:
        args: list[float] = []
        for _key, policy in items:
            args += [policy.limit, policy.rate_per_s / 1000]
        answers = await self._script(keys=[key for key, _ in items], args=args)
        now = int(answers[-1]) / 1000
        return [
            Decision(policy, bool(int(answers[2 * i])), float(answers[2 * i + 1]), now)
            for i, (_key, policy) in enumerate(items)
        ]

    def isolates(self, exc: Exception) -> bool:
        """A failed call is Redis's, never one hit's: each waiting request hears of it."""
        return False

    async def close(self) -> None:
        """The Redis client belongs to the runtime, which closes it."""


class ResilientLimiter:
    """Redis first; in memory while Redis fails, trying Redis again every `retry_interval_s`."""

    def __init__(self, primary: RedisLimiter, *, retry_interval_s: float) -> None:
        from redis.exceptions import RedisError

        self._failures = (RedisError, OSError)
        self._primary = primary
        self._fallback = MemoryLimiter()
        self._retry_interval_s = retry_interval_s
        self._down_until = 0.0
        self.redis_up = True
        metrics.RATELIMIT_REDIS_UP.set(1)

    async def hit(self, key: str, policy: Policy) -> Decision:
        if time.monotonic() >= self._down_until:
            try:
                decision = await self._primary.hit(key, policy)
            except self._failures as exc:
                self._mark_down(exc)
            else:
                self._mark_up()
                return decision
        metrics.RATELIMIT_FALLBACK.inc()
        return await self._fallback.hit(key, policy)

    def _mark_down(self, exc: Exception) -> None:
        self._down_until = time.monotonic() + self._retry_interval_s
        if self.redis_up:
            log.warning("ratelimit_redis_down", error=type(exc).__name__, fallback="memory")
        self.redis_up = False
        metrics.RATELIMIT_REDIS_UP.set(0)

    def _mark_up(self) -> None:
        if not self.redis_up:
            log.warning("ratelimit_redis_back")
        self.redis_up = True
        metrics.RATELIMIT_REDIS_UP.set(1)

    async def close(self) -> None:
        await self._primary.close()
        await self._fallback.close()
