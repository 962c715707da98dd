"""Tables owned by compliance: the e-mail suppression list."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from levqor.db.base import Base, UTCDateTime, utcnow


class EmailSuppression(Base):
    """An address that must not be mailed: by one sender (`user_id`, an unsubscribe from
    that user's marketing mail) or by anyone (`user_id` NULL: an erased account, a hard
    bounce). Stored as a keyed blind index, never as the address."""

    __tablename__ = "email_suppressions"
    __table_args__ = (Index("ix_email_suppressions_address", "address_hash", "user_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    address_hash: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
