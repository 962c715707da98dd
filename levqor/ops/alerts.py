"""Alerts: one `alert(severity, title, body)` for everything that must reach the operator.

An alert is a row, written with a delivery row per configured channel (`ops.channels`)
in the same transaction as whatever raised it (`record`), or in its own (`alert`). The
deliveries are sent at once by `alert`, and by the scheduler's tick otherwise; a channel
that fails is retried with back-off up to `LEVQOR_ALERT_MAX_ATTEMPTS`, and never raises
into the caller.

Two kinds of repeat are not sent again:

- the same severity, title and body within `LEVQOR_ALERT_DEDUPE_S`: counted in `repeats`;
- a condition that stays true (`key`, e.g. `queue_stuck`): while its alert is open, the
  condition is counted, not re-sent; `resolve(key)` closes it with one `resolved` alert.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import httpx
from sqlalchemy import Select, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from levqor import metrics
from levqor.config import Settings
from levqor.db import pages
from levqor.db.base import rowcount, utcnow
from levqor.db.engine import Database
from levqor.logging import get_logger
from levqor.ops import channels
from levqor.ops.models import Alert, AlertDelivery
from levqor.periodic import TickTask

log = get_logger(__name__)

Severity = Literal["critical", "warning", "info", "resolved"]
SEVERITIES: tuple[Severity, ...] = ("critical", "warning", "info", "resolved")
PENDING, SENT, FAILED = "pending", "sent", "failed"
MAX_BACKOFF_S = 3600
CLAIM_S = 120  # a delivery being sent is not due for others meanwhile


@dataclass(frozen=True)
class Recorded:
    alert: Alert
    new: bool  # False: a repeat, counted on the earlier alert


async def record(
    session: AsyncSession,
    settings: Settings,
    severity: Severity,
    title: str,
    body: str,
    *,
    key: str | None = None,
    once: bool = False,
) -> Recorded:
    """Record an alert in the caller's transaction, queued for every configured channel.
    With `once`, `key` names an event: it is alerted once ever, open or resolved."""
    now = utcnow()
    title, body = title[:200], body[:4000]
    fingerprint = hashlib.sha256(f"{severity}\n{title}\n{body}".encode()).hexdigest()
    earlier = await session.scalar(_repeat_of(key, once, fingerprint, now, settings))
    if earlier is not None:
        earlier.repeats += 1
        await session.flush()
        return Recorded(earlier, new=False)
    alert = Alert(
        severity=severity,
        title=title,
        body=body,
        key=key,
        fingerprint=fingerprint,
        created_at=now,
        resolved_at=now if once else None,  # an event has nothing to resolve
    )
    session.add(alert)
    await session.flush()
    for channel in channels.configured(settings):
        session.add(AlertDelivery(alert_id=alert.id, channel=channel, next_attempt_at=now))
    await session.flush()
    log.warning("alert", alert_id=alert.id, severity=severity, title=title, key=key)
    return Recorded(alert, new=True)


def _repeat_of(
    key: str | None, once: bool, fingerprint: str, now: datetime, settings: Settings
) -> Select[Any]:
    query = select(Alert).limit(1)
    if key is not None and once:  # the event's alert, ever
        return query.where(Alert.key == key)
    if key is not None:  # the condition's open alert
        return query.where(Alert.key == key, Alert.resolved_at.is_(None))
    since = now - timedelta(seconds=settings.alert_dedupe_s)
    return query.where(Alert.fingerprint == fingerprint, Alert.created_at >= since)


async def resolve(
    session: AsyncSession, settings: Settings, key: str, title: str, body: str
) -> Recorded | None:
    """Close the open alert of `key` with a `resolved` alert; None if none was open."""
    opened = await session.scalar(
        select(Alert).where(Alert.key == key, Alert.resolved_at.is_(None)).limit(1)
    )
    if opened is None:
        return None
    opened.resolved_at = utcnow()
    await session.flush()
    return await record(session, settings, "resolved", title, body)


async def is_open(session: AsyncSession, key: str) -> bool:
    found = await session.scalar(
        select(Alert.id).where(Alert.key == key, Alert.resolved_at.is_(None)).limit(1)
    )
    return found is not None


async def open_count(session: AsyncSession) -> int:
    """Alerted conditions not yet resolved."""
    found = await session.scalar(
        select(func.count()).where(Alert.key.is_not(None), Alert.resolved_at.is_(None))
    )
    return int(found or 0)


async def alert(
    db: Database,
    settings: Settings,
    severity: Severity,
    title: str,
    body: str,
    *,
    key: str | None = None,
) -> Recorded | None:
    """Record an alert in its own transaction and send it now. Never raises: an alert
    that cannot even be recorded (the database is away) is logged and dropped."""
    try:
        async with db.session(write=True) as session, session.begin():
            recorded = await record(session, settings, severity, title, body, key=key)
    except Exception:  # alerting must not break what raised the alert
        log.exception("alert_not_recorded", severity=severity, title=title)
        return None
    if recorded.new:
        await deliver_due(db, settings, alert_id=recorded.alert.id)
    return recorded


@dataclass(frozen=True)
class Outcome:
    alert_id: str
    channel: str
    status: str
    error: str | None


async def deliver_due(
    db: Database,
    settings: Settings,
    *,
    alert_id: str | None = None,
    client: httpx.AsyncClient | None = None,
    limit: int = 100,
) -> list[Outcome]:
    """Send the deliveries that are due (of one alert, or all); each one's outcome."""
    now = utcnow()
    query = (
        select(AlertDelivery, Alert)
        .join(Alert, Alert.id == AlertDelivery.alert_id)
        .where(AlertDelivery.status == PENDING, AlertDelivery.next_attempt_at <= now)
        .order_by(AlertDelivery.next_attempt_at, Alert.created_at, AlertDelivery.id)
        .limit(limit)
    )
    if alert_id is not None:
        query = query.where(AlertDelivery.alert_id == alert_id)
    # Read first: every scheduler tick asks, and usually nothing is due (no write lock).
    async with db.session(write=False) as session:
        due = [
            (d.id, d.channel, d.attempts, channels.Message(a.id, a.severity, a.title, a.body))
            for d, a in await session.execute(query)
        ]
    if not due:
        return []
    async with db.session(write=True) as session, session.begin():
        claimed = []
        for delivery_id, channel, attempts, message in due:
            taken = await session.execute(
                update(AlertDelivery)
                .where(
                    AlertDelivery.id == delivery_id,
                    AlertDelivery.status == PENDING,
                    AlertDelivery.next_attempt_at <= now,
                )
                .values(next_attempt_at=now + timedelta(seconds=CLAIM_S))
            )
            if rowcount(taken):
                claimed.append((delivery_id, channel, attempts, message))
    if not claimed:
        return []
    send = channels.configured(settings)
    owned = client is None
    client = client or httpx.AsyncClient(timeout=settings.alert_timeout_s)
    try:
        errors = await _send_in_order(settings, client, send, claimed)
    finally:
        if owned:
            await client.aclose()
    results = [errors[delivery_id] for delivery_id, *_rest in claimed]
    outcomes = []
    async with db.session(write=True) as session, session.begin():
        for (delivery_id, channel, attempts, message), error in zip(claimed, results, strict=True):
            outcome = await _settle(session, settings, delivery_id, attempts + 1, error)
            metrics.labelled(metrics.ALERTS_SENT, channel, outcome).inc()
            outcomes.append(Outcome(message.alert_id, channel, outcome, error))
    return outcomes


