"""revenue_snapshots: MRR at the end of each UTC day, for the operator's chart.

Revision ID: 0024
Revises: 0023
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "revenue_snapshots",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("mrr_cents", sa.BigInteger(), nullable=False),
        sa.Column("subscriptions", sa.Integer(), nullable=False),
        sa.Column("paying_users", sa.Integer(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("day", name="pk_revenue_snapshots"),
    )


def downgrade() -> None:
    op.drop_table("revenue_snapshots")
