"""The web package's tables: what search engines were told, and social posts."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Date, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from levqor.db.base import ENCRYPTED, Base, UTCDateTime, new_id, utcnow


class SeoSubmission(Base):
    """A public URL and the `lastmod` IndexNow last accepted for it: a page is announced
    again only once its content date moves on."""

    __tablename__ = "seo_submissions"

    url: Mapped[str] = mapped_column(String(2048), primary_key=True)
    lastmod: Mapped[date] = mapped_column(Date)
    submitted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SocialAccount(Base):
    """Where `levqor social post` publishes: a Buffer channel, its token encrypted."""

    __tablename__ = "social_accounts"

    service: Mapped[str] = mapped_column(String(32), primary_key=True)  # "buffer"
    channel_id: Mapped[str] = mapped_column(String(200))
    token_encrypted: Mapped[str] = mapped_column(Text, info=ENCRYPTED)
    connected_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SocialPost(Base):
    """A post for the operator's social channel: queued here, handed to Buffer (now, or
    scheduled there at `due_at`), retried while Buffer cannot be reached."""

    __tablename__ = "social_posts"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("sp"))
    text: Mapped[str] = mapped_column(Text)
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(16), default="queued")  # queued, sent, failed
    buffer_post_id: Mapped[str | None] = mapped_column(String(200))
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
