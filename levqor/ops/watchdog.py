"""The watchdog: what the operator must hear about without looking, checked by the
scheduler about once a minute and said through `ops.alerts`.

- runs waiting too long (the oldest due job older than `LEVQOR_ALERT_QUEUE_AGE_S`):
  critical, resolved when the queue moves again;
- workers that stopped heartbeating without stopping cleanly: warning, resolved when the
  row is gone (the worker came back and stopped, or upkeep forgot it);
- runs that failed into the dead-letter queue: one summary per window
  (`LEVQOR_ALERT_DEAD_LETTER_WINDOW_S`), never one alert per job;
- a spend-guard pause; a partner payout that failed, or still unsure after an hour; a
  referral the fraud guard flagged: one alert each.

Conditions carry a `key`, so a check that keeps finding the same problem counts it on
the open alert instead of sending it again.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from levqor.billing import spend_guard
from levqor.config import Settings
from levqor.db.base import utcnow
from levqor.db.engine import Database
from levqor.jobs import queue
from levqor.ops import alerts
from levqor.ops.models import Alert
from levqor.partners import fraud
from levqor.partners import service as partners
from levqor.periodic import TickTask, at_most_every

QUEUE_STUCK = "queue_stuck"
SILENT_WORKER = "worker_silent:"
UNSURE_AFTER = timedelta(hours=1)
LOOK_BACK = timedelta(days=1)  # pauses and payouts older than this are not news


async def check(db: Database, settings: Settings, now: datetime | None = None) -> list[Alert]:
    """Run every check once; the alerts it raised (new ones only)."""
    now = now or utcnow()
    raised: list[alerts.Recorded | None] = []
    async with db.session(write=True) as session, session.begin():
        raised += await _queue(session, settings, now)
        raised += await _workers(session, settings, now)
        raised.append(await _dead_letters(session, settings, now))
        raised += await _spend_pauses(session, settings, now)
        raised += await _payouts(session, settings, now)
        raised += await _flagged_referrals(session, settings, now)
    new = [each.alert for each in raised if each is not None and each.new]
    if new:
        await alerts.deliver_due(db, settings)
    return new


async def _queue(
    session: AsyncSession, settings: Settings, now: datetime
) -> list[alerts.Recorded | None]:
    beat = timedelta(seconds=settings.worker_heartbeat_s * 3)
    stats = await queue.stats(session, now=now, alive_since=now - beat)
    waited = stats.oldest_waiting_s
    if waited is not None and waited > settings.alert_queue_age_s:
        waiting = stats.by_status.get("queued", 0) + stats.by_status.get("retrying", 0)
        body = (
            f"The oldest due run has waited {waited / 60:.0f} minutes; {waiting} runs are "
            f"waiting and {stats.workers_alive} workers are alive. Start workers, or see "
            "`levqor verify`."
        )
        return [
            await alerts.record(
                session, settings, "critical", "Runs are waiting too long", body, key=QUEUE_STUCK
            )
        ]
    return [
        await alerts.resolve(
            session, settings, QUEUE_STUCK, "Runs are moving again", "The queue is draining."
        )
    ]


async def _workers(
    session: AsyncSession, settings: Settings, now: datetime
) -> list[alerts.Recorded | None]:
    beat = timedelta(seconds=settings.worker_heartbeat_s * 3)
    silent = await queue.silent_workers(session, silent_since=now - beat)
    found: list[alerts.Recorded | None] = []
    for worker in silent:
        body = (
            f"Worker {worker.id} on {worker.host} (pid {worker.pid}) last beat at "
            f"{worker.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC and did not stop cleanly: its "
            "running jobs will be taken over when their leases expire."
        )
        found.append(
            await alerts.record(
                session,
                settings,
                "warning",
                f"Worker {worker.host}:{worker.pid} went silent",
                body,
                key=SILENT_WORKER + worker.id,
            )
        )
    still = {SILENT_WORKER + worker.id for worker in silent}
    for key in await _open_keys(session, SILENT_WORKER):
        if key not in still:
            found.append(
                await alerts.resolve(
                    session,
                    settings,
                    key,
                    "A silent worker is gone",
                    f"{key.removeprefix(SILENT_WORKER)} beats again or was removed.",
                )
            )
    return found


async def _open_keys(session: AsyncSession, prefix: str) -> list[str]:
    rows = await session.scalars(
        select(Alert.key).where(Alert.key.startswith(prefix), Alert.resolved_at.is_(None))
    )
    return [key for key in rows if key]


async def _dead_letters(
    session: AsyncSession, settings: Settings, now: datetime
) -> alerts.Recorded | None:
    """The last complete window's failed runs, summed up in one alert."""
    window = settings.alert_dead_letter_window_s
    end = datetime.fromtimestamp(now.timestamp() // window * window, UTC)
    start = end - timedelta(seconds=window)
    failed = await queue.failed_between(session, since=start, until=end)
    if not failed:
        return None
    total = sum(count for _workflow, count in failed)
    top = ", ".join(f"{workflow} ({count})" for workflow, count in failed[:5])
    more = f" and {len(failed) - 5} more workflows" if len(failed) > 5 else ""
    body = (
        f"{total} runs failed into the dead-letter queue between {start:%H:%M} and "
        f"{end:%H:%M} UTC: {top}{more}. Their owners can replay them from /app/dead-letters."
    )
    return await alerts.record(
        session,
        settings,
        "warning",
        f"{total} runs failed",
        body,
        key=f"dead_letters:{start.isoformat()}",
        once=True,
    )


async def _spend_pauses(
    session: AsyncSession, settings: Settings, now: datetime
) -> list[alerts.Recorded | None]:
    found: list[alerts.Recorded | None] = []
    for pause in await spend_guard.pauses_since(session, since=now - LOOK_BACK):
        who = f"user {pause.user_id}" if pause.user_id else "everyone (the server's limit)"
        body = (
            f"LLM calls are paused for {who} until {pause.until:%Y-%m-%d %H:%M} UTC: "
            f"${pause.spent_micro_usd / 1e6:.2f} spent today against a limit of "
            f"${pause.limit_micro_usd / 1e6:.2f}. Lift it from /admin if it should go on."
        )
        found.append(
            await alerts.record(
                session,
                settings,
                "warning",
                "LLM spend paused",
                body,
                key=f"spend_pause:{pause.id}",
                once=True,
            )
        )
    return found


async def _payouts(
    session: AsyncSession, settings: Settings, now: datetime
) -> list[alerts.Recorded | None]:
    """A payout that failed, or one still unsure an hour after it was set aside (Stripe
    answered 5xx or not at all: each run retries it under its key, but someone should
    look at Stripe's dashboard)."""
    found: list[alerts.Recorded | None] = []
    for payout in await partners.recent_payouts(session, limit=50):
        money = (
            f"Payout {payout.id} of {payout.amount_cents / 100:.2f} to partner {payout.partner_id}"
        )
        if payout.status == "failed" and payout.created_at >= now - LOOK_BACK:
            title, key = "A partner payout failed", f"payout_failed:{payout.id}"
            body = f"{money} failed: {payout.failure or 'no reason given'}."
        elif payout.status == "processing" and payout.created_at < now - UNSURE_AFTER:
            title, key = "A partner payout is unsure", f"payout_unsure:{payout.id}"
            body = (
                f"{money} has had no clear answer from Stripe since "
                f"{payout.created_at:%Y-%m-%d %H:%M} UTC; each run sends it again under the "
                "same idempotency key. Check the transfer in Stripe's dashboard."
            )
        else:
            continue
        found.append(
            await alerts.record(session, settings, "warning", title, body, key=key, once=True)
        )
    return found


async def _flagged_referrals(
    session: AsyncSession, settings: Settings, now: datetime
) -> list[alerts.Recorded | None]:
    """A referral the fraud guard flagged: its commission waits for a decision."""
    found: list[alerts.Recorded | None] = []
    for referral in await fraud.referrals(session, status=fraud.FLAGGED, limit=50):
        if referral.at < now - LOOK_BACK:
            continue
        signals = ", ".join(str(signal["name"]) for signal in referral.signals)
        body = (
            f"The referral of {referral.user_id} by partner {referral.partner_id} scored "
            f"{referral.score} ({signals}); its commission is held until an admin approves "
            "or rejects it on /admin."
        )
        found.append(
            await alerts.record(
                session,
                settings,
                "warning",
                "A referral was flagged",
                body,
                key=f"referral_flagged:{referral.user_id}",
                once=True,
            )
        )
    return found


def tick_task(db: Database, settings: Settings, *, every_s: float = 60) -> TickTask:
    """For the scheduler: the checks at most every `every_s`."""

    async def watch() -> object:
        return await check(db, settings)

    return at_most_every(every_s, watch)
