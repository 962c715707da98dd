"""Rate limits as a client sees them, in memory and in Redis, and Redis going away."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from levqor.accounts.ratelimit import MemoryLimiter, Policy, RedisLimiter, ResilientLimiter
from tests.conftest import TEST_REDIS_URL, assert_problem, serve_app


async def burn(client: httpx.AsyncClient, headers: dict[str, str], count: int) -> list[int]:
    return [(await client.get("/api/v1/me", headers=headers)).status_code for _ in range(count)]


async def test_61st_request_in_a_minute_is_429_per_user(
    client: httpx.AsyncClient, signup: Any
) -> None:
    alice, bob = await signup(), await signup()
    assert await burn(client, alice.headers, 60) == [200] * 60
    refused = await client.get("/api/v1/me", headers=alice.headers)
    assert_problem(refused, 429, "rate_limited")
    assert 1 <= int(refused.headers["retry-after"]) <= 2
    assert refused.headers["x-ratelimit-remaining"] == "0"
    # Bob's bucket is his own.
    assert await burn(client, bob.headers, 60) == [200] * 60
    assert (await client.get("/api/v1/me", headers=bob.headers)).status_code == 429


async def test_headers_count_down(client: httpx.AsyncClient, signup: Any) -> None:
    account = await signup()
    first = await client.get("/api/v1/me", headers=account.headers)
    second = await client.get("/api/v1/me", headers=account.headers)
    assert first.headers["x-ratelimit-limit"] == "60"
    assert int(first.headers["x-ratelimit-remaining"]) == 59
    assert int(second.headers["x-ratelimit-remaining"]) == 58
    reset = int(first.headers["x-ratelimit-reset"])
    assert time.time() < reset <= time.time() + 61
    assert first.headers["ratelimit-policy"] == '"user";q=60;w=60'
    assert first.headers["ratelimit"].startswith('"user";r=59;t=')


async def test_auth_routes_are_stricter_per_ip(client: httpx.AsyncClient) -> None:
    statuses = [
        (
            await client.post(
                "/api/v1/auth/login", json={"email": f"n{i}@example.com", "password": "x" * 9}
            )
        ).status_code
        for i in range(21)
    ]
    assert statuses[:20] == [401] * 20
    assert statuses[20] == 429


async def test_failed_authentication_spends_the_ip_budget(client: httpx.AsyncClient) -> None:
    statuses = [
        (await client.get("/api/v1/me", headers={"X-Api-Key": f"lvq_guess{i}"})).status_code
        for i in range(61)
    ]
    assert statuses[:60] == [401] * 60
    assert statuses[60] == 429


async def signup_on(client: httpx.AsyncClient, email: str) -> dict[str, str]:
    body = (
        await client.post("/api/v1/auth/signup", json={"email": email, "password": "p" * 10})
    ).json()
    return {"Authorization": f"Bearer {body['access_token']}"}


async def test_limit_follows_the_plan(make_settings: Any, fresh_database: None) -> None:
    from sqlalchemy import update

    from levqor.accounts.models import User

    async with serve_app(make_settings(rate_limit_plans={"pro": 3})) as (client, runtime):
        headers = await signup_on(client, "pro@example.com")
        async with runtime.db.write() as session, session.begin():
            await session.execute(update(User).values(plan="pro"))
        statuses = await burn(client, headers, 4)
    assert statuses == [200, 200, 200, 429]


async def test_limit_per_route(make_settings: Any, fresh_database: None) -> None:
    async with serve_app(make_settings(rate_limit_routes={"GET /api/v1/me": 2})) as (client, _):
        headers = await signup_on(client, "route@example.com")
        statuses = await burn(client, headers, 3)
        keys = await client.get("/api/v1/api-keys", headers=headers)
    assert statuses == [200, 200, 429]
    assert keys.status_code == 200


async def test_memory_bucket_refills_over_time() -> None:
    limiter = MemoryLimiter()
    policy = Policy("t", limit=2, window_s=60)
    assert [(await limiter.hit("k", policy)).allowed for _ in range(3)] == [True, True, False]
    tokens, _updated = limiter._buckets["k"]
    limiter._buckets["k"] = (tokens, time.time() - 30)  # half a window ago
    assert (await limiter.hit("k", policy)).allowed


needs_redis = pytest.mark.skipif(TEST_REDIS_URL is None, reason="LEVQOR_TEST_REDIS_URL not set")


@needs_redis
async def test_redis_bucket_is_atomic_under_concurrency() -> None:
    assert TEST_REDIS_URL is not None
    redis = Redis.from_pool(BlockingConnectionPool.from_url(TEST_REDIS_URL, max_connections=8))
    limiter = RedisLimiter(redis, key_prefix=f"levqor-test:{time.time_ns()}:")
    policy = Policy("burst", limit=50, window_s=3600)
    decisions = await asyncio.gather(*[limiter.hit("k", policy) for _ in range(120)])
    await redis.aclose()
    assert sum(decision.allowed for decision in decisions) == 50


@needs_redis
async def test_redis_hits_that_wait_together_keep_their_own_buckets_and_order() -> None:
    """Concurrent hits go to Redis together; each bucket still counts its own, in order."""
    assert TEST_REDIS_URL is not None
    redis = Redis.from_pool(BlockingConnectionPool.from_url(TEST_REDIS_URL, max_connections=8))
    limiter = RedisLimiter(redis, key_prefix=f"levqor-test:{time.time_ns()}:")
    small, large = Policy("small", limit=3, window_s=3600), Policy("large", limit=10, window_s=60)
    hits = [limiter.hit("a", small) if n % 2 else limiter.hit("b", large) for n in range(16)]
    decisions = await asyncio.gather(*hits)
    await redis.aclose()
    small_ones = [decision for decision in decisions if decision.policy is small]
    large_ones = [decision for decision in decisions if decision.policy is large]
    assert [decision.allowed for decision in small_ones] == [True] * 3 + [False] * 5
    assert [decision.remaining for decision in small_ones] == [2, 1, 0, 0, 0, 0, 0, 0]
    assert [decision.remaining for decision in large_ones] == [9, 8, 7, 6, 5, 4, 3, 2]
    assert all(decision.allowed for decision in large_ones)


async def test_a_failed_redis_call_fails_every_hit_that_waited_for_it() -> None:
    limiter = RedisLimiter(Redis.from_url("redis://127.0.0.1:1/0"), key_prefix="levqor-test:")
    policy = Policy("t", limit=5, window_s=60)
    outcomes = await asyncio.gather(
        *(limiter.hit(f"k{n}", policy) for n in range(4)), return_exceptions=True
    )
    assert all(isinstance(outcome, RedisConnectionError) for outcome in outcomes)
    # and the limiter is usable again: the next call is tried afresh
    assert isinstance(
        (await asyncio.gather(limiter.hit("k", policy), return_exceptions=True))[0],
        RedisConnectionError,
    )


async def redis_keys(url: str, pattern: str) -> list[bytes | str]:
    probe = Redis.from_url(url)
    try:
        return list(await probe.keys(pattern))
    finally:
        await probe.aclose()


async def test_redis_down_falls_back_to_memory_and_comes_back(
    make_settings: Any, fresh_database: None, redis_server: Any
) -> None:
    settings = make_settings(redis_url=redis_server.url, redis_retry_interval_s=0)
    buckets = f"{settings.redis_key_prefix}rl:user:*"
    async with serve_app(settings) as (client, runtime):
        limiter = runtime.limiter
        assert isinstance(limiter, ResilientLimiter)
        headers = await signup_on(client, "redis@example.com")
        assert await burn(client, headers, 5) == [200] * 5
        assert await redis_keys(redis_server.url, buckets)

        redis_server.stop()
        statuses = await burn(client, headers, 61)
        ready = await client.get("/ready")
        assert all(status < 500 for status in statuses)
        assert statuses[:60] == [200] * 60  # a fresh in-memory bucket ...
        assert statuses[60] == 429  # ... still limits
        assert limiter.redis_up is False
        assert_problem(ready, 503, "not_ready")
        assert ready.json()["checks"]["redis"].startswith("failed")

        redis_server.start()
        back = await client.get("/api/v1/me", headers=headers)
        assert back.status_code == 200  # the restarted Redis has a fresh bucket
        assert limiter.redis_up is True
        assert await redis_keys(redis_server.url, buckets)
