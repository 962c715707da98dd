"""billing: credits owed after a refund of spent credits, and the disputed part of a
payment (revenue and paying users count it out).

Revision ID: 0031
Revises: 0030
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0031"
down_revision = "0030"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as users:
        users.add_column(
            sa.Column("credits_owed", sa.Integer(), nullable=False, server_default="0")
        )
    with op.batch_alter_table("credit_ledger") as ledger:
        ledger.add_column(sa.Column("owed_after", sa.Integer(), nullable=True))
    with op.batch_alter_table("payments") as payments:
        payments.add_column(
            sa.Column("disputed_cents", sa.Integer(), nullable=False, server_default="0")
        )
    op.execute(
        "UPDATE payments SET disputed_cents = (SELECT COALESCE(SUM(d.amount_cents), 0) "
        "FROM disputes d WHERE d.payment_id = payments.id AND d.status <> 'won')"
    )


def downgrade() -> None:
    with op.batch_alter_table("payments") as payments:
        payments.drop_column("disputed_cents")
    with op.batch_alter_table("credit_ledger") as ledger:
        ledger.drop_column("owed_after")
    with op.batch_alter_table("users") as users:
        users.drop_column("credits_owed")
