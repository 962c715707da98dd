"""billing: a refund's status (Stripe may fail or cancel it after creating it) and the
commission it took back, so an undone refund gives both back exactly.

Revision ID: 0034
Revises: 0033
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0034"
down_revision = "0033"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("refunds") as refunds:
        refunds.add_column(
            sa.Column("status", sa.String(16), nullable=False, server_default="succeeded")
        )
        refunds.add_column(
            sa.Column("commission_reversed_cents", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("refunds") as refunds:
        refunds.drop_column("commission_reversed_cents")
        refunds.drop_column("status")
