"""compliance: the e-mail suppression list, by keyed blind index.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from levqor.db.base import UTCDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "email_suppressions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("user_id", sa.String(32), nullable=True),
        sa.Column("address_hash", sa.String(64), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_email_suppressions_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_suppressions")),
    )
    op.create_index(
        "ix_email_suppressions_address", "email_suppressions", ["address_hash", "user_id"]
    )


def downgrade() -> None:
    op.drop_index("ix_email_suppressions_address", table_name="email_suppressions")
    op.drop_table("email_suppressions")
