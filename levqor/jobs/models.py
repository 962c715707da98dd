"""Tables owned by jobs: a run of a workflow version, and its step checkpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    JSON,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from levqor.db.base import ENCRYPTED, Base, UTCDateTime, new_id, utcnow

QUEUED = "queued"
RUNNING = "running"
SUCCEEDED = "succeeded"
RETRYING = "retrying"
FAILED = "failed"
CANCELLED = "cancelled"
# Waiting for something outside the run (the spend guard's pause) to end: not claimed
# until released (the pause lifted, or its end reached); `error` says why.
HELD = "held"
WAITING_STATES = (QUEUED, RETRYING)
FINAL_STATES = (SUCCEEDED, FAILED, CANCELLED)
STATUSES = (QUEUED, RUNNING, RETRYING, HELD, SUCCEEDED, FAILED, CANCELLED)
PRIORITIES = {"low": 0, "normal": 5, "high": 10}
WAITING_SQL = "status IN ('queued', 'retrying')"
RUNNING_SQL = "status = 'running'"
HELD_SQL = "status = 'held'"


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        # Claiming walks this in order and stops after a batch, however long the queue.
        # The predicate is literal SQL so the planner can match it (bound values cannot).
        Index(
            "ix_jobs_waiting",
            text("priority DESC"),
            "run_at",
            "id",
            postgresql_where=text(WAITING_SQL),
            sqlite_where=text(WAITING_SQL),
        ),
        # The same, per user: a claim on PostgreSQL takes each open user's next runs
        # from here, never walking the backlog of a user already at the limit.
        Index(
            "ix_jobs_user_waiting",
            "user_id",
            text("priority DESC"),
            "run_at",
            "id",
            postgresql_where=text(WAITING_SQL),
            sqlite_where=text(WAITING_SQL),
        ),
        # Running jobs are few: per-user counts, heartbeats and the expired-lease sweep.
        Index(
            "ix_jobs_running",
            "user_id",
            "lease_expires_at",
            postgresql_where=text(RUNNING_SQL),
            sqlite_where=text(RUNNING_SQL),
        ),
        # Held runs are fewer still: the scheduler releases those whose hold ran out.
        Index(
            "ix_jobs_held",
            "run_at",
            postgresql_where=text(HELD_SQL),
            sqlite_where=text(HELD_SQL),
        ),
        Index("ix_jobs_user_created", "user_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("job"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    workflow_id: Mapped[str] = mapped_column(
        ForeignKey("workflows.id", ondelete="CASCADE"), index=True
    )
    workflow_version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default=QUEUED)
    priority: Mapped[int] = mapped_column(Integer, default=PRIORITIES["normal"])
    input: Mapped[Any] = mapped_column(JSON)
    result: Mapped[Any | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Times a worker crashed on this job or died holding it (a poison job fails past
    # `job_max_crashes` instead of being tried for ever).
    crashes: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Times the job was put back after failing for good (a retry from the dead letters):
    # each is a new attempt group, whose steps send new idempotency keys.
    replays: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # When a waiting job may run: its start, its next attempt, the end of a delay step.
    run_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    callback_url: Mapped[str | None] = mapped_column(String(2048))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class WorkerBeat(Base):
    """A worker process's last sign of life. A worker silent for two heartbeats is
    taken for dead: its jobs go back to the queue without waiting for their leases."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    concurrency: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    # Runs it finished per second between its last two beats: the fleet's sum is how fast
    # the queue drains, which intake measures its backlog against.
    finished_per_s: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")


class ScheduleFire(Base):
    """One fire time of a schedule. The unique key makes it fire once, whichever of
    several schedulers gets there first."""

    __tablename__ = "schedule_fires"
    __table_args__ = (UniqueConstraint("workflow_id", "fire_at", name="uq_schedule_fires"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    workflow_id: Mapped[str] = mapped_column(ForeignKey("workflows.id", ondelete="CASCADE"))
    fire_at: Mapped[datetime] = mapped_column(UTCDateTime)
    job_id: Mapped[str | None] = mapped_column(String(32))
    outcome: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CallbackSecret(Base):
    """A user's Standard Webhooks signing secret (`whsec_...`), encrypted."""

    __tablename__ = "callback_secrets"

    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    secret_encrypted: Mapped[str] = mapped_column(Text, info=ENCRYPTED)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CallbackDelivery(Base):
    """A signed POST of a finished job to its `callback_url`; the id is `webhook-id`."""

    __tablename__ = "callback_deliveries"
    __table_args__ = (Index("ix_callback_deliveries_due", "status", "next_attempt_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("msg"))
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(String(2048))
    payload: Mapped[Any] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class CallbackAttempt(Base):
    __tablename__ = "callback_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(
        ForeignKey("callback_deliveries.id", ondelete="CASCADE"), index=True
    )
    attempt: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[int] = mapped_column(Integer)


class JobStep(Base):
    """A step's checkpoint: once `succeeded`, a resumed run does not repeat it."""

    __tablename__ = "job_steps"
    __table_args__ = (UniqueConstraint("job_id", "step_id", name="uq_job_steps_job_step"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    step_id: Mapped[str] = mapped_column(String(64))
    position: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    output: Mapped[Any | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


# Core handles for the queue's hot path, where ORM statements cost more than the SQL.
jobs_table = cast(Table, Job.__table__)
job_steps_table = cast(Table, JobStep.__table__)
callback_deliveries_table = cast(Table, CallbackDelivery.__table__)
workers_table = cast(Table, WorkerBeat.__table__)
