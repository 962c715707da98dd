"""web: remember which public pages IndexNow accepted, and with which lastmod.

Revision ID: 0021
Revises: 0020
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "seo_submissions",
        sa.Column("url", sa.String(2048), nullable=False),
        sa.Column("lastmod", sa.Date(), nullable=False),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("url", name="pk_seo_submissions"),
    )


def downgrade() -> None:
    op.drop_table("seo_submissions")
