"""Tables owned by billing: the credit ledger, Stripe customers, subscriptions,
payments, invoices, refunds and the events already applied."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, Date, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from levqor.db.base import ENCRYPTED, Base, Sealed, UTCDateTime, new_id, utcnow

# A big integer on PostgreSQL (a ledger outgrows 2^31 rows), the rowid on SQLite.
LedgerId = BigInteger().with_variant(Integer, "sqlite")


class CreditEntry(Base):
    """One change to a user's credit balance: `delta` credits (+ granted or bought,
    - spent), the balance it left, why, and what it paid for. `users.credits` is the
    running balance the hot path checks; the ledger is the record that explains it.

    `user_id` carries no foreign key on purpose: the ledger outlives an erased account
    (tax law keeps money records), with the user id replaced by a random tombstone.
    """

    __tablename__ = "credit_ledger"
    __table_args__ = (Index("ix_credit_ledger_user_id_id", "user_id", "id"),)

    id: Mapped[int] = mapped_column(LedgerId, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    delta: Mapped[int] = mapped_column(Integer)
    balance_after: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(String(32))
    job_id: Mapped[str | None] = mapped_column(String(32))
    payment_id: Mapped[str | None] = mapped_column(String(32))
    # Set on rows that change the credits owed (`refund_owed`, `owed_repaid`): the debt left.
    owed_after: Mapped[int | None] = mapped_column(Integer)


def kept_cents() -> Any:
    """A payment's money still kept: less refunds and disputes not won (SQL)."""
    return Payment.amount_cents - Payment.refunded_cents - Payment.disputed_cents


