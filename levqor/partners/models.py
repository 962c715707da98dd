"""Tables owned by partners."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, false
from sqlalchemy.orm import Mapped, mapped_column

from levqor.db.base import Base, UTCDateTime, new_id, utcnow


class Partner(Base):
    """A user in the program: their referral code and where payouts go (a Stripe
    Connect account)."""

    __tablename__ = "partners"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("ptn"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), unique=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    # The Stripe Connect (Express) account Levqor created for them; payouts go there only
    # once Stripe says it can receive them (`account.updated`).
    payout_account: Mapped[str | None] = mapped_column(String(64))
    payouts_enabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    commission_bp: Mapped[int] = mapped_column(Integer)  # basis points of each payment
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ReferralClick(Base):
    """A visit through a referral link; the visitor only as a keyed hash of the IP."""

    __tablename__ = "referral_clicks"
    __table_args__ = (Index("ix_referral_clicks_partner_visitor", "partner_id", "visitor_hash"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    partner_id: Mapped[str] = mapped_column(ForeignKey("partners.id", ondelete="CASCADE"))
    visitor_hash: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Referral(Base):
    """A signup attributed to a partner: its payments earn them commission.

    The fraud guard scores it (`signals`: name, weight, detail); at or past the threshold
    it is `flagged` and its commissions are held until an admin approves (they become
    payable) or rejects it (they are void). The signup's IP only as a keyed hash."""

    __tablename__ = "referrals"
    __table_args__ = (
        Index("ix_referrals_partner_id", "partner_id"),
        Index("ix_referrals_ip_hash_at", "ip_hash", "at"),
    )

    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    partner_id: Mapped[str] = mapped_column(ForeignKey("partners.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    ip_hash: Mapped[str | None] = mapped_column(String(64))
    score: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    signals: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    status: Mapped[str] = mapped_column(String(16), default="ok", server_default="ok")
    decided_by: Mapped[str | None] = mapped_column(String(32))
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Commission(Base):
    """A partner's share of one payment. `pending` until the hold period ends (refunds
    come in it), then payable; `paid` once a payout carried it; `held` while its
    referral is flagged by the fraud guard, `void` once an admin rejected it. A refund or chargeback
    adds a negative row for its share: maturing with the earned row while that is
    unpaid, payable at once (netted by the next payout) when it was paid already.

    `user_id` is the partner's user id, with no foreign key: commissions are money
    records kept after erasure, under a tombstone id.
    """

    __tablename__ = "commissions"
    __table_args__ = (
        Index("ix_commissions_partner_status", "partner_id", "status"),
        Index("ix_commissions_payment_id", "payment_id"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("cm"))
    partner_id: Mapped[str] = mapped_column(String(32))
    user_id: Mapped[str] = mapped_column(String(32))
    payment_id: Mapped[str] = mapped_column(String(32))
    amount_cents: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    available_at: Mapped[datetime] = mapped_column(UTCDateTime)
    payout_id: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Payout(Base):
    """Money sent to a partner (a Stripe transfer). `processing` from the moment its
    commissions are set aside until Stripe answers; the payout id is the transfer's
    idempotency key, so a retry after a crash cannot pay twice."""

    __tablename__ = "payouts"
    __table_args__ = (Index("ix_payouts_partner_id", "partner_id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("po"))
    partner_id: Mapped[str] = mapped_column(String(32))
    user_id: Mapped[str] = mapped_column(String(32))
    amount_cents: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(16), default="processing")
    destination: Mapped[str] = mapped_column(String(64))
    transfer_id: Mapped[str | None] = mapped_column(String(64))
    failure: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
