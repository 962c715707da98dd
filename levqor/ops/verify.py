"""`levqor verify`: is this installation healthy, checked part by part? One row per
check, each passed or failed with what was found; any failure is exit 1.

It runs beside a live installation (the same settings), reads the database and asks the
running API (`LEVQOR_PUBLIC_URL`, or `--url`) for its headers.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

import httpx
from sqlalchemy import select, text

from levqor import mail
from levqor.billing import spend_guard
from levqor.db import migrate
from levqor.db.base import utcnow
from levqor.db.rotation import sealed_columns
from levqor.jobs import queue
from levqor.jobs.scheduler import LEADER_LOCK
from levqor.ops import backups, channels, slo
from levqor.ops.models import SloCheck
from levqor.runtime import Runtime

TIMEOUT_S = 5
SCHEDULER_SILENT = timedelta(minutes=3)  # its SLO check runs every minute
REQUIRED_HEADERS = (
    "content-security-policy",
    "x-content-type-options",
    "x-frame-options",
    "referrer-policy",
)


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


async def run_checks(runtime: Runtime, url: str | None = None) -> list[Check]:
    """Every check, in a fixed order; one that breaks is a failed check, not a crash."""
    found = []
    for name, probe in _probes(runtime, url or runtime.settings.public_url):
        try:
            async with asyncio.timeout(TIMEOUT_S * 3):
                ok, detail = await probe()
        except Exception as exc:  # noqa: BLE001  a check that breaks has failed, with why
            ok, detail = False, f"{type(exc).__name__}: {exc}"[:300]
        found.append(Check(name, ok, detail))
    return found


Probe = Callable[[], Awaitable[tuple[bool, str]]]


def _probes(runtime: Runtime, url: str) -> list[tuple[str, Probe]]:
    probes: list[tuple[str, Probe]] = [
        ("database", lambda: _database(runtime)),
        ("migrations", lambda: _migrations(runtime)),
    ]
    if runtime.redis is not None:
        probes.append(("redis", lambda: _redis(runtime)))
    probes += [
        ("workers", lambda: _workers(runtime)),
        ("scheduler", lambda: _scheduler(runtime)),
        ("queue", lambda: _queue(runtime)),
        ("backups", lambda: _backups(runtime)),
        ("slo", lambda: _slo(runtime)),
        ("spend guard", lambda: _spend_guard(runtime)),
        ("alert channels", lambda: _alert_channels(runtime)),
        ("stripe", lambda: _stripe(runtime)),
        ("key ring", lambda: _key_ring(runtime)),
        ("security headers", lambda: _headers(url)),
    ]
    return probes


async def _database(runtime: Runtime) -> tuple[bool, str]:
    async with runtime.db.engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
    return True, "answers"


async def _migrations(runtime: Runtime) -> tuple[bool, str]:
    current, head = await migrate.current_revision(runtime.settings), migrate.head_revision()
    if current == head:
        return True, f"at head ({head})"
    return False, f"at {current}, head is {head}: run `levqor migrate`"


async def _redis(runtime: Runtime) -> tuple[bool, str]:
    assert runtime.redis is not None
    await runtime.redis.ping()
    return True, "answers"


async def _workers(runtime: Runtime) -> tuple[bool, str]:
    now = utcnow()
    beat = timedelta(seconds=runtime.settings.worker_heartbeat_s * 3)
    async with runtime.db.read() as session:
        seen = await queue.workers_seen(session)
    alive = [worker for worker in seen if worker.heartbeat_at >= now - beat]
    silent = [f"{worker.host}:{worker.pid}" for worker in seen if worker.heartbeat_at < now - beat]
    if not alive:
        return False, "no worker is heartbeating" + (
            f" (silent: {', '.join(silent)})" if silent else ""
        )
    if silent:
        return False, f"{len(alive)} alive, but silent: {', '.join(silent)}"
    return True, f"{len(alive)} alive, {sum(w.concurrency for w in alive)} slots"


async def _scheduler(runtime: Runtime) -> tuple[bool, str]:
    async with runtime.db.read() as session:
        last = await session.scalar(
            select(SloCheck.checked_at).order_by(SloCheck.checked_at.desc()).limit(1)
        )
    if not runtime.settings.is_sqlite:
        async with runtime.db.engine.connect() as connection:
            free = await connection.scalar(
                text("SELECT pg_try_advisory_lock(hashtext(:lock))"), {"lock": LEADER_LOCK}
            )
            if free:
                await connection.execute(
                    text("SELECT pg_advisory_unlock(hashtext(:lock))"), {"lock": LEADER_LOCK}
                )
                return False, "no scheduler holds the leader lock: start `levqor scheduler`"
    if last is None or utcnow() - last > SCHEDULER_SILENT:
        return (
            False,
            "no scheduler tick in the last 3 minutes" if last else "the scheduler never ticked",
        )
    return True, f"last tick {int((utcnow() - last).total_seconds())} s ago"


async def _queue(runtime: Runtime) -> tuple[bool, str]:
    now = utcnow()
    async with runtime.db.read() as session:
        stats = await queue.stats(session, now=now, alive_since=now)
    waited = stats.oldest_waiting_s or 0
    waiting = stats.by_status.get("queued", 0) + stats.by_status.get("retrying", 0)
    dead = stats.by_status.get("failed", 0)
    detail = f"{waiting} waiting, the oldest for {waited:.0f} s; {dead} dead letters"
    return waited <= runtime.settings.alert_queue_age_s, detail


async def _backups(runtime: Runtime) -> tuple[bool, str]:
    async with runtime.db.read() as session:
        age = await backups.newest_verified_age_s(session)
    limit = runtime.settings.backup_interval_s + backups.STALE_GRACE.total_seconds()
    if age is None:
        return False, "no verified backup: run `levqor backup run` and `levqor backup verify`"
    if age > limit:
        return False, f"the newest verified backup is {age / 3600:.0f} h old"
    return True, f"the newest verified backup is {age / 3600:.1f} h old"


async def _slo(runtime: Runtime) -> tuple[bool, str]:
    async with runtime.db.read() as session:
        state = await slo.state(session, runtime.settings)
    p95 = f"{state.p95_ms:.0f} ms" if state.p95_ms is not None else "no requests"
    return state.status != "breached", f"{state.status}: p95 {p95}, 5xx {state.error_rate:.2%}"


async def _spend_guard(runtime: Runtime) -> tuple[bool, str]:
    async with runtime.db.read() as session:
        paused = await spend_guard.paused(session, user_id=None)
    return not paused, "LLM calls paused for everyone" if paused else "not paused"


async def _alert_channels(runtime: Runtime) -> tuple[bool, str]:
    settings = runtime.settings
    configured = channels.configured(settings)
    if not configured:
        return False, "none configured: nobody hears about trouble (LEVQOR_ALERT_*)"
    targets = {
        "telegram": settings.alert_telegram_api_base,
        "slack": settings.alert_slack_webhook_url.get_secret_value()
        if settings.alert_slack_webhook_url
        else "",
        "webhook": settings.alert_webhook_url or "",
        "email": f"smtp://{settings.smtp_host}:"
        f"{settings.smtp_port or mail.PORTS[settings.smtp_security]}",
    }
    unreachable = [name for name in configured if not await _reachable(targets[name])]
    if unreachable:
        return False, f"cannot connect to: {', '.join(unreachable)}"
    return True, f"{', '.join(configured)} reachable"


async def _reachable(url: str) -> bool:
    """A TCP connection to the channel's host opens (nothing is sent: no test alert)."""
    parts = urlsplit(url)
    port = parts.port or {"https": 443, "http": 80, "smtp": 25}.get(parts.scheme, 443)
    try:
        _reader, writer = await asyncio.wait_for(
            asyncio.open_connection(parts.hostname, port, family=socket.AF_UNSPEC), TIMEOUT_S
        )
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