class StripeCustomer(Base):
    """The Stripe customer that pays for a user (created at their first checkout)."""

    __tablename__ = "billing_customers"

    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    customer_id: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Subscription(Base):
    """A plan subscription as Stripe last told us about it (webhooks keep it current)."""

    __tablename__ = "subscriptions"
    __table_args__ = (Index("ix_subscriptions_user_id", "user_id"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # Stripe's sub_…
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    customer_id: Mapped[str | None] = mapped_column(String(64))
    plan: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(32))
    current_period_end: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cancel_at_period_end: Mapped[bool] = mapped_column(Boolean, default=False)
    # When Stripe created the event that last changed this row: an older event, come
    # late, does not undo a newer one (Stripe does not promise order).
    changed_by_event_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Payment(Base):
    """Money received: a credit pack, or a plan's invoice. Kept after erasure (tax
    law), so `user_id` has no foreign key and becomes a tombstone id."""

    __tablename__ = "payments"
    __table_args__ = (Index("ix_payments_user_id_created", "user_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("pay"))
    user_id: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(16))  # "pack" or "subscription"
    product: Mapped[str] = mapped_column(String(32))  # the pack's or plan's name
    amount_cents: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    credits: Mapped[int] = mapped_column(Integer)
    refunded_cents: Mapped[int] = mapped_column(Integer, default=0)
    # Held by open or lost disputes (a won one gives it back): not revenue.
    disputed_cents: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    status: Mapped[str] = mapped_column(String(24), default="succeeded")
    payment_intent: Mapped[str | None] = mapped_column(String(64))
    checkout_session: Mapped[str | None] = mapped_column(String(64), unique=True)
    invoice_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Invoice(Base):
    """A paid subscription invoice (Stripe keeps the document; this is our record)."""

    __tablename__ = "invoices"
    __table_args__ = (Index("ix_invoices_user_id", "user_id"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # Stripe's in_…
    user_id: Mapped[str] = mapped_column(String(32))
    subscription_id: Mapped[str | None] = mapped_column(String(64))
    number: Mapped[str | None] = mapped_column(String(64))
    amount_paid_cents: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    period_start: Mapped[datetime | None] = mapped_column(UTCDateTime)
    period_end: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Refund(Base):
    """Money given back through Stripe, and the credits taken back with it."""

    __tablename__ = "refunds"
    __table_args__ = (Index("ix_refunds_payment_id", "payment_id"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # Stripe's re_…
    payment_id: Mapped[str] = mapped_column(ForeignKey("payments.id"))
    user_id: Mapped[str] = mapped_column(String(32))
    amount_cents: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    credits_reversed: Mapped[int] = mapped_column(Integer)
    commission_reversed_cents: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # `failed` or `canceled` when Stripe could not complete it: what it took came back.
    status: Mapped[str] = mapped_column(String(16), default="succeeded", server_default="succeeded")
    # Free text an admin writes (it may name the customer): sealed like other PII.
    reason: Mapped[str] = mapped_column("reason_encrypted", Sealed, info=ENCRYPTED)
    issued_by: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RefundRequest(Base):
    """A refund an admin asked for, written before Stripe is called: its id is the
    Stripe idempotency key, made from the request's `Idempotency-Key` when it has one,
    so a retry after a timeout asks Stripe for the same refund even when a webhook
    recorded it in between. `refund_id` is Stripe's, once known."""

    __tablename__ = "refund_requests"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    payment_id: Mapped[str] = mapped_column(ForeignKey("payments.id"))
    user_id: Mapped[str] = mapped_column(String(32))  # the customer refunded
    amount_cents: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column("reason_encrypted", Sealed, info=ENCRYPTED)
    requested_by: Mapped[str] = mapped_column(String(32))
    refund_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class StripeEvent(Base):
    """A Stripe event already applied: its id makes a redelivery a no-op."""

    __tablename__ = "stripe_events"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    type: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SpendPause(Base):
    """The spend guard stopped LLM calls: for one user (`user_id`) or for everyone
    (`user_id` NULL) until `until` (the next UTC midnight), unless resumed sooner."""

    __tablename__ = "spend_pauses"
    __table_args__ = (Index("ix_spend_pauses_user_until", "user_id", "until"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    spent_micro_usd: Mapped[int] = mapped_column(BigInteger)
    limit_micro_usd: Mapped[int] = mapped_column(BigInteger)
    paused_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    until: Mapped[datetime] = mapped_column(UTCDateTime)
    resumed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resumed_by: Mapped[str | None] = mapped_column(String(32))


class Dispute(Base):
    """A chargeback: the card's bank took the money back from Stripe. The payment's
    credits and commission are taken back when it opens; credits return if it is won."""

    __tablename__ = "disputes"
    __table_args__ = (Index("ix_disputes_user_id", "user_id"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # Stripe's dp_…
    payment_id: Mapped[str] = mapped_column(ForeignKey("payments.id"))
    user_id: Mapped[str] = mapped_column(String(32))
    amount_cents: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    reason: Mapped[str] = mapped_column(String(64))  # Stripe's code, e.g. "fraudulent"
    status: Mapped[str] = mapped_column(String(32))
    credits_reversed: Mapped[int] = mapped_column(Integer)
    commission_reversed_cents: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class LlmUsage(Base):
    """Tokens and cost of one LLM call made for a user (a plan, later each `llm` step):
    what the spend guard will cap and the costs report will add up."""

    __tablename__ = "llm_usage"
    __table_args__ = (
        # The spend guard adds up today's calls, a user's and everyone's, after each one.
        Index("ix_llm_usage_user_created", "user_id", "created_at"),
        Index("ix_llm_usage_created", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    purpose: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(200))
    prompt_tokens: Mapped[int] = mapped_column(Integer)
    completion_tokens: Mapped[int] = mapped_column(Integer)
    cost_micro_usd: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RevenueSnapshot(Base):
    """The recurring revenue at the end of one UTC day, recorded by the scheduler: a
    subscription row holds only its latest state, so MRR over time is kept as it goes."""

    __tablename__ = "revenue_snapshots"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    mrr_cents: Mapped[int] = mapped_column(BigInteger)
    subscriptions: Mapped[int] = mapped_column(Integer)
    paying_users: Mapped[int] = mapped_column(Integer)  # paid in the 30 days before
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
