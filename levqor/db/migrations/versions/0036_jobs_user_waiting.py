"""jobs: waiting runs indexed by user, so a claim on PostgreSQL reaches each user's next
runs directly instead of walking past the backlog of users already at their limit.

Revision ID: 0036
Revises: 0035
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0036"
down_revision = "0035"
branch_labels = None
depends_on = None

WAITING_SQL = "status IN ('queued', 'retrying')"


def upgrade() -> None:
    op.create_index(
        "ix_jobs_user_waiting",
        "jobs",
        ["user_id", sa.text("priority DESC"), "run_at", "id"],
        postgresql_where=sa.text(WAITING_SQL),
        sqlite_where=sa.text(WAITING_SQL),
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_user_waiting", table_name="jobs")
