"""The stored first answer to each (user, Idempotency-Key)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from levqor.db.base import ENCRYPTED, Base, UTCDateTime, utcnow


class IdempotencyRecord(Base):
    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("user_id", "key", name="uq_idempotency_keys_user_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(255))
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    # Encrypted: a replayed answer may hold a secret shown once (an API key).
    response_encrypted: Mapped[str] = mapped_column(Text, info=ENCRYPTED)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
