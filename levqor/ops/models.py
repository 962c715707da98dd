"""Tables owned by ops: alerts and what each channel made of them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from levqor.db.base import Base, UTCDateTime, new_id, utcnow


class Alert(Base):
    """One alert as raised: repeats within the dedupe window are counted here, not sent.

    `key` names a condition that stays true for a while (the queue is stuck, the SLO is
    breached, a worker fell silent): while its alert is open (`resolved_at` empty) the
    condition is not alerted again, and its recovery sends one `resolved` alert."""

    __tablename__ = "alerts"
    __table_args__ = (
        Index("ix_alerts_created", "created_at"),
        Index("ix_alerts_fingerprint_created", "fingerprint", "created_at"),
        Index("ix_alerts_key", "key"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("alr"))
    severity: Mapped[str] = mapped_column(String(16))  # critical, warning, info, resolved
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    key: Mapped[str | None] = mapped_column(String(200))
    fingerprint: Mapped[str] = mapped_column(String(64))
    repeats: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AlertDelivery(Base):
    """An alert through one channel: pending until sent, retried with back-off."""

    __tablename__ = "alert_deliveries"
    __table_args__ = (Index("ix_alert_deliveries_due", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    alert_id: Mapped[str] = mapped_column(ForeignKey("alerts.id", ondelete="CASCADE"), index=True)
    channel: Mapped[str] = mapped_column(String(16))  # telegram, slack, email, webhook
    status: Mapped[str] = mapped_column(String(16), default="pending")  # sent, failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
