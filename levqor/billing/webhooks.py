"""Stripe's webhook events, applied once each.

The event id goes into `stripe_events` in the same transaction that applies it, so a
redelivered event changes nothing, and one that failed half-way left nothing behind
(Stripe retries it). Events can arrive in any order: an invoice may come before the
checkout session that started its subscription, so the user is found by the metadata
we gave Stripe, or else by the customer id saved before the checkout began.

Both API shapes are read: before 2025-03-31 an invoice names its `subscription` and
`payment_intent` at the top; later ones under `parent.subscription_details` and
`payments`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from levqor import events
from levqor.accounts import service as accounts
from levqor.accounts.models import User
from levqor.audit import service as audit
from levqor.billing import plans, refunds, service
from levqor.billing.events import PaymentRecorded
from levqor.billing.models import (
    Dispute,
    Invoice,
    Payment,
    Refund,
    StripeCustomer,
    StripeEvent,
    Subscription,
)
from levqor.config import Settings
from levqor.db.base import upsert, utcnow
from levqor.db.engine import Database

if TYPE_CHECKING:
    from levqor.runtime import Runtime

log = logging.getLogger(__name__)

Handler = Callable[[AsyncSession, dict[str, Any], Settings, datetime | None], Awaitable[None]]


async def receive(runtime: Runtime, *, payload: bytes, signature: str | None) -> bool:
    """A webhook delivery, end to end; False when the event was applied before.

    A subscription still billing an account erased here is cancelled at Stripe first:
    if that fails the error answers the delivery, so Stripe sends the event again."""
    event = runtime.stripe.verify_event(payload, signature)
    orphan = await orphaned_subscription(runtime.db, event)
    if orphan is not None:
        await runtime.stripe.cancel_subscription(orphan)
    async with runtime.db.session(write=True) as session, session.begin():
        return await apply(session, event=event, settings=runtime.settings, cancelled_orphan=orphan)


async def orphaned_subscription(db: Database, event: dict[str, Any]) -> str | None:
    """The subscription an event shows still billing an account erased here (it was
    bought while the erasure ran, say): the caller cancels it at Stripe before applying
    the event, so an erased person is never charged again. Only an account this server
    erased counts: another server sharing the Stripe account has users unknown here."""
    subscription, user_id = _billing_subscription(event)
    if subscription is None or user_id is None:
        return None
    async with db.session(write=False) as session:
        erased = await audit.was_erased(session, user_id=user_id)
    return subscription if erased else None


def _billing_subscription(event: dict[str, Any]) -> tuple[str | None, str | None]:
    """The subscription an event says bills on, and the user our metadata names."""
    obj = (event.get("data") or {}).get("object") or {}
    kind = event.get("type")
    details = _subscription_details(obj)
    if kind == "checkout.session.completed" and obj.get("mode") == "subscription":
        subscription = obj.get("subscription")
    elif kind in ("customer.subscription.created", "customer.subscription.updated"):
        live = obj.get("status") in service.LIVE_STATUSES
        subscription = obj.get("id") if live else None
    elif kind == "invoice.paid":
        subscription = details.get("subscription") or obj.get("subscription")
    else:
        return None, None
    metadata = obj.get("metadata") or details.get("metadata") or {}
    user_id = metadata.get("user_id") or obj.get("client_reference_id")
    return (str(subscription) if subscription else None), (str(user_id) if user_id else None)


async def apply(
    session: AsyncSession,
    *,
    event: dict[str, Any],
    settings: Settings,
    cancelled_orphan: str | None = None,
) -> bool:
    """Apply `event` in the caller's transaction; False if it was applied before."""
    dialect = session.get_bind().dialect.name
    inserted = await session.execute(
        upsert(dialect, StripeEvent.__table__)
        .values(id=event["id"], type=str(event["type"])[:64], received_at=utcnow())
        .on_conflict_do_nothing()
        .returning(StripeEvent.__table__.c.id)
    )
    if inserted.first() is None:
        return False
    if cancelled_orphan is not None:
        await audit.record(
            session,
            actor="system",
            action="subscription_cancelled",
            detail={"subscription": cancelled_orphan, "why": "the account was erased"},
        )
    handler = HANDLERS.get(event["type"])
    obj = (event.get("data") or {}).get("object") or {}
    if handler is not None and isinstance(obj, dict):
        await handler(session, obj, settings, _from_unix(event.get("created")))
    return True


