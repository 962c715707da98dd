"""accounts: login failures remember their source, so throttling slows that source only.

Revision ID: 0019
Revises: 0018
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("login_failures") as failures:
        failures.add_column(sa.Column("source_key", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("login_failures") as failures:
        failures.drop_column("source_key")
