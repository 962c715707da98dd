"""workers: each beat carries the runs the worker finished per second since its last one,
so every API process knows how fast the fleet drains the queue (intake back-pressure).

Revision ID: 0037
Revises: 0036
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0037"
down_revision = "0036"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.add_column(
            sa.Column("finished_per_s", sa.Float(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("finished_per_s")
