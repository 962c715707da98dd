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

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from levqor import events, mail
from levqor.accounts import service as accounts
from levqor.accounts.models import User
from levqor.audit import service as audit
from levqor.billing import plans, refunds, service
from levqor.billing import stripe_views as views
from levqor.billing.events import ConnectAccountUpdated, PaymentRecorded
from levqor.billing.gateway import StripeGateway
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
from levqor.logging import get_logger

if TYPE_CHECKING:
    from levqor.runtime import Runtime

log = get_logger("levqor.billing")

Json = views.Json
Handler = Callable[[AsyncSession, Json, Settings, datetime | None], Awaitable[None]]


async def receive(runtime: Runtime, *, payload: bytes, signature: str | None) -> bool:
    """A webhook delivery, end to end; False when the event was applied before."""
    event = runtime.stripe.verify_event(payload, signature)
    return await receive_event(runtime.db, runtime.stripe, runtime.settings, event)


async def receive_event(
    db: Database, stripe: StripeGateway, settings: Settings, event: dict[str, Any]
) -> bool:
    """Apply one Stripe event (delivered, or found by `reconcile`) in its own transaction,
    then send what it asked to send once committed (an e-mail); False if applied before.

    A subscription still billing an account erased here is cancelled at Stripe first:
    if that fails the error answers the delivery, so Stripe sends the event again."""
    orphan = await orphaned_subscription(db, event)
    if orphan is not None:
        await stripe.cancel_subscription(orphan)
    async with db.session(write=True) as session:
        async with session.begin():
            applied = await apply(session, event=event, settings=settings, cancelled_orphan=orphan)
        notices: list[Notice] = session.info.pop(NOTICES, [])
    for notice in notices:
        await _send(settings, notice)
    return applied


NOTICES = "levqor_billing_notices"


@dataclass(frozen=True)
class Notice:
    """An e-mail to a customer, sent once the event that caused it is committed."""

    to: str
    subject: str
    text: str


def _notify(session: AsyncSession, notice: Notice) -> None:
    session.info.setdefault(NOTICES, []).append(notice)


async def _send(settings: Settings, notice: Notice) -> None:
    """Best effort: the event is applied whatever the mail server says."""
    if not mail.configured(settings):
        log.warning("billing_notice_not_sent", reason="mail is not configured")
        return
    try:
        await mail.send(settings, to=notice.to, subject=notice.subject, text=notice.text)
    except mail.MailFailed as exc:
        log.warning("billing_notice_not_sent", reason=exc.detail)


async def orphaned_subscription(db: Database, event: dict[str, Any]) -> str | None:
    """The subscription an event shows still billing an account erased here (it was
    bought while the erasure ran, say): the caller cancels it at Stripe before applying
    the event, so an erased person is never charged again. Only an account this server
    erased counts: another server sharing the Stripe account has users unknown here."""
    subscription, user_id = views.billing_subscription(event)
    if subscription is None or user_id is None:
        return None
    async with db.session(write=False) as session:
        erased = await audit.was_erased(session, user_id=user_id)
    return subscription if erased else None


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
        await handler(session, obj, settings, views.from_unix(event.get("created")))
    return True


async def _checkout_completed(
    session: AsyncSession, obj: Json, settings: Settings, at: datetime | None
) -> None:
    checkout = views.Checkout.of(obj)
    user_id = await _user_for(session, checkout.owner)
    if user_id is None:
        return
    if checkout.customer:
        await service.remember_customer(session, user_id=user_id, customer_id=checkout.customer)
    if checkout.mode == "subscription" and checkout.subscription_id:
        subscription = views.StripeSubscription(
            id=checkout.subscription_id,
            owner=checkout.owner,
            customer=checkout.customer,
            status="active",
            plan=checkout.plan or plans.FREE,
            price_plan=None,
            cancel_at_period_end=False,
            current_period_end=None,
        )
        await _save_subscription(session, subscription, user_id=user_id, at=at)
        return
    pack = plans.PACKS.get(checkout.pack or "")
    if not checkout.paid or pack is None:
        return  # not paid yet (a delayed method: `async_payment_succeeded` comes later)
    if await session.scalar(select(Payment.id).where(Payment.checkout_session == checkout.id)):
        return  # granted already (completed paid, then the delayed-payment event too)
    payment = Payment(
        user_id=user_id,
        kind="pack",
        product=pack.name,
        amount_cents=checkout.amount_cents,
        currency=checkout.currency or settings.billing_currency,
        credits=pack.credits,
        payment_intent=checkout.payment_intent,
        checkout_session=checkout.id,
    )
    await _record_payment(session, payment, reason=service.PURCHASE)


