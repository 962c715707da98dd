"""job_steps: keyed by (job_id, step_id), which every read and write already uses; the
surrogate id, its sequence and its index go. Each checkpoint inserted cost a sequence
step and one more index entry, on the queue's hottest statement.

Revision ID: 0038
Revises: 0037
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0038"
down_revision = "0037"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint("pk_job_steps", "job_steps", type_="primary")
        op.drop_constraint("uq_job_steps_job_step", "job_steps", type_="unique")
        op.drop_column("job_steps", "id")
        op.create_primary_key("pk_job_steps", "job_steps", ["job_id", "step_id"])
        return
    with op.batch_alter_table("job_steps", recreate="always") as batch:
        batch.drop_constraint("uq_job_steps_job_step", type_="unique")
        batch.drop_column("id")
        batch.create_primary_key("pk_job_steps", ["job_id", "step_id"])


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint("pk_job_steps", "job_steps", type_="primary")
        op.execute("ALTER TABLE job_steps ADD COLUMN id serial")
        op.create_primary_key("pk_job_steps", "job_steps", ["id"])
        op.create_unique_constraint("uq_job_steps_job_step", "job_steps", ["job_id", "step_id"])
        return
    with op.batch_alter_table("job_steps", recreate="always") as batch:
        batch.drop_constraint("pk_job_steps", type_="primary")
        # Numbered afresh as the rows are copied (an INTEGER PRIMARY KEY is the rowid).
        batch.add_column(sa.Column("id", sa.Integer(), primary_key=True))
        batch.create_unique_constraint("uq_job_steps_job_step", ["job_id", "step_id"])
