"""Tables owned by billing: the credit ledger."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from levqor.db.base import Base, UTCDateTime, utcnow

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
