"""partners: whether Stripe lets the partner's Connect account receive payouts.

Accounts a partner pasted before Levqor created them through Connect keep being paid
(they were); new ones wait for Stripe's `account.updated`.

Revision ID: 0035
Revises: 0034
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0035"
down_revision = "0034"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("partners") as partners:
        partners.add_column(
            sa.Column("payouts_enabled", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.execute("UPDATE partners SET payouts_enabled = true WHERE payout_account IS NOT NULL")


def downgrade() -> None:
    with op.batch_alter_table("partners") as partners:
        partners.drop_column("payouts_enabled")
