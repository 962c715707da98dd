"""Tables owned by connectors: users' credentials for outside services, encrypted."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from levqor.db.base import ENCRYPTED, Base, UTCDateTime, new_id, utcnow


class Credential(Base):
    """A secret a step uses (a bot token, an SMTP password), sealed with the key ring.

    `secret_encrypted` holds the whole secret object as Fernet-encrypted JSON; `base_url`
    is not secret and replaces the service's public address (a Mattermost server taking
    Slack webhooks, a local Telegram Bot API server, GitHub Enterprise)."""

    __tablename__ = "credentials"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("cred"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    connector: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    base_url: Mapped[str | None] = mapped_column(String(2048))
    secret_encrypted: Mapped[str] = mapped_column(Text, info=ENCRYPTED)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