async def _invoice_paid(
    session: AsyncSession, obj: Json, settings: Settings, _at: datetime | None
) -> None:
    """A paid invoice: its money recorded, and the credits of what it bills granted.

    The plan is read from what the invoice bills (its line's price), so a plan changed
    in Stripe's portal grants the new plan's credits; then from our copy of the
    subscription, then from the checkout's metadata. See `invoice_credits` for what a
    proration grants."""
    invoice = views.Invoice.of(obj, settings.stripe_price_plans)
    user_id = await _user_for(session, invoice.owner)
    if user_id is None or not invoice.subscription_id:
        return
    known = await session.get(Subscription, invoice.subscription_id)
    name = invoice.billed_plan() or (known.plan if known else None) or invoice.plan
    plan = plans.PLANS.get(name or "")
    currency = invoice.currency or settings.billing_currency
    amount = invoice.amount_paid_cents
    session.add(
        Invoice(
            id=invoice.id,
            user_id=user_id,
            subscription_id=invoice.subscription_id,
            number=invoice.number,
            amount_paid_cents=amount,
            currency=currency,
            period_start=invoice.period_start,
            period_end=invoice.period_end,
        )
    )
    if plan is None:
        log.warning("stripe_invoice_unknown_plan", invoice_id=invoice.id)
        return
    credits = invoice_credits(invoice, plan)
    if amount <= 0 and credits <= 0:
        return  # a trial's invoice, or a downgrade's credit: recorded, no credits
    payment = Payment(
        user_id=user_id,
        kind="subscription",
        product=plan.name,
        amount_cents=max(amount, 0),
        currency=currency,
        credits=credits,
        payment_intent=invoice.payment_intent,
        invoice_id=invoice.id,
    )
    await _record_payment(session, payment, reason=service.PLAN_CREDITS)


def invoice_credits(invoice: views.Invoice, plan: plans.Plan) -> int:
    """The credits an invoice grants.

    - A line billing a period (not a proration, amount above zero) grants `plan`'s
      month, whatever part of it a customer balance paid; a trial's line (zero) none.
    - Proration lines (a plan changed mid-period) are converted at their own plan's
      rate, credits per cent: an upgrade halfway from starter to business nets
      -1,000 + 25,000 = 24,000 credits, granted now. A net negative (a downgrade)
      grants nothing and takes nothing back: Stripe keeps the unused money as the
      customer's balance, which pays their next invoices.
    - An invoice without lines (older payloads) grants the month if it took money.
    """
    if not invoice.lines:
        return plan.credits_per_month if invoice.amount_paid_cents > 0 else 0
    period = any(not line.proration and line.amount_cents > 0 for line in invoice.lines)
    prorated = Fraction(0)
    for line in invoice.lines:
        line_plan = plans.PLANS.get(line.plan or "")
        if line.proration and line_plan is not None and line_plan.price_cents > 0:
            prorated += Fraction(line.amount_cents * line_plan.credits_per_month) / (
                line_plan.price_cents
            )
    return (plan.credits_per_month if period else 0) + max(0, math.floor(prorated))


async def _invoice_failed(
    session: AsyncSession, obj: Json, settings: Settings, _at: datetime | None
) -> None:
    """A subscription's payment failed: no credits; the subscription is past due (the
    plan stays while Stripe retries the card), and the customer is told by e-mail."""
    invoice = views.Invoice.of(obj, settings.stripe_price_plans)
    user_id = await _user_for(session, invoice.owner)
    if user_id is None or not invoice.subscription_id:
        return
    known = await session.get(Subscription, invoice.subscription_id)
    if known is not None and known.status != "canceled":
        known.status = "past_due"
    await audit.record(
        session,
        actor="stripe",
        action="invoice_payment_failed",
        object_id=user_id,
        detail={"invoice_id": invoice.id, "subscription_id": invoice.subscription_id},
    )
    user = await session.get(User, user_id)
    if user is not None:
        _notify(
            session,
            Notice(
                to=user.email,
                subject="Your Levqor payment did not go through",
                text=(
                    "We could not take the payment for your Levqor plan. Stripe will try "
                    "the card again over the next days; to pay now or change the card, "
                    f"open billing: {settings.public_url}/app/billing\n\n"
                    "Your plan stays active meanwhile. No credits arrive until it is paid."
                ),
            ),
        )


