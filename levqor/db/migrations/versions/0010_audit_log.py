"""compliance: the hash-chained audit log, replacing accounts' security_events.

Existing security events are carried over, in order, into the chain.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-26
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import orjson
import sqlalchemy as sa
from alembic import op

from levqor.db.base import UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

GENESIS = "0" * 64


def _hash(prev: str, row: dict[str, object]) -> str:
    """As audit.service.entry_hash computes it (kept here: migrations must not change
    when the code does)."""
    at = row["at"]
    assert isinstance(at, datetime)
    content = {
        "at": at.astimezone(UTC).isoformat(timespec="microseconds"),
        "actor": row["actor"],
        "action": row["action"],
        "object_id": row["object_id"],
        "ip_hash": None,
        "detail": row["detail"] or {},
    }
    canonical = orjson.dumps(content, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(prev.encode() + b"|" + canonical).hexdigest()


def upgrade() -> None:
    audit = op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("object_id", sa.String(64), nullable=True),
        sa.Column("ip_hash", sa.String(64), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index("ix_audit_log_actor_at", "audit_log", ["actor", "at"])
    events = sa.table(
        "security_events",
        sa.column("user_id", sa.String()),
        sa.column("kind", sa.String()),
        sa.column("detail", sa.JSON()),
        sa.column("created_at", UTCDateTime()),
    )
    rows = op.get_bind().execute(
        sa.select(events.c.user_id, events.c.kind, events.c.detail, events.c.created_at).order_by(
            events.c.created_at
        )
    )
    prev = GENESIS
    for user_id, kind, detail, created_at in rows:
        row = {
            "at": created_at,
            "actor": user_id or "anonymous",
            "action": kind,
            "object_id": user_id,
            "detail": detail or {},
        }
        digest = _hash(prev, row)
        op.bulk_insert(audit, [{**row, "ip_hash": None, "prev_hash": prev, "hash": digest}])
        prev = digest
    op.drop_index(op.f("ix_security_events_user_id"), table_name="security_events")
    op.drop_table("security_events")


def downgrade() -> None:
    op.create_table(
        "security_events",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("user_id", sa.String(32), nullable=True),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_security_events_user_id_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_security_events")),
    )
    op.create_index(op.f("ix_security_events_user_id"), "security_events", ["user_id"])
    op.drop_index("ix_audit_log_actor_at", table_name="audit_log")
    op.drop_table("audit_log")
