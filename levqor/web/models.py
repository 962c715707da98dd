"""The web package's one table: which public pages search engines were told about."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Date, String
from sqlalchemy.orm import Mapped, mapped_column

from levqor.db.base import Base, UTCDateTime, utcnow


class SeoSubmission(Base):
    """A public URL and the `lastmod` IndexNow last accepted for it: a page is announced
    again only once its content date moves on."""

    __tablename__ = "seo_submissions"

    url: Mapped[str] = mapped_column(String(2048), primary_key=True)
    lastmod: Mapped[date] = mapped_column(Date)
    submitted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
