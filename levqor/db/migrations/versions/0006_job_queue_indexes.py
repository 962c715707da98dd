"""jobs: partial indexes that keep claiming cheap however many jobs are queued or kept.

Claiming reads waiting jobs in (priority, run_at, id) order and stops after a batch; the
old (status, run_at) index made it sort every due job first. Running jobs get an index
of their own: per-user counts, heartbeats and the expired-lease sweep touch only them.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

WAITING_SQL = "status IN ('queued', 'retrying')"
RUNNING_SQL = "status = 'running'"


def upgrade() -> None:
    op.drop_index("ix_jobs_due", table_name="jobs")
    op.drop_index("ix_jobs_lease", table_name="jobs")
    op.create_index(
        "ix_jobs_waiting",
        "jobs",
        [sa.text("priority DESC"), "run_at", "id"],
        postgresql_where=sa.text(WAITING_SQL),
        sqlite_where=sa.text(WAITING_SQL),
    )
    op.create_index(
        "ix_jobs_running",
        "jobs",
        ["user_id", "lease_expires_at"],
        postgresql_where=sa.text(RUNNING_SQL),
        sqlite_where=sa.text(RUNNING_SQL),
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_running", table_name="jobs")
    op.drop_index("ix_jobs_waiting", table_name="jobs")
    op.create_index("ix_jobs_lease", "jobs", ["status", "lease_expires_at"])
    op.create_index("ix_jobs_due", "jobs", ["status", "run_at"])
