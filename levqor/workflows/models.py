"""Tables owned by workflows."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    JSON,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    true,
)
from sqlalchemy.orm import Mapped, mapped_column

from levqor.db.base import ENCRYPTED, Base, UTCDateTime, new_id, utcnow


class Workflow(Base):
    __tablename__ = "workflows"
    __table_args__ = (Index("ix_workflows_user_created", "user_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("wf"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    current_version: Mapped[int] = mapped_column(Integer)
    trigger_type: Mapped[str] = mapped_column(String(16))
    # The hash finds and checks a webhook call; the encrypted copy shows the URL again.
    webhook_token_hash: Mapped[str] = mapped_column(String(64))
    webhook_token_encrypted: Mapped[str] = mapped_column(Text, info=ENCRYPTED)
    # A schedule whose fires keep failing stops (the reason says why) until the next
    # version is saved; the count is of failures in a row.
    schedule_failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    schedule_paused_reason: Mapped[str | None] = mapped_column(Text)
    # The owner's switch: off, the schedule does not fire whatever the version.
    schedule_enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    # Which version was current before this one, and since when this one is: what the
    # watchdog compares after a new version goes live (`ops.rollback`), unless turned off.
    previous_version: Mapped[int | None] = mapped_column(Integer)
    current_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    auto_rollback: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class WorkflowVersion(Base):
    """An immutable definition; runs record the version they ran."""

    __tablename__ = "workflow_versions"
    __table_args__ = (UniqueConstraint("workflow_id", "version", name="uq_workflow_versions"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    workflow_id: Mapped[str] = mapped_column(ForeignKey("workflows.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    definition: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


# The table itself, for the workers' read of a definition: a statement naming only the
# table's columns is plain SQL, while one naming a mapped class's attributes makes
# SQLAlchemy configure every mapper first (2.5% of a worker's start, 30 to 40 ms).
workflow_versions_table = cast(Table, WorkflowVersion.__table__)
