"""The process's shared resources, wired once from Settings (the composition root)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cryptography.fernet import MultiFernet

from levqor.accounts.kit import AuthKit
from levqor.accounts.ratelimit import Limiter, MemoryLimiter, RedisLimiter, ResilientLimiter
from levqor.billing.gateway import StripeGateway
from levqor.config import Settings
from levqor.crypto import build_cipher
from levqor.db.engine import Database, create_database

if TYPE_CHECKING:  # imported only when configured: `levqor up` has no Redis
    from redis.asyncio import Redis


@dataclass
class Runtime:
    settings: Settings
    db: Database
    auth: AuthKit
    limiter: Limiter
    cipher: MultiFernet
    redis: Redis | None
    stripe: StripeGateway
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
        stripe=StripeGateway(settings),
    )


def _redis_client(settings: Settings) -> Redis | None:
    if not settings.redis_url:
        return None
    from redis.asyncio import BlockingConnectionPool, Redis

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


M_MMAP_THRESHOLD = -3  # glibc's malloc.h


def return_freed_memory() -> None:
    """Make glibc give large freed blocks back to the system.

    glibc raises its mmap threshold to the size of each large block freed, so after one
    password hash (argon2 takes 19 MiB) every later 19 MiB block comes from the heap and
    stays resident: `levqor up` grew by tens of MiB under load and never shrank. A fixed
    threshold keeps blocks above 128 KiB in mmap, returned when freed. Elsewhere (musl,
    macOS) this does nothing.
    """
    import ctypes

    # The process's own symbols: no library search (find_library runs ldconfig).
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is not None:
        mallopt(M_MMAP_THRESHOLD, 128 * 1024)
