"""partners: the fraud guard's score, signals and decision on each referral, and the
signup's hashed IP (signups from one address in a short window are a signal).

Revision ID: 0033
Revises: 0032
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0033"
down_revision = "0032"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("referrals") as referrals:
        referrals.add_column(sa.Column("ip_hash", sa.String(64), nullable=True))
        referrals.add_column(sa.Column("score", sa.Integer(), nullable=False, server_default="0"))
        referrals.add_column(sa.Column("signals", sa.JSON(), nullable=True))
        referrals.add_column(
            sa.Column("status", sa.String(16), nullable=False, server_default="ok")
        )
        referrals.add_column(sa.Column("decided_by", sa.String(32), nullable=True))
        referrals.add_column(sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE referrals SET signals = '[]'")
    with op.batch_alter_table("referrals") as referrals:
        referrals.alter_column("signals", existing_type=sa.JSON(), nullable=False)
    op.create_index("ix_referrals_ip_hash_at", "referrals", ["ip_hash", "at"])


def downgrade() -> None:
    op.drop_index("ix_referrals_ip_hash_at", table_name="referrals")
    with op.batch_alter_table("referrals") as referrals:
        for column in ("decided_at", "decided_by", "status", "signals", "score", "ip_hash"):
            referrals.drop_column(column)
