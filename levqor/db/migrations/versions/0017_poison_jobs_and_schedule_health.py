"""jobs count their crashes; workflows remember why their schedule stopped.

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as jobs:
        jobs.add_column(sa.Column("crashes", sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("workflows") as workflows:
        workflows.add_column(
            sa.Column("schedule_failures", sa.Integer(), nullable=False, server_default="0")
        )
        workflows.add_column(sa.Column("schedule_paused_reason", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("workflows") as workflows:
        workflows.drop_column("schedule_paused_reason")
        workflows.drop_column("schedule_failures")
    with op.batch_alter_table("jobs") as jobs:
        jobs.drop_column("crashes")