async def _checkout_completed(
    session: AsyncSession, checkout: dict[str, Any], settings: Settings, at: datetime | None
) -> None:
    user_id = await _user_for(session, checkout)
    if user_id is None:
        return
    if checkout.get("customer"):
        await service.remember_customer(
            session, user_id=user_id, customer_id=str(checkout["customer"])
        )
    metadata = checkout.get("metadata") or {}
    if checkout.get("mode") == "subscription" and checkout.get("subscription"):
        plan = metadata.get("plan") or plans.FREE
        await _save_subscription(
            session,
            {
                "id": checkout["subscription"],
                "customer": checkout.get("customer"),
                "status": "active",
                "metadata": {"plan": plan},
            },
            user_id=user_id,
            at=at,
        )
        return
    pack = plans.PACKS.get(metadata.get("pack") or "")
    if checkout.get("payment_status") != "paid" or pack is None:
        return
    payment = Payment(
        user_id=user_id,
        kind="pack",
        product=pack.name,
        amount_cents=int(checkout.get("amount_total") or 0),
        currency=str(checkout.get("currency") or settings.billing_currency),
        credits=pack.credits,
        payment_intent=checkout.get("payment_intent"),
        checkout_session=checkout["id"],
    )
    await _record_payment(session, payment, reason=service.PURCHASE, settings=settings)


async def _invoice_paid(
    session: AsyncSession, invoice: dict[str, Any], settings: Settings, _at: datetime | None
) -> None:
    details = _subscription_details(invoice)
    subscription_id = details.get("subscription") or invoice.get("subscription")
    metadata = details.get("metadata") or {}
    user_id = await _user_for(session, {**invoice, "metadata": metadata})
    if user_id is None or not subscription_id:
        return
    known = await session.get(Subscription, subscription_id)
    plan = plans.PLANS.get(metadata.get("plan") or (known.plan if known else ""))
    period = _service_period(invoice)
    currency = str(invoice.get("currency") or settings.billing_currency)
    amount = int(invoice.get("amount_paid") or 0)
    session.add(
        Invoice(
            id=invoice["id"],
            user_id=user_id,
            subscription_id=subscription_id,
            number=invoice.get("number"),
            amount_paid_cents=amount,
            currency=currency,
            period_start=period[0],
            period_end=period[1],
        )
    )
    if amount <= 0 or plan is None:
        return  # a trial's or an unknown plan's invoice: recorded, no credits
    payment = Payment(
        user_id=user_id,
        kind="subscription",
        product=plan.name,
        amount_cents=amount,
        currency=currency,
        credits=plan.credits_per_month,
        payment_intent=_payment_intent(invoice),
        invoice_id=invoice["id"],
    )
    await _record_payment(session, payment, reason=service.PLAN_CREDITS, settings=settings)


async def _subscription_changed(
    session: AsyncSession, subscription: dict[str, Any], _settings: Settings, at: datetime | None
) -> None:
    user_id = await _user_for(session, subscription)
    if user_id is not None:
        await _save_subscription(session, subscription, user_id=user_id, at=at)


async def _refund_created(
    session: AsyncSession, refund: dict[str, Any], _settings: Settings, _at: datetime | None
) -> None:
    """A refund made in Stripe's dashboard (or ours, if its event comes first)."""
    if refund.get("status") in ("failed", "canceled"):
        return
    if await session.get(Refund, refund["id"]) is not None:
        return  # recorded already
    metadata = refund.get("metadata") or {}
    payment = await _payment_for(session, refund)
    if payment is None:
        log.warning("stripe refund %s is for no payment recorded here", refund["id"])
        return
    amount = min(int(refund.get("amount") or 0), payment.amount_cents - payment.refunded_cents)
    if amount > 0:
        reason = metadata.get("reason") or "refunded in Stripe"
        await refunds.record(session, payment.id, refund["id"], amount, reason, "stripe")


