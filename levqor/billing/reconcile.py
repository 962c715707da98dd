"""Reconciliation: apply every Stripe event the webhook missed.

Stripe retries a webhook delivery for three days, but an endpoint that was down longer,
misconfigured, or a secret rotated at the wrong moment loses events. `reconcile` lists
the events Stripe made since a time (`/v1/events`, every page) and applies each one not
applied yet: the ids stored in `stripe_events` make an event count once, whether it came
by webhook or here. The scheduler runs it hourly from where the last run started (an
hour's overlap); `levqor billing reconcile --since TIME` reaches further back (Stripe
keeps 30 days). Each run leaves an audit row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select

from levqor.audit import service as audit
from levqor.audit.models import AuditEntry
from levqor.billing import webhooks
from levqor.billing.gateway import StripeGateway
from levqor.billing.models import StripeEvent
from levqor.config import Settings
from levqor.db.base import utcnow
from levqor.db.engine import Database
from levqor.logging import get_logger
from levqor.periodic import TickTask, at_most_every

log = get_logger("levqor.billing.reconcile")

KEPT_BY_STRIPE = timedelta(days=30)
OVERLAP = timedelta(hours=1)
FIRST_LOOK_BACK = timedelta(days=3)  # no run before: as far back as Stripe retries
ACTION = "billing_reconciled"


@dataclass
class Reconciled:
    since: datetime
    seen: int = 0
    applied: list[str] = field(default_factory=list)  # event ids applied now


async def reconcile(
    db: Database,
    stripe: StripeGateway,
    settings: Settings,
    *,
    since: datetime | None = None,
    actor: str = "system",
) -> Reconciled:
    started = utcnow()
    since = max(since or await _default_since(db, started), started - KEPT_BY_STRIPE)
    found = await stripe.events_since(since, sorted(webhooks.HANDLERS))
    report = Reconciled(since=since, seen=len(found))
    async with db.session(write=False) as session:
        known = set(
            await session.scalars(
                select(StripeEvent.id).where(StripeEvent.id.in_([e["id"] for e in found]))
            )
        )
    for event in found:
        if event["id"] in known:
            continue
        if await webhooks.receive_event(db, stripe, settings, event):
            report.applied.append(event["id"])
            log.info("stripe_event_reconciled", event_id=event["id"], type=event.get("type"))
    async with db.session(write=True) as session, session.begin():
        await audit.record(
            session,
            actor=actor,
            action=ACTION,
            detail={
                "since": since.isoformat(),
                "started": started.isoformat(),
                "seen": report.seen,
                "applied": len(report.applied),
            },
        )
    return report


async def _default_since(db: Database, now: datetime) -> datetime:
    """Where the last run started, less an hour's overlap; three days back at first."""
    async with db.session(write=False) as session:
        last = await session.scalar(
            select(AuditEntry.detail)
            .where(AuditEntry.action == ACTION)
            .order_by(AuditEntry.id.desc())
            .limit(1)
        )
    if isinstance(last, dict) and last.get("started"):
        return datetime.fromisoformat(str(last["started"])) - OVERLAP
    return now - FIRST_LOOK_BACK


def tick_task(
    db: Database, stripe: StripeGateway, settings: Settings, *, every_s: float = 3600
) -> TickTask:
    """For the scheduler: reconcile at most every `every_s` (when Stripe is configured)."""

    async def run() -> object:
        return await reconcile(db, stripe, settings)

    return at_most_every(every_s, run)
