"""jobs: an index of held runs (waiting for a spend-guard pause to end), so releasing
the due ones each minute touches only them.

Revision ID: 0032
Revises: 0031
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0032"
down_revision = "0031"
branch_labels = None
depends_on = None

HELD_SQL = "status = 'held'"


def upgrade() -> None:
    op.create_index(
        "ix_jobs_held",
        "jobs",
        ["run_at"],
        postgresql_where=sa.text(HELD_SQL),
        sqlite_where=sa.text(HELD_SQL),
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_held", table_name="jobs")
