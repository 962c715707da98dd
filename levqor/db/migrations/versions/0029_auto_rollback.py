"""workflows: the version before the current one, since when it is current, and the
owner's flag for automatic rollback.

Revision ID: 0029
Revises: 0028
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0029"
down_revision = "0028"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("workflows") as workflows:
        workflows.add_column(sa.Column("previous_version", sa.Integer(), nullable=True))
        workflows.add_column(sa.Column("current_since", sa.DateTime(timezone=True), nullable=True))
        workflows.add_column(
            sa.Column("auto_rollback", sa.Boolean(), nullable=False, server_default=sa.true())
        )


def downgrade() -> None:
    with op.batch_alter_table("workflows") as workflows:
        workflows.drop_column("auto_rollback")
        workflows.drop_column("current_since")
        workflows.drop_column("previous_version")