async def _dispute_opened(
    session: AsyncSession, dispute: dict[str, Any], _settings: Settings, _at: datetime | None
) -> None:
    """A chargeback: the money is gone from the balance, so the payment's credits and
    its partner's commission go too, as for a refund of the disputed amount."""
    if await session.get(Dispute, dispute["id"]) is not None:
        return
    payment = await _payment_for(session, dispute)
    if payment is None:
        log.warning("stripe dispute %s is for no payment recorded here", dispute["id"])
        return
    amount = min(int(dispute.get("amount") or 0), payment.amount_cents)
    taken, commission = await refunds.take_back_share(
        session, payment, before_cents=0, after_cents=amount, reason=service.DISPUTE
    )
    session.add(
        Dispute(
            id=dispute["id"],
            payment_id=payment.id,
            user_id=payment.user_id,
            amount_cents=amount,
            currency=payment.currency,
            reason=str(dispute.get("reason") or "general")[:64],
            status=str(dispute.get("status") or "needs_response")[:32],
            credits_reversed=taken,
            commission_reversed_cents=commission,
        )
    )
    await audit.record(
        session,
        actor="stripe",
        action="dispute_opened",
        object_id=payment.user_id,
        detail={
            "dispute_id": dispute["id"],
            "payment_id": payment.id,
            "amount_cents": amount,
            "reason": dispute.get("reason"),
            "credits_reversed": taken,
            "commission_reversed_cents": commission,
        },
    )


async def _dispute_closed(
    session: AsyncSession, dispute: dict[str, Any], _settings: Settings, _at: datetime | None
) -> None:
    """Won: the money came back, and so do the credits taken (commission stays
    reversed: the partner's share of a disputed sale is not paid). Lost: it stays."""
    known = await session.get(Dispute, dispute["id"], with_for_update=True)
    if known is None or known.closed_at is not None:
        return
    known.status = str(dispute.get("status") or "lost")[:32]
    known.closed_at = utcnow()
    returned = 0
    if known.status == "won" and known.credits_reversed:
        balance = await service.grant(
            session,
            user_id=known.user_id,
            credits=known.credits_reversed,
            reason=service.DISPUTE_WON,
            payment_id=known.payment_id,
        )
        returned = known.credits_reversed if balance is not None else 0
    await audit.record(
        session,
        actor="stripe",
        action="dispute_closed",
        object_id=known.user_id,
        detail={"dispute_id": known.id, "status": known.status, "credits_returned": returned},
    )


async def _payment_for(session: AsyncSession, obj: dict[str, Any]) -> Payment | None:
    """The payment a refund or dispute is about: by our metadata, else its intent."""
    payment_id = (obj.get("metadata") or {}).get("payment_id")
    if payment_id:
        found = await session.get(Payment, payment_id)
        if found is not None:
            return found
    if not obj.get("payment_intent"):
        return None
    return cast(
        Payment | None,
        await session.scalar(
            select(Payment).where(Payment.payment_intent == obj["payment_intent"])
        ),
    )


async def _record_payment(
    session: AsyncSession, payment: Payment, *, reason: str, settings: Settings
) -> None:
    session.add(payment)
    await session.flush()
    await service.grant(
        session,
        user_id=payment.user_id,
        credits=payment.credits,
        reason=reason,
        payment_id=payment.id,
    )
    await events.publish(
        session,
        PaymentRecorded(payment.id, payment.user_id, payment.amount_cents, payment.currency),
    )