async def _send_in_order(
    settings: Settings,
    client: httpx.AsyncClient,
    send: dict[str, channels.Send],
    claimed: list[tuple[int, str, int, channels.Message]],
) -> dict[int, str | None]:
    """Channels in parallel; each channel's messages one after another, oldest first,
    so a `resolved` never overtakes the alert it resolves."""
    errors: dict[int, str | None] = {}

    async def through(channel: str) -> None:
        for delivery_id, _channel, _attempts, message in claimed:
            if _channel == channel:
                errors[delivery_id] = await _send_one(settings, client, send.get(channel), message)

    await asyncio.gather(
        *(through(channel) for channel in dict.fromkeys(c for _i, c, _a, _m in claimed))
    )
    return errors


async def _send_one(
    settings: Settings,
    client: httpx.AsyncClient,
    send: channels.Send | None,
    message: channels.Message,
) -> str | None:
    """None when sent, else why not (a channel's failure is its outcome, never raised)."""
    if send is None:
        return "the channel is no longer configured"
    try:
        async with asyncio.timeout(settings.alert_timeout_s * 2):
            await send(settings, client, message)
    except Exception as exc:  # noqa: BLE001  every failure is this delivery's outcome
        return f"{type(exc).__name__}: {exc}"[:1000]
    return None


async def _settle(
    session: AsyncSession, settings: Settings, delivery_id: int, attempts: int, error: str | None
) -> str:
    now = utcnow()
    if error is None:
        values: dict[str, Any] = {"status": SENT, "sent_at": now, "error": None}
        outcome = SENT
    elif attempts >= settings.alert_max_attempts:
        values, outcome = {"status": FAILED, "error": error}, FAILED
    else:
        wait = min(30 * 2 ** (attempts - 1), MAX_BACKOFF_S)
        values = {"error": error, "next_attempt_at": now + timedelta(seconds=wait)}
        outcome = "retrying"
    await session.execute(
        update(AlertDelivery)
        .where(AlertDelivery.id == delivery_id)
        .values(attempts=attempts, **values)
    )
    if error is not None:
        log.warning("alert_delivery_failed", delivery=delivery_id, error=error, attempts=attempts)
    return outcome


def delivery_task(db: Database, settings: Settings) -> TickTask:
    """For the scheduler: send what is due, each tick (retries included)."""

    async def deliver() -> object:
        return await deliver_due(db, settings)

    return deliver


async def page(
    session: AsyncSession, *, limit: int = 50, cursor: str | None = None
) -> tuple[list[tuple[Alert, list[AlertDelivery]]], str | None]:
    """Alerts, newest first, each with its deliveries."""
    alerts, next_cursor = await pages.newest_first(
        session, select(Alert), at=Alert.created_at, key=Alert.id, limit=limit, cursor=cursor
    )
    deliveries: dict[str, list[AlertDelivery]] = {alert.id: [] for alert in alerts}
    if alerts:
        for delivery in await session.scalars(
            select(AlertDelivery)
            .where(AlertDelivery.alert_id.in_(list(deliveries)))
            .order_by(AlertDelivery.id)
        ):
            deliveries[delivery.alert_id].append(delivery)
    return [(alert, deliveries[alert.id]) for alert in alerts], next_cursor
