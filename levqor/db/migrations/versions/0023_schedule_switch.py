"""workflows: the owner's switch for a schedule, apart from the automatic pause.

Revision ID: 0023
Revises: 0022
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("workflows") as workflows:
        workflows.add_column(
            sa.Column("schedule_enabled", sa.Boolean(), nullable=False, server_default=sa.true())
        )


def downgrade() -> None:
    with op.batch_alter_table("workflows") as workflows:
        workflows.drop_column("schedule_enabled")
