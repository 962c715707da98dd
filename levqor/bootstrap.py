"""The composition root: the process's Runtime, built once from Settings."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from levqor import metrics
from levqor.accounts.kit import AuthKit
from levqor.accounts.ratelimit import Limiter, MemoryLimiter, RedisLimiter, ResilientLimiter
from levqor.billing import reactions as billing_reactions
from levqor.billing import spend_guard
from levqor.billing.gateway import StripeGateway
from levqor.compliance import hooks as compliance_hooks
from levqor.compliance import reactions as compliance_reactions
from levqor.config import Settings
from levqor.crypto import build_cipher
from levqor.db.engine import Database, create_database
from levqor.events import Events
from levqor.jobs import reactions as jobs_reactions
from levqor.jobs.hooks import JobHooks
from levqor.jobs.intake import IntakeGuard
from levqor.partners import reactions as partners_reactions
from levqor.runtime import Runtime

if TYPE_CHECKING:  # imported only when configured: `levqor up` has no Redis
    from redis.asyncio import Redis

    from levqor.periodic import TickTask


def build_runtime(settings: Settings) -> Runtime:
    if not settings.metrics_enabled:
        metrics.silence()
    redis = _redis_client(settings)
    limiter: Limiter
    if redis is None:
        limiter = MemoryLimiter()
    else:
        limiter = ResilientLimiter(
            RedisLimiter(redis, key_prefix=settings.redis_key_prefix),
            retry_interval_s=settings.redis_retry_interval_s,
        )
    cipher = build_cipher(settings)
    db = create_database(settings, cipher, subscribed_events(settings))
    return Runtime(
        settings=settings,
        db=db,
        auth=AuthKit.from_settings(settings),
        limiter=limiter,
        cipher=cipher,
        redis=redis,
        stripe=StripeGateway(settings),
        job_hooks=job_hooks(db, settings),
        intake=IntakeGuard(settings),
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


def subscribed_events(settings: Settings) -> Events:
    """The domain events, each higher package subscribed to what it acts on."""
    events = Events()
    for package in (billing_reactions, jobs_reactions, partners_reactions, compliance_reactions):
        package.register(events, settings)
    return events


def job_hooks(db: Database, settings: Settings) -> JobHooks:
    """What the engine takes from the packages above it (see `jobs.hooks`)."""
    return JobHooks(
        mail_rules=compliance_hooks.SuppressionRules(db, settings),
        step_hooks={"llm": spend_guard.LlmStepGuard(db, settings)},
        build_tick_tasks=functools.partial(tick_tasks, db, settings),
        on_upkeep=compliance_hooks.UPKEEP_TASKS,
    )


def tick_tasks(db: Database, settings: Settings) -> tuple[TickTask, ...]:
    """What the scheduler runs each tick. Imported here, when a scheduler first ticks: a
    worker process, started by the dozen, never loads the operations packages."""
    from levqor.billing import reconcile
    from levqor.billing import reports as money_reports
    from levqor.ops import alerts, anomalies, backups, reports, rollback, slo, watchdog
    from levqor.partners import service as partners_service
    from levqor.web import seo, social

    # With Stripe configured: missed webhook events applied hourly, partners paid monthly.
    stripe = StripeGateway(settings) if settings.stripe_secret_key is not None else None
    money = (
        ()
        if stripe is None
        else (
            reconcile.tick_task(db, stripe, settings),
            partners_service.payouts_tick_task(db, stripe, settings),
        )
    )
    return (
        *compliance_hooks.tick_tasks(db, settings),
        *((seo.tick_task(db, settings),) if settings.indexnow_key else ()),
        social.tick_task(db, settings, db.key_ring),
        money_reports.snapshot_task(db),
        spend_guard.tick_task(db, settings),
        *money,
        watchdog.tick_task(db, settings),
        slo.tick_task(db, settings),
        anomalies.tick_task(db, settings),
        rollback.tick_task(db, settings),
        reports.daily_task(db, settings),
        *((backups.tick_task(db, settings),) if settings.backups_enabled else ()),
        alerts.delivery_task(db, settings),
    )
