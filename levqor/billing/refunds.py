"""Refunds an admin issues: money back through Stripe, then, in one transaction, the
refund recorded, the payment's credits and its partner's commission taken back, and an
audit entry. Refunds made in Stripe's dashboard arrive as `refund.created` events and
are recorded the same way (`webhooks.py`); the refund id makes each count once.

An admin's request is written first (`refund_requests`), then Stripe is called with its
id as the idempotency key: the request's `Idempotency-Key` names it, so a retry after a
timeout asks for the same refund even when Stripe's `refund.created` recorded it in
between (a key made of the amount refunded so far would have changed, and paid twice).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from levqor import errors, events
from levqor.audit import service as audit
from levqor.billing import service
from levqor.billing.events import PaymentLost, PaymentRegained
from levqor.billing.models import Payment, Refund, RefundRequest
from levqor.db.base import new_id

if TYPE_CHECKING:
    from levqor.runtime import Runtime


class NotRefundable(errors.Conflict):
    code = "not_refundable"


@dataclass(frozen=True)
class Issued:
    refund: Refund
    commission_reversed_cents: int
    repeated: bool  # Stripe had already made this refund; nothing changed here


async def issue(
    runtime: Runtime,
    *,
    payment_id: str,
    amount_cents: int | None,
    reason: str,
    admin_id: str,
    request_key: str | None = None,
) -> Issued:
    """Refund through Stripe. The request is written first and its id keys the Stripe
    call: the same `request_key` (the request's `Idempotency-Key`) asks Stripe for the
    same refund, whatever was refunded in between."""
    async with runtime.db.session(write=True) as session, session.begin():
        request = await _request(
            session,
            request_id=_request_id(admin_id, request_key),
            payment_id=payment_id,
            amount_cents=amount_cents,
            reason=reason,
            admin_id=admin_id,
        )
        payment = await session.get(Payment, payment_id)
        assert payment is not None
    intent = payment.payment_intent
    if intent is None and payment.invoice_id is not None:
        # Invoices since API 2025-03-31 name their payment only under `payments`,
        # which webhook payloads leave out: ask Stripe.
        intent = await runtime.stripe.invoice_payment_intent(payment.invoice_id)
    if intent is None:
        raise NotRefundable("Stripe names no payment intent for this payment; refund it there.")
    refund_id = await runtime.stripe.refund(
        payment_intent=intent,
        amount_cents=request.amount_cents,
        metadata={"payment_id": payment.id, "reason": request.reason[:500]},
        key=request.id,
    )
    async with runtime.db.session(write=True) as session, session.begin():
        await session.execute(
            update(RefundRequest).where(RefundRequest.id == request.id).values(refund_id=refund_id)
        )
        known = await session.get(Refund, refund_id)
        if known is not None:
            return Issued(known, 0, repeated=True)
        return await record(
            session, payment_id, refund_id, request.amount_cents, request.reason, admin_id
        )


def _request_id(admin_id: str, request_key: str | None) -> str:
    if request_key is None:
        return new_id("rfq")
    digest = hashlib.sha256(f"{admin_id}:{request_key}".encode()).hexdigest()
    return f"rfq_{digest[:40]}"


async def _request(
    session: AsyncSession,
    *,
    request_id: str,
    payment_id: str,
    amount_cents: int | None,
    reason: str,
    admin_id: str,
) -> RefundRequest:
    """The refund request under this id: made now (the amount checked against what is
    left), or the one made before, which must be for the same payment and amount."""
    known = await session.get(RefundRequest, request_id)
    if known is not None:
        if known.payment_id != payment_id or amount_cents not in (None, known.amount_cents):
            raise errors.Conflict(
                "This Idempotency-Key was used for another refund; use a new key."
            )
        return known
    payment = await session.get(Payment, payment_id)
    if payment is None:
        raise errors.NotFound(f"No payment {payment_id}.")
    left = payment.amount_cents - payment.refunded_cents
    amount = left if amount_cents is None else amount_cents
    if left <= 0:
        raise NotRefundable("This payment has been refunded in full.")
    if not 0 < amount <= left:
        raise errors.InvalidRequest(f"amount must be between 1 and {left} cents.")
    request = RefundRequest(
        id=request_id,
        payment_id=payment_id,
        user_id=payment.user_id,
        amount_cents=amount,
        reason=reason,
        requested_by=admin_id,
    )
    session.add(request)
    return request


async def record(
    session: AsyncSession,
    payment_id: str,
    refund_id: str,
    amount: int,
    reason: str,
    admin_id: str,
) -> Issued:
    """A refund Stripe made (asked for here, or in Stripe's dashboard), in the
    caller's transaction: the payment marked, credits and commission taken back,
    audited by `admin_id` ("stripe" when made there)."""
    payment = await session.get(Payment, payment_id, with_for_update=True)
    assert payment is not None
    before = payment.refunded_cents
    payment.refunded_cents += amount
    payment.status = (
        "refunded" if payment.refunded_cents >= payment.amount_cents else "partially_refunded"
    )
    taken, reversed_cents = await take_back_share(
        session, payment, before_cents=before, after_cents=before + amount, reason=service.REFUND
    )
    refund = Refund(
        id=refund_id,
        payment_id=payment.id,
        user_id=payment.user_id,
        amount_cents=amount,
        currency=payment.currency,
        credits_reversed=taken,
        commission_reversed_cents=reversed_cents,
        reason=reason,
        issued_by=admin_id,
    )
    session.add(refund)
    await audit.record(
        session,
        actor=admin_id,
        action="refund_issued",
        object_id=payment.user_id,
        detail={
            "payment_id": payment.id,
            "refund_id": refund_id,
            "amount_cents": amount,
            "currency": payment.currency,
            "credits_reversed": taken,
            "commission_reversed_cents": reversed_cents,
        },
    )
    await session.flush()
    return Issued(refund, reversed_cents, repeated=False)


async def take_back_share(
    session: AsyncSession,
    payment: Payment,
    *,
    before_cents: int,
    after_cents: int,
    reason: str,
) -> tuple[int, int]:
    """Money of `payment` lost (refunded or disputed, its total going from
    `before_cents` to `after_cents`): take back that share of its credits and of its
    partner's commission. The credits and the commission cents taken."""
    credits = service.share_of(payment.credits, payment.amount_cents, before_cents, after_cents)
    taken = await service.take_back(
        session, user_id=payment.user_id, credits=credits, reason=reason, payment_id=payment.id
    )
    lost = PaymentLost(payment.id, payment.amount_cents, before_cents, after_cents)
    answers = await events.publish(session, lost)
    return taken, sum(cents for cents in answers if isinstance(cents, int))


async def give_back(
    session: AsyncSession,
    *,
    user_id: str,
    payment_id: str,
    credits: int,
    commission_cents: int,
    reason: str,
) -> int:
    """Undo `take_back_share` (a refund that failed, a dispute won): the credits it took
    (repaying first any owed) and the partner's commission. The credits given back, 0
    when the account is gone."""
    balance = None
    if credits:
        balance = await service.grant(
            session, user_id=user_id, credits=credits, reason=reason, payment_id=payment_id
        )
    if commission_cents:
        await events.publish(session, PaymentRegained(payment_id, commission_cents))
    return credits if balance is not None else 0


async def undo(session: AsyncSession, *, refund_id: str, status: str) -> Refund | None:
    """A refund Stripe failed or cancelled after making it: the money stayed with us, so
    the payment counts it again, and the credits and commission it took come back.
    None when the refund is unknown here or was undone already."""
    refund = await session.get(Refund, refund_id, with_for_update=True)
    if refund is None or refund.status != "succeeded":
        return None
    payment = await session.get(Payment, refund.payment_id, with_for_update=True)
    assert payment is not None
    refund.status = status[:16]
    payment.refunded_cents = max(0, payment.refunded_cents - refund.amount_cents)
    payment.status = "partially_refunded" if payment.refunded_cents else "succeeded"
    await give_back(
        session,
        user_id=payment.user_id,
        payment_id=payment.id,
        credits=refund.credits_reversed,
        commission_cents=refund.commission_reversed_cents,
        reason=service.REFUND_UNDONE,
    )
    await audit.record(
        session,
        actor="stripe",
        action="refund_undone",
        object_id=payment.user_id,
        detail={
            "refund_id": refund.id,
            "status": refund.status,
            "amount_cents": refund.amount_cents,
            "credits_returned": refund.credits_reversed,
            "commission_returned_cents": refund.commission_reversed_cents,
        },
    )
    return refund


async def recent(session: AsyncSession, *, limit: int = 20) -> list[Refund]:
    """The latest refunds, newest first (made here or in Stripe's dashboard)."""
    return list(
        await session.scalars(select(Refund).order_by(Refund.created_at.desc()).limit(limit))
    )
