"""billing: the credit ledger, opened with each user's current balance.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from levqor.db.base import UTCDateTime

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "credit_ledger",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("user_id", sa.String(32), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("delta", sa.Integer(), nullable=False),
        sa.Column("balance_after", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("job_id", sa.String(32), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_ledger")),
    )
    op.create_index("ix_credit_ledger_user_id_id", "credit_ledger", ["user_id", "id"])
    # Balances from before the ledger: one opening entry each, so deltas sum to them.
    op.execute(
        sa.text(
            "INSERT INTO credit_ledger (user_id, at, delta, balance_after, reason) "
            "SELECT id, CURRENT_TIMESTAMP, credits, credits, 'opening_balance' FROM users "
            "WHERE credits <> 0"
        )
    )


def downgrade() -> None:
    op.drop_index("ix_credit_ledger_user_id_id", table_name="credit_ledger")
    op.drop_table("credit_ledger")