async def _checkout_payment_failed(
    session: AsyncSession, obj: Json, _settings: Settings, _at: datetime | None
) -> None:
    """A delayed payment method (a bank debit) failed after the checkout: nothing was
    granted, so nothing is taken; recorded for the operator."""
    checkout = views.Checkout.of(obj)
    user_id = await _user_for(session, checkout.owner)
    if user_id is not None:
        await audit.record(
            session,
            actor="stripe",
            action="checkout_payment_failed",
            object_id=user_id,
            detail={"checkout_session": checkout.id, "pack": checkout.pack},
        )


async def _refund_changed(
    session: AsyncSession, obj: Json, settings: Settings, at: datetime | None
) -> None:
    """`refund.updated` or `refund.failed`: a refund Stripe failed or cancelled gives
    back what it took; one that went through is recorded if it was not yet."""
    refund = views.MoneyBack.of(obj)
    if refund.status in ("failed", "canceled"):
        await refunds.undo(session, refund_id=refund.id, status=refund.status)
        return
    await _refund_created(session, obj, settings, at)


async def _subscription_changed(
    session: AsyncSession, obj: Json, settings: Settings, at: datetime | None
) -> None:
    subscription = views.StripeSubscription.of(obj, settings.stripe_price_plans)
    user_id = await _user_for(session, subscription.owner)
    if user_id is not None:
        await _save_subscription(session, subscription, user_id=user_id, at=at)


async def _refund_created(
    session: AsyncSession, obj: Json, _settings: Settings, _at: datetime | None
) -> None:
    """A refund made in Stripe's dashboard (or ours, if its event comes first)."""
    refund = views.MoneyBack.of(obj)
    if refund.status in ("failed", "canceled"):
        return
    if await session.get(Refund, refund.id) is not None:
        return  # recorded already
    payment = await _payment_for(session, refund)
    if payment is None:
        log.warning("stripe_refund_for_unknown_payment", refund_id=refund.id)
        return
    amount = min(refund.amount_cents, payment.amount_cents - payment.refunded_cents)
    if amount > 0:
        reason = refund.note or "refunded in Stripe"
        await refunds.record(session, payment.id, refund.id, amount, reason, "stripe")


async def _dispute_opened(
    session: AsyncSession, obj: Json, _settings: Settings, _at: datetime | None
) -> None:
    """A chargeback: the money is gone from the balance, so the payment's credits and
    its partner's commission go too, for the disputed part of what was not refunded
    already (a refund before the dispute took its own share)."""
    dispute = views.MoneyBack.of(obj)
    if await session.get(Dispute, dispute.id) is not None:
        return
    found = await _payment_for(session, dispute)
    if found is None:
        log.warning("stripe_dispute_for_unknown_payment", dispute_id=dispute.id)
        return
    payment = await session.get(Payment, found.id, with_for_update=True)
    assert payment is not None
    before = payment.refunded_cents + payment.disputed_cents
    amount = max(0, min(dispute.amount_cents, payment.amount_cents - before))
    payment.disputed_cents += amount
    taken, commission = await refunds.take_back_share(
        session, payment, before_cents=before, after_cents=before + amount, reason=service.DISPUTE
    )
    session.add(
        Dispute(
            id=dispute.id,
            payment_id=payment.id,
            user_id=payment.user_id,
            amount_cents=amount,
            currency=payment.currency,
            reason=str(dispute.reason or "general")[:64],
            status=str(dispute.status or "needs_response")[:32],
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
            "dispute_id": dispute.id,
            "payment_id": payment.id,
            "amount_cents": amount,
            "reason": dispute.reason,
            "credits_reversed": taken,
            "commission_reversed_cents": commission,
        },
    )


