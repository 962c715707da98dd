"""Tables owned by compliance: the e-mail suppression list and the audit log."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from levqor.db.base import ENCRYPTED, Base, UTCDateTime, utcnow


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


class Consent(Base):
    """A consent given or withdrawn, with when and where (`signup`, `settings`): kept as a
    history, so what a user had agreed to at any moment can be shown."""

    __tablename__ = "consents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(32))  # "marketing_email"
    granted: Mapped[bool] = mapped_column(Boolean)
    source: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DataExport(Base):
    """A user's data export built in the background (too large to answer at once):
    requested, built by the scheduler, fetched through a signed link until it expires.
    The document is gzipped JSON sealed with the key ring: it is all personal data."""

    __tablename__ = "data_exports"
    __table_args__ = (Index("ix_data_exports_status_requested_at", "status", "requested_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(16))  # pending | building | ready | failed
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    size_bytes: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(500))
    document_encrypted: Mapped[str | None] = mapped_column(Text, info=ENCRYPTED)
