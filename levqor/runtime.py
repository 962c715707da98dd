"""The process's shared resources, wired once from Settings (the composition root)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from cryptography.fernet import MultiFernet
from redis.asyncio import BlockingConnectionPool, Redis

from levqor.accounts.kit import AuthKit
from levqor.accounts.ratelimit import Limiter, MemoryLimiter, RedisLimiter, ResilientLimiter
from levqor.config import Settings
from levqor.crypto import build_cipher
from levqor.db.engine import Database, create_database


@dataclass
class Runtime:
    settings: Settings
    db: Database
    auth: AuthKit
    limiter: Limiter
    cipher: MultiFernet
    redis: Redis | None
    # Set when a run is queued in this process, so a worker here starts it at once.
    job_wakeup: asyncio.Event = field(default_factory=asyncio.Event)

    async def close(self) -> None:
        await self.limiter.close()
        if self.redis is not None:
            await self.redis.aclose()
        await self.db.dispose()


def build_runtime(settings: Settings) -> Runtime:
    redis = _redis_client(settings)
    limiter: Limiter
    if redis is None:
        limiter = MemoryLimiter()
    else:
        limiter = ResilientLimiter(
            RedisLimiter(redis, key_prefix=settings.redis_key_prefix),
            retry_interval_s=settings.redis_retry_interval_s,
        )
    return Runtime(
        settings=settings,
        db=create_database(settings),
        auth=AuthKit.from_settings(settings),
        limiter=limiter,
        cipher=build_cipher(settings),
        redis=redis,
    )


def _redis_client(settings: Settings) -> Redis | None:
    if not settings.redis_url:
        return None
    # A blocking pool waits for a free connection under bursts; the default pool raises
    # "Too many connections", which the limiter would mistake for Redis being down.
    pool = BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=settings.redis_max_connections,
        timeout=settings.redis_timeout_s,
        socket_timeout=settings.redis_timeout_s,
        socket_connect_timeout=settings.redis_timeout_s,
        health_check_interval=30,
    )
    return Redis.from_pool(pool)