async def _dispute_closed(
    session: AsyncSession, obj: Json, _settings: Settings, _at: datetime | None
) -> None:
    """Won: the money came back, and so do the credits taken (repaying first any owed)
    and the partner's commission; the payment counts as revenue again. Lost: it stays."""
    dispute = views.MoneyBack.of(obj)
    known = await session.get(Dispute, dispute.id, with_for_update=True)
    if known is None or known.closed_at is not None:
        return
    known.status = str(dispute.status or "lost")[:32]
    known.closed_at = utcnow()
    returned = 0
    if known.status == "won":
        payment = await session.get(Payment, known.payment_id, with_for_update=True)
        if payment is not None:
            payment.disputed_cents = max(0, payment.disputed_cents - known.amount_cents)
        returned = await refunds.give_back(
            session,
            user_id=known.user_id,
            payment_id=known.payment_id,
            credits=known.credits_reversed,
            commission_cents=known.commission_reversed_cents,
            reason=service.DISPUTE_WON,
        )
    await audit.record(
        session,
        actor="stripe",
        action="dispute_closed",
        object_id=known.user_id,
        detail={
            "dispute_id": known.id,
            "status": known.status,
            "credits_returned": returned,
            "commission_returned_cents": known.commission_reversed_cents
            if known.status == "won"
            else 0,
        },
    )


async def _account_updated(
    session: AsyncSession, obj: Json, _settings: Settings, _at: datetime | None
) -> None:
    """A connected account changed (Connect): whether it may receive payouts now."""
    if obj.get("id"):
        updated = ConnectAccountUpdated(str(obj["id"]), bool(obj.get("payouts_enabled")))
        await events.publish(session, updated)


async def _payment_for(session: AsyncSession, money: views.MoneyBack) -> Payment | None:
    """The payment a refund or dispute is about: by our metadata, else its intent."""
    if money.payment_id:
        found = await session.get(Payment, money.payment_id)
        if found is not None:
            return found
    if not money.payment_intent:
        return None
    return cast(
        Payment | None,
        await session.scalar(select(Payment).where(Payment.payment_intent == money.payment_intent)),
    )


async def _record_payment(session: AsyncSession, payment: Payment, *, reason: str) -> None:
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
    session: AsyncSession,
    subscription: views.StripeSubscription,
    *,
    user_id: str,
    at: datetime | None,
) -> None:
    """Insert or update our copy, and move the user to the plan it gives (or back to
    free when it stops billing). An event older than the one that last changed it is
    late news and changes nothing; a cancelled subscription stays cancelled."""
    known = await session.get(Subscription, subscription.id)
    if known is not None and (
        known.status == "canceled"
        or (at and known.changed_by_event_at and at < known.changed_by_event_at)
    ):
        return
    plan = subscription.price_plan or subscription.plan or (known.plan if known else None)
    if plan not in plans.PLANS:
        log.warning("stripe_subscription_unknown_plan", subscription_id=subscription.id)
        plan = plans.FREE
    status = subscription.status
    if known is None:
        known = Subscription(id=subscription.id, user_id=user_id, plan=plan, status=status)
        session.add(known)
    known.plan, known.status = plan, status
    known.customer_id = subscription.customer or known.customer_id
    known.cancel_at_period_end = subscription.cancel_at_period_end
    known.changed_by_event_at = at or known.changed_by_event_at
    if subscription.current_period_end:
        known.current_period_end = subscription.current_period_end
    await accounts.set_plan(
        session, user_id=user_id, plan=plan if subscription.live else plans.FREE
    )


async def _user_for(session: AsyncSession, owner: views.Owner) -> str | None:
    """The user an object is about: our metadata, else its customer; None (logged) when
    the account is gone."""
    user_id = owner.user_id
    if user_id is None and owner.customer:
        user_id = await session.scalar(
            select(StripeCustomer.user_id).where(StripeCustomer.customer_id == owner.customer)
        )
    if user_id is None or not await _account_exists(session, user_id):
        log.warning("stripe_object_for_unknown_account", kind=owner.kind, id=owner.object_id)
        return None
    return str(user_id)


async def _account_exists(session: AsyncSession, user_id: str) -> bool:
    """By id alone: loading the user would decrypt their address and name for nothing."""
    return await session.scalar(select(User.id).where(User.id == user_id)) is not None


HANDLERS: dict[str, Handler] = {
    "checkout.session.completed": _checkout_completed,
    "checkout.session.async_payment_succeeded": _checkout_completed,
    "checkout.session.async_payment_failed": _checkout_payment_failed,
    "invoice.paid": _invoice_paid,
    "invoice.payment_failed": _invoice_failed,
    "customer.subscription.created": _subscription_changed,
    "customer.subscription.updated": _subscription_changed,
    "customer.subscription.deleted": _subscription_changed,
    "refund.created": _refund_created,
    "refund.updated": _refund_changed,
    "refund.failed": _refund_changed,
    "charge.dispute.created": _dispute_opened,
    "charge.dispute.closed": _dispute_closed,
    "account.updated": _account_updated,
}