async def _stripe(runtime: Runtime) -> tuple[bool, str]:
    settings = runtime.settings
    missing = [
        name
        for name, value in (
            ("LEVQOR_STRIPE_SECRET_KEY", settings.stripe_secret_key),
            ("LEVQOR_STRIPE_WEBHOOK_SECRET", settings.stripe_webhook_secret),
        )
        if value is None
    ]
    if missing:
        return False, f"not set: {', '.join(missing)} (no payment can be taken)"
    return True, "secret key and webhook secret set"


async def _key_ring(runtime: Runtime) -> tuple[bool, str]:
    sampled = 0
    async with runtime.db.read() as session:
        for sealed in sealed_columns():
            value = await session.scalar(
                select(sealed.raw).where(sealed.column.is_not(None)).limit(1)
            )
            if value is not None:
                runtime.cipher.decrypt(str(value).encode())
                sampled += 1
    return (
        True,
        f"{len(runtime.cipher.keys)} key(s); a stored value of {sampled} sealed columns decrypts",
    )


async def _headers(url: str) -> tuple[bool, str]:
    async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:
        answer = await client.get(f"{url}/health")
    missing = [name for name in REQUIRED_HEADERS if name not in answer.headers]
    if answer.status_code != 200:
        return False, f"{url}/health answered {answer.status_code}"
    if missing:
        return False, f"{url} serves no {', '.join(missing)}"
    return True, f"{url} serves them"