async def _save_subscription(
    session: AsyncSession, subscription: dict[str, Any], *, user_id: str, at: datetime | None
) -> None:
    """Insert or update our copy, and move the user to the plan it gives (or back to
    free when it stops billing). An event older than the one that last changed it is
    late news and changes nothing; a cancelled subscription stays cancelled."""
    status = str(subscription.get("status") or "active")
    known = await session.get(Subscription, subscription["id"])
    if known is not None and (
        known.status == "canceled"
        or (at and known.changed_by_event_at and at < known.changed_by_event_at)
    ):
        return
    plan = (
        _plan_of_price(subscription)
        or (subscription.get("metadata") or {}).get("plan")
        or (known.plan if known else None)
    )
    if plan not in plans.PLANS:
        log.warning("subscription %s names no known plan", subscription["id"])
        plan = plans.FREE
    if known is None:
        known = Subscription(id=subscription["id"], user_id=user_id, plan=plan, status=status)
        session.add(known)
    known.plan, known.status = plan, status
    known.customer_id = subscription.get("customer") or known.customer_id
    known.cancel_at_period_end = bool(subscription.get("cancel_at_period_end"))
    known.changed_by_event_at = at or known.changed_by_event_at
    period_end = subscription.get("current_period_end") or _first_item(subscription).get(
        "current_period_end"
    )
    if period_end:
        known.current_period_end = _from_unix(period_end)
    live = status in service.LIVE_STATUSES
    await accounts.set_plan(session, user_id=user_id, plan=plan if live else plans.FREE)


async def _user_for(session: AsyncSession, obj: dict[str, Any]) -> str | None:
    """The user an object is about: our metadata, else its customer; None (logged) when
    the account is gone."""
    user_id = (obj.get("metadata") or {}).get("user_id") or obj.get("client_reference_id")
    if user_id is None and obj.get("customer"):
        user_id = await session.scalar(
            select(StripeCustomer.user_id).where(StripeCustomer.customer_id == obj["customer"])
        )
    if user_id is None or not await _account_exists(session, user_id):
        log.warning("stripe %s %s names no account here", obj.get("object"), obj.get("id"))
        return None
    return str(user_id)


async def _account_exists(session: AsyncSession, user_id: str) -> bool:
    """By id alone: loading the user would decrypt their address and name for nothing."""
    return await session.scalar(select(User.id).where(User.id == user_id)) is not None


def _subscription_details(obj: dict[str, Any]) -> dict[str, Any]:
    details = (obj.get("parent") or {}).get("subscription_details")
    return details or obj.get("subscription_details") or {}


def _payment_intent(invoice: dict[str, Any]) -> str | None:
    if invoice.get("payment_intent"):
        return str(invoice["payment_intent"])
    for paid in (invoice.get("payments") or {}).get("data") or []:
        intent = (paid.get("payment") or {}).get("payment_intent")
        if intent:
            return str(intent)
    return None


def _service_period(invoice: dict[str, Any]) -> tuple[datetime | None, datetime | None]:
    lines = (invoice.get("lines") or {}).get("data") or []
    period = (lines[0].get("period") if lines else None) or {
        "start": invoice.get("period_start"),
        "end": invoice.get("period_end"),
    }
    return _from_unix(period.get("start")), _from_unix(period.get("end"))


def _plan_of_price(subscription: dict[str, Any]) -> str | None:
    """The plan a subscription's price names by its lookup key: how a plan changed in
    Stripe's customer portal is known (the subscription's metadata keeps the first
    plan). Prices made at checkout have none; an operator who offers plan changes in
    the portal gives its prices the plans' names as lookup keys."""
    lookup_key = (_first_item(subscription).get("price") or {}).get("lookup_key")
    return lookup_key if lookup_key in plans.PLANS else None


def _first_item(subscription: dict[str, Any]) -> dict[str, Any]:
    items = (subscription.get("items") or {}).get("data") or []
    return items[0] if items else {}


def _from_unix(value: Any) -> datetime | None:
    return datetime.fromtimestamp(int(value), UTC) if value else None


HANDLERS: dict[str, Handler] = {
    "checkout.session.completed": _checkout_completed,
    "invoice.paid": _invoice_paid,
    "customer.subscription.created": _subscription_changed,
    "customer.subscription.updated": _subscription_changed,
    "customer.subscription.deleted": _subscription_changed,
    "refund.created": _refund_created,
    "charge.dispute.created": _dispute_opened,
    "charge.dispute.closed": _dispute_closed,
}
