"""Tables owned by ops: alerts and what each channel made of them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
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


class RequestStats(Base):
    """One serving process's API requests in one 10-second slot: how many, how many 5xx,
    and their latencies as histogram bucket counts (`ops.slo.BOUNDS_MS`). The SLO window
    adds up the slots of every process, so it needs no Prometheus server."""

    __tablename__ = "request_stats"
    __table_args__ = (Index("ix_request_stats_slot", "slot_start"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    slot_start: Mapped[datetime] = mapped_column(UTCDateTime)
    process: Mapped[str] = mapped_column(String(64))
    requests: Mapped[int] = mapped_column(Integer)
    errors: Mapped[int] = mapped_column(Integer)  # answered 5xx
    buckets: Mapped[list[int]] = mapped_column(JSON)
    max_ms: Mapped[float] = mapped_column(Float)


class SloCheck(Base):
    """One watchdog check of the API against its SLO: the history behind consecutive
    breaches and the status page's uptime."""

    __tablename__ = "slo_checks"
    __table_args__ = (Index("ix_slo_checks_checked", "checked_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    checked_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    requests: Mapped[int] = mapped_column(Integer)
    p95_ms: Mapped[float | None] = mapped_column(Float)
    error_rate: Mapped[float] = mapped_column(Float)
    breached: Mapped[bool] = mapped_column(Boolean)


class Backup(Base):
    """A backup as taken and as last verified. Its files and manifest live in
    `<backup dir>/<id>/`; this row is the catalogue."""

    __tablename__ = "backups"
    __table_args__ = (Index("ix_backups_created", "created_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    backend: Mapped[str] = mapped_column(String(16))  # sqlite, postgresql
    status: Mapped[str] = mapped_column(String(16))  # ok, failed
    error: Mapped[str | None] = mapped_column(Text)
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    took_s: Mapped[float] = mapped_column(Float, default=0)
    manifest_sha256: Mapped[str | None] = mapped_column(String(64))
    offsite: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)  # where -> outcome
    verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    verify_ok: Mapped[bool | None] = mapped_column(Boolean)
    verify_error: Mapped[str | None] = mapped_column(Text)
    verify_took_s: Mapped[float | None] = mapped_column(Float)


class Anomaly(Base):
    """A point of an hourly series outside what its trailing window expects: stored, and
    alerted, once per series and hour."""

    __tablename__ = "anomalies"
    __table_args__ = (
        UniqueConstraint("series", "hour", name="uq_anomalies_series_hour"),
        Index("ix_anomalies_found", "found_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    series: Mapped[str] = mapped_column(String(32))
    hour: Mapped[datetime] = mapped_column(UTCDateTime)  # the hour's start
    value: Mapped[float] = mapped_column(Float)
    expected_low: Mapped[float] = mapped_column(Float)
    expected_high: Mapped[float] = mapped_column(Float)
    score: Mapped[float] = mapped_column(Float)
    method: Mapped[str] = mapped_column(String(16))  # zscore, robust, ratio
    found_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
