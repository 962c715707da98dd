"""ops: API request statistics per process and slot, and the SLO checks.

Revision ID: 0026
Revises: 0025
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0026"
down_revision = "0025"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "request_stats",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("slot_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("process", sa.String(64), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("errors", sa.Integer(), nullable=False),
        sa.Column("buckets", sa.JSON(), nullable=False),
        sa.Column("max_ms", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_request_stats"),
    )
    op.create_index("ix_request_stats_slot", "request_stats", ["slot_start"])
    op.create_table(
        "slo_checks",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("p95_ms", sa.Float(), nullable=True),
        sa.Column("error_rate", sa.Float(), nullable=False),
        sa.Column("breached", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_slo_checks"),
    )
    op.create_index("ix_slo_checks_checked", "slo_checks", ["checked_at"])


def downgrade() -> None:
    op.drop_table("slo_checks")
    op.drop_table("request_stats")
